package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/metrics"
	"github.com/tokenwatch/tokenwatch/pipeline"
	"github.com/tokenwatch/tokenwatch/store"
)

// leakedJWT is a credential a misconfigured emitter put in a field; it must
// never be stored.
const leakedJWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"

// harness is a pipeline wired to a real Kafka and the ClickHouse engine.
type harness struct {
	brokers []string
	topic   string
	store   *store.Store
	kcfg    config.Kafka
}

func newHarness(t *testing.T, partitions int) *harness {
	t.Helper()
	brokers := testkit.Kafka(t)
	topic := testkit.Topic(t)
	testkit.CreateTopic(t, brokers, topic, partitions)
	addr, db := testkit.ClickHouse(t)
	chc := config.Default().ClickHouse
	chc.Addr, chc.Database = []string{addr}, db
	s, err := store.Open(context.Background(), chc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	kc := config.Default().Kafka
	kc.Brokers, kc.Topics, kc.GroupID = brokers, []string{topic}, "tw-"+topic
	kc.MaxWait = 50 * time.Millisecond
	kc.SessionTimeout = 10 * time.Second
	return &harness{brokers: brokers, topic: topic, store: s, kcfg: kc}
}

// runOptions capture what a run writes, for the tests that inspect it.
type runOptions struct {
	logs       io.Writer
	registry   *prometheus.Registry
	deadLetter pipeline.Forwarder
}

// run consumes until stop says so, then shuts down gracefully.
func (h *harness) run(t *testing.T, stop func(pipeline.Stats) bool) pipeline.Stats {
	return h.runWith(t, runOptions{}, stop)
}

func (h *harness) runWith(t *testing.T, ro runOptions, stop func(pipeline.Stats) bool) pipeline.Stats {
	t.Helper()
	if ro.logs == nil {
		ro.logs = io.Discard
	}
	if ro.registry == nil {
		ro.registry = prometheus.NewRegistry()
	}
	log := slog.New(slog.NewTextHandler(ro.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := metrics.New(ro.registry)
	dec, err := ingest.NewDecoder(ingest.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	guard, err := redact.New(redact.Config{Key: []byte("test-key")})
	if err != nil {
		t.Fatal(err)
	}
	group, err := consumer.New(h.kcfg, h.store.StoredOffsets, m, log)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(pipeline.Config{BatchRows: 2000, BatchInterval: 200 * time.Millisecond, MaxPendingBatches: 2,
		RetryInitial: 50 * time.Millisecond, RetryMax: time.Second, LabelCap: 50},
		pipeline.Options{Decoder: dec, Guard: guard, Store: h.store, Acker: group, Metrics: m, Log: log, DeadLetter: ro.deadLetter})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	pdone := make(chan struct{})
	go func() { defer close(pdone); _ = p.Run(pctx) }()
	gctx, gcancel := context.WithCancel(context.Background())
	gdone := make(chan struct{})
	go func() { defer close(gdone); _ = group.Run(gctx, p) }()

	deadline := time.After(2 * time.Minute)
	for !stop(p.Stats()) {
		select {
		case <-deadline:
			gcancel()
			<-gdone
			pcancel()
			<-pdone
			t.Fatalf("pipeline did not finish in 2m: %+v", p.Stats())
		case <-time.After(50 * time.Millisecond):
		}
	}
	gcancel()
	<-gdone
	pcancel()
	<-pdone
	return p.Stats()
}

func makeEvents(n int) []event.Event {
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	out := make([]event.Event, n)
	for i := range out {
		out[i] = event.Event{
			TS: base.Add(time.Duration(i) * time.Millisecond), Kind: event.KindValidate, Outcome: event.OK,
			Service: fmt.Sprintf("svc-%d", i%4), Issuer: "https://idp.example", Region: "eu-west-1",
			TokenID: fmt.Sprintf("%016x", i*7919), SessionID: fmt.Sprintf("%012x", i%300), LatencyMS: 2.5, HasLatency: true,
			TokenBytes: 950, IP: netip.MustParseAddr("198.51.100.9"), HTTPStatus: 200, RequestID: fmt.Sprintf("req-%d", i),
		}
	}
	return out
}

func produce(t *testing.T, h *harness, events []event.Event, bad []string) {
	t.Helper()
	msgs := make([]kafka.Message, 0, len(events)+len(bad))
	for i := range events {
		msgs = append(msgs, kafka.Message{Key: []byte(events[i].PartitionKey()), Value: ingest.AppendJSON(nil, &events[i])})
	}
	for i, b := range bad {
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprintf("bad-%d", i)), Value: []byte(b)})
	}
	testkit.Produce(t, h.brokers, h.topic, msgs)
}

func storedRequestIDs(t *testing.T, s *store.Store) map[string]int {
	t.Helper()
	rows, err := s.Conn().Query(context.Background(), "SELECT request_id, count() FROM "+s.Database()+".events GROUP BY request_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n uint64
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		out[id] = int(n)
	}
	return out
}

func TestStoredEventsEqualProducedEventsOnRealKafka(t *testing.T) {
	h := newHarness(t, 6)
	events := makeEvents(20000)
	events[77].Reason = "Authorization: Bearer " + leakedJWT // a leak in a free-text field
	events[78].Extra = map[string]string{"authorization": `"` + leakedJWT + `"`}
	bad := []string{`{not json`, `{"ts":"2026-11-29T10:00:00Z","kind":"validate"}`, `{"ts":"yesterday","kind":"validate","outcome":"ok","service":"a","token_id":"x","latency_ms":1}`}
	events[79].Service = "Bearer " + leakedJWT // even where it would become a metric label
	produce(t, h, events, bad)

	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	dlqTopic := h.topic + "-dlq"
	testkit.CreateTopic(t, h.brokers, dlqTopic, 1)
	dlq := pipeline.NewTopicForwarder(h.brokers, dlqTopic, nil)
	defer dlq.Close()
	stats := h.runWith(t, runOptions{logs: &logs, registry: reg, deadLetter: dlq},
		func(s pipeline.Stats) bool { return s.Stored >= int64(len(events)) && s.Rejected >= int64(len(bad)) })

	got := storedRequestIDs(t, h.store)
	if len(got) != len(events) {
		t.Fatalf("stored %d distinct events, produced %d", len(got), len(events))
	}
	for _, e := range events {
		if got[e.RequestID] != 1 {
			t.Fatalf("event %s stored %d times, want once", e.RequestID, got[e.RequestID])
		}
	}
	if stats.Rejected != int64(len(bad)) || stats.RedactionViolations != 3 {
		t.Fatalf("rejected=%d (by reason %v) violations=%d; want %d and 3", stats.Rejected, stats.RejectedByReason, stats.RedactionViolations, len(bad))
	}
	// Not in the logs, not in /metrics.
	var exposition bytes.Buffer
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&exposition, mf); err != nil {
			t.Fatal(err)
		}
	}
	for what, text := range map[string]string{"the logs": logs.String(), "/metrics": exposition.String()} {
		if strings.Contains(text, leakedJWT) || strings.Contains(text, "eyJhbGciOi") {
			t.Fatalf("a raw JWT reached %s:\n%s", what, text)
		}
	}
	if !strings.Contains(exposition.String(), `tokenwatch_redaction_violations_total{emitter="hmac-sha256:`) {
		t.Errorf("the violation by the leaking emitter is not counted under its hashed name:\n%s", exposition.String())
	}
	if !strings.Contains(logs.String(), "message rejected") || !strings.Contains(logs.String(), "offset") {
		t.Errorf("rejections are not logged with their coordinates:\n%s", logs.String())
	}
	// Every rejected message is in the dead-letter topic, with headers naming where it came from.
	dead := testkit.ConsumeGroup(t, h.brokers, dlqTopic, "dlq-reader-"+h.topic, len(bad))
	for _, m := range dead {
		hdr := map[string]string{}
		for _, x := range m.Headers {
			hdr[x.Key] = string(x.Value)
		}
		if hdr["tokenwatch.source.topic"] != h.topic || hdr["tokenwatch.source.offset"] == "" || hdr["tokenwatch.error"] == "" {
			t.Fatalf("dead letter without its provenance: %v", hdr)
		}
	}
	dump, err := h.store.Conn().Query(context.Background(), "SELECT reason, toString(extra) FROM "+h.store.Database()+".events WHERE request_id IN ('req-77','req-78')")
	if err != nil {
		t.Fatal(err)
	}
	defer dump.Close()
	for dump.Next() {
		var reason, extra string
		if err := dump.Scan(&reason, &extra); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(reason+extra, leakedJWT) || strings.Contains(reason+extra, "eyJhbGciOi") {
			t.Fatalf("a raw JWT reached ClickHouse: reason=%q extra=%q", reason, extra)
		}
	}
}

func TestARestartedPipelineResumesWithoutLossOrDuplicates(t *testing.T) {
	h := newHarness(t, 3)
	events := makeEvents(9000)
	produce(t, h, events[:5000], nil)
	h.run(t, func(s pipeline.Stats) bool { return s.Stored >= 5000 })
	produce(t, h, events[5000:], nil)
	// The second run must only read the new messages: its committed offsets
	// (and ClickHouse) say where the first run stopped.
	s2 := h.run(t, func(s pipeline.Stats) bool { return s.Stored >= 4000 })
	if s2.Consumed != 4000 {
		t.Fatalf("second run consumed %d messages, want exactly the 4000 new ones", s2.Consumed)
	}
	got := storedRequestIDs(t, h.store)
	if len(got) != len(events) {
		t.Fatalf("stored %d distinct, want %d", len(got), len(events))
	}
	for id, n := range got {
		if n != 1 {
			t.Fatalf("%s stored %d times", id, n)
		}
	}
}

func TestANewGroupStartingAtLatestSkipsTheHistory(t *testing.T) {
	h := newHarness(t, 2)
	history := makeEvents(100)
	produce(t, h, history, nil)
	h.kcfg.StartOffset = "latest"

	// Keep producing fresh events until the run has stored some of them.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			fresh := makeEvents(10)
			for j := range fresh {
				fresh[j].RequestID = fmt.Sprintf("fresh-%d-%d", i, j)
			}
			produce(t, h, fresh, nil)
		}
	}()
	stats := h.run(t, func(s pipeline.Stats) bool { return s.Stored >= 20 })
	close(stop)
	<-done
	got := storedRequestIDs(t, h.store)
	for _, e := range history {
		if got[e.RequestID] > 0 {
			t.Fatalf("a group starting at latest stored %s from before it joined", e.RequestID)
		}
	}
	if stats.Stored < 20 {
		t.Fatalf("stored %d fresh events", stats.Stored)
	}
}
