package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/analyze"
	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/detect"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
	"github.com/tokenwatch/tokenwatch/pipeline"
	"github.com/tokenwatch/tokenwatch/sli"
)

// unkeyedSpec is traffic with incidents of every kind that depends on order
// across sessions and services: replays, refresh reuse, slow revocations,
// a key rotation break, clock skew.
func unkeyedSpec() gen.Spec {
	spec := gen.Default()
	spec.Seed, spec.Duration, spec.Rate, spec.Sessions = 23, 20*time.Minute, 40, 400
	spec.Start = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	spec.AccessTTLMin, spec.AccessTTLMax = 2*time.Minute, 4*time.Minute
	spec.Inject = map[string]int{
		gen.ScenarioReplay: 2, gen.ScenarioSlowRevocation: 2, gen.ScenarioRefreshReuseIdP: 1,
		gen.ScenarioRefreshRateFamily: 1, gen.ScenarioKeyRotationBreak: 1, gen.ScenarioClockSkew: 1,
		gen.ScenarioFastRevocation: 2,
	}
	return spec
}

// produceUnkeyed writes events the way the OpenTelemetry Collector's Kafka
// exporter and most gateways do: no key, batches of 256 records, each batch
// to the next partition round-robin. JSON sends a message per record, OTLP a
// message per batch.
func produceUnkeyed(t *testing.T, brokers []string, topic string, partitions int, format ingest.Format, events []event.Event) {
	t.Helper()
	w := &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: 5 * time.Millisecond,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int {
			p, _ := strconv.Atoi(string(m.Headers[0].Value))
			return p
		}),
	}
	defer w.Close()
	var msgs []kafka.Message
	for i := 0; i*256 < len(events); i++ {
		chunk := events[i*256 : min((i+1)*256, len(events))]
		h := []kafka.Header{{Key: "p", Value: []byte(strconv.Itoa(i % partitions))}}
		if format == ingest.FormatJSON {
			for j := range chunk {
				msgs = append(msgs, kafka.Message{Value: ingest.AppendJSON(nil, &chunk[j]), Headers: h})
			}
			continue
		}
		v, err := ingest.EncodeOTLP(chunk, format)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Value: v, Headers: h})
	}
	for len(msgs) > 0 {
		n := min(len(msgs), 5000)
		if err := w.WriteMessages(context.Background(), msgs[:n]...); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[n:]
	}
}

// holdBack delays the first delivery of one partition, so the others run
// minutes ahead of it in event time before it delivers anything.
// The embedded pipeline still answers the group's Assignment calls.
type holdBack struct {
	*pipeline.Pipeline
	partition int32
	delay     time.Duration
	once      sync.Once
}

func (h *holdBack) Deliver(ctx context.Context, msgs []consumer.Message) error {
	if len(msgs) > 0 && msgs[0].Src.Partition == h.partition {
		h.once.Do(func() {
			select {
			case <-time.After(h.delay):
			case <-ctx.Done():
			}
		})
	}
	return h.Pipeline.Deliver(ctx, msgs)
}

type incident struct {
	kind finding.Kind
	key  string
}

func incidents(fs []finding.Finding) []incident {
	var out []incident
	for _, f := range fs {
		if f.Evidence["superseded_by"] != nil {
			continue
		}
		out = append(out, incident{f.Kind, f.Key})
	}
	slices.SortFunc(out, func(a, b incident) int { return strings.Compare(string(a.kind)+a.key, string(b.kind)+b.key) })
	return out
}

// TestUnkeyedMultiPartitionBacklogFindsWhatAnalyzeFinds reads an unkeyed
// backlog spread round-robin over 6 partitions with one run, and the same
// events with analyze: the findings (kind and key, each incident once) and
// the revocation results must be equal, for each input format, and with one
// partition held back by minutes of event time.
func TestUnkeyedMultiPartitionBacklogFindsWhatAnalyzeFinds(t *testing.T) {
	events := generate(t, unkeyedSpec())
	// The skewed service stamps its events minutes behind: they are late
	// in any order, file or merged. Nothing else may be.
	var inherentLate int
	var newest time.Time
	for i := range events {
		if events[i].TS.Before(newest.Add(-30 * time.Second)) {
			inherentLate++
		}
		if events[i].TS.After(newest) {
			newest = events[i].TS
		}
	}
	var ndjson bytes.Buffer
	for i := range events {
		ndjson.Write(ingest.AppendJSON(nil, &events[i]))
		ndjson.WriteByte('\n')
	}

	c := config.Default()
	c.Redaction.Key = "unkeyed"
	c.Pipeline.RebuildWindow = 0
	want, wantRevs := analyzeReference(t, c, events)
	t.Logf("%d events; analyze: %d incidents, %d revocation rows", len(events), len(want), len(wantRevs))

	cases := []struct {
		format ingest.Format
		held   bool
	}{{ingest.FormatJSON, false}, {ingest.FormatOTLPProto, false}, {ingest.FormatOTLPJSON, false}, {ingest.FormatJSON, true}}
	for _, tc := range cases {
		name := tc.format.String()
		if tc.held {
			name += "/one_partition_held_back"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, 6)
			produceUnkeyed(t, h.brokers, h.topic, 6, tc.format, events)
			cc := c
			cc.Kafka = h.kcfg
			cc.Kafka.Format = tc.format.String()
			cc.ClickHouse.Database = h.store.Database()
			cc.ClickHouse.BatchRows, cc.ClickHouse.BatchInterval = 5000, 200*time.Millisecond
			if tc.held {
				// Smaller than the backlog: the partitions ahead are paused
				// (at half), not buffered whole. Up to 16 chunks of 512 are
				// queued past the pause, so it leaves room for those.
				cc.Pipeline.MergeBuffer = 30000
			}
			var wrap func(*pipeline.Pipeline) consumer.Sink
			if tc.held {
				wrap = func(p *pipeline.Pipeline) consumer.Sink {
					return &holdBack{Pipeline: p, partition: 0, delay: 3 * time.Second}
				}
			}
			built, reg := runBuilt(t, h, cc, wrap, func(s pipeline.Stats) bool { return s.Stored >= int64(len(events)) })
			if s := built.Pipeline.Stats(); s.Stored != int64(len(events)) || s.Rejected != 0 {
				t.Fatalf("pipeline stored %d of %d, rejected %d", s.Stored, len(events), s.Rejected)
			}
			if v := metricValue(t, reg, "tokenwatch_event_time_forced_total"); v != 0 {
				t.Errorf("%v events released before the watermark: the partitions ahead were not paused", v)
			}
			for _, stage := range []string{"merge", "revocation", "detect"} {
				v := metricValue(t, reg, `tokenwatch_late_events_total{stage="`+stage+`"}`)
				t.Logf("late events at stage %s: %v (the input itself has %d more than 30 s behind its newest ts)", stage, v, inherentLate)
				if v > float64(inherentLate) {
					t.Errorf("stage %s counted %v late events, more than the %d late in the input's own order: the merge made events late", stage, v, inherentLate)
				}
			}
			if v := metricValue(t, reg, `tokenwatch_events_decoded_total{topic="`+h.topic+`"}`); v != float64(len(events)) {
				t.Errorf("events decoded on /metrics: %v, want %d (events, not messages)", v, len(events))
			}

			sameAsAnalyze(t, h, want, wantRevs, "the run")
		})
	}
}

func revocationRow(at time.Time, target, service string, propagated bool, residual uint32) string {
	return fmt.Sprintf("%s %s %s propagated=%v residual=%d", at.UTC().Format(time.RFC3339Nano), target, service, propagated, residual)
}

type discard struct{}

func (discard) Finding(finding.Finding) {}

// reportDetector is what analyze needs of the engine.
type reportDetector struct{ e *detect.Engine }

func (d reportDetector) Observe(e *event.Event)             { d.e.Observe(e) }
func (d reportDetector) ObserveRevocation(r sli.Revocation) { d.e.ObserveRevocation(detect.FromSLI(r)) }
func (d reportDetector) Flush() []finding.Finding           { return d.e.Flush() }

// metricValue reads one series from reg's exposition ("name" or
// `name{label="v"}`, labels as the exposition orders them); a series never
// written is 0.
func metricValue(t *testing.T, reg *prometheus.Registry, series string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&text, mf); err != nil {
			t.Fatal(err)
		}
	}
	for _, line := range strings.Split(text.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// runBuilt runs the pipeline Build makes from cc, with a consumer group on
// h's topic (the sink wrapped by wrap, if given), until done says so or 3
// minutes pass, then stops it as SIGINT does. The run's log is printed if
// the test fails.
func runBuilt(t *testing.T, h *harness, cc config.Config, wrap func(*pipeline.Pipeline) consumer.Sink, done func(pipeline.Stats) bool) (*pipeline.Built, *prometheus.Registry) {
	built, reg, _ := runBuiltLogged(t, h, cc, wrap, done)
	return built, reg
}

// runBuiltLogged is runBuilt, also returning the run's log.
func runBuiltLogged(t *testing.T, h *harness, cc config.Config, wrap func(*pipeline.Pipeline) consumer.Sink, done func(pipeline.Stats) bool) (*pipeline.Built, *prometheus.Registry, *syncBuffer) {
	t.Helper()
	m := startMember(t, h, cc, "", cc.Kafka, wrap)
	deadline := time.Now().Add(3 * time.Minute)
	for !done(m.built.Pipeline.Stats()) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	m.stop() // as SIGINT: pending revocations and findings are flushed and stored
	return m.built, m.reg, m.logs
}

// member is one running pipeline (the single process, or a fleet stage) and
// its consumer group.
type member struct {
	built *pipeline.Built
	reg   *prometheus.Registry
	stop  func()
	logs  *syncBuffer
}

// startMember builds the pipeline of role ("" for the single process) and
// runs it with a consumer group reading kcfg, the sink wrapped by wrap if
// given, until stop (or the test's end). Its log is printed if the test
// fails.
func startMember(t *testing.T, h *harness, cc config.Config, role string, kcfg config.Kafka, wrap func(*pipeline.Pipeline) consumer.Sink) *member {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	reg := prometheus.NewRegistry()
	built, err := pipeline.BuildStage(cc, role, h.store, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	stored := h.store.StoredOffsets
	if role == config.RoleAnalyze {
		stored = nil // keyed offsets are not in the events table
	}
	group, err := consumer.New(kcfg, stored, built.Metrics, log)
	if err != nil {
		t.Fatal(err)
	}
	built.Pipeline.SetAcker(group)
	group.SetRebuilder(built.Pipeline) // as run does (a no-op where the stage does not rebuild)
	var sink consumer.Sink = built.Pipeline
	if wrap != nil {
		sink = wrap(built.Pipeline)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	pdone := make(chan struct{})
	go func() { defer close(pdone); _ = built.Pipeline.Run(pctx) }()
	gctx, gcancel := context.WithCancel(context.Background())
	gdone := make(chan struct{})
	go func() { defer close(gdone); _ = group.Run(gctx, sink) }()
	m := &member{built: built, reg: reg, logs: logs}
	var once sync.Once
	m.stop = func() {
		once.Do(func() {
			gcancel()
			<-gdone
			pcancel()
			<-pdone
			built.Close()
		})
	}
	name := role
	if name == "" {
		name = "run"
	}
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			t.Logf("%s member's log:\n%s", name, logs.String())
		}
	})
	return m
}

// syncBuffer is a bytes.Buffer several goroutines may log to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPendingRevokeAtShutdownIsStoredTruncated stops the pipeline (as
// SIGINT does) while a revoke waits for its horizon: its result is stored
// with what is known, marked truncated, as analyze reports it.
func TestPendingRevokeAtShutdownIsStoredTruncated(t *testing.T) {
	h := newHarness(t, 2)
	t0 := time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	events := []event.Event{
		{TS: at(0), Kind: event.KindIssue, Outcome: event.OK, Service: "idp", TokenID: "tok-1", SessionID: "sess-1", Subject: "sub-1"},
		{TS: at(1), Kind: event.KindValidate, Outcome: event.OK, Service: "orders", TokenID: "tok-1", SessionID: "sess-1"},
		{TS: at(2), Kind: event.KindRevoke, Outcome: event.OK, Service: "idp", Target: "session", SessionID: "sess-1"},
		{TS: at(100), Kind: event.KindValidate, Outcome: event.OK, Service: "orders", TokenID: "tok-1", SessionID: "sess-1"},
		{TS: at(120), Kind: event.KindValidate, Outcome: event.OK, Service: "orders", TokenID: "tok-2"},
	}
	var msgs []kafka.Message
	for i := range events {
		msgs = append(msgs, kafka.Message{Value: ingest.AppendJSON(nil, &events[i])})
	}
	w := &kafka.Writer{Addr: kafka.TCP(h.brokers...), Topic: h.topic, RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	cc := config.Default()
	cc.Kafka = h.kcfg
	cc.ClickHouse.Database = h.store.Database()
	cc.ClickHouse.BatchInterval = 100 * time.Millisecond
	cc.Pipeline.RebuildWindow = 0
	runBuilt(t, h, cc, nil, func(s pipeline.Stats) bool { return s.Stored >= int64(len(events)) })

	rows, err := h.store.Conn().Query(context.Background(), `SELECT target_id, service, residual_acceptances, propagated, truncated FROM `+
		h.store.Database()+`.revocations FINAL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var target, svc string
		var residual uint32
		var propagated, truncated bool
		if err := rows.Scan(&target, &svc, &residual, &propagated, &truncated); err != nil {
			t.Fatal(err)
		}
		n++
		wantResidual := uint32(1) // on the service's row; the revoke's own row (service "") has none
		if svc == "" {
			wantResidual = 0
		} else if svc != "orders" {
			t.Errorf("a row for service %q, which never saw the revoked session", svc)
		}
		if target != "sess-1" || residual != wantResidual || propagated || !truncated {
			t.Errorf("revocation row of %q: target %s residual %d propagated %v truncated %v; want sess-1, %d residual, not propagated, truncated",
				svc, target, residual, propagated, truncated, wantResidual)
		}
	}
	if n != 2 {
		t.Fatalf("%d revocation rows stored at shutdown, want the pending revoke's 2 (the revoke, and orders)", n)
	}
}

// TestRestartMidBackfillFindsWhatAnUninterruptedRunFinds backfills day-old
// events, stops the run (as SIGINT does) halfway, and starts a new one: it
// rebuilds its state from the stored events, looking back from their event
// time rather than the wall clock, and the findings and revocation rows
// equal analyze's on the same events (the uninterrupted run).
func TestRestartMidBackfillFindsWhatAnUninterruptedRunFinds(t *testing.T) {
	spec := unkeyedSpec()
	spec.Start = time.Now().UTC().Add(-26 * time.Hour).Truncate(time.Minute)
	events := generate(t, spec)
	c := config.Default()
	c.Redaction.Key = "backfill"
	want, wantRevs := analyzeReference(t, c, events)

	h := newHarness(t, 6)
	produceUnkeyed(t, h.brokers, h.topic, 6, ingest.FormatJSON, events)
	cc := c
	cc.Kafka = h.kcfg
	cc.ClickHouse.Database = h.store.Database()
	cc.ClickHouse.BatchRows, cc.ClickHouse.BatchInterval = 2000, 100*time.Millisecond
	cc.Pipeline.RebuildWindow = 30 * time.Minute
	half := int64(len(events) / 2)
	slow := func(p *pipeline.Pipeline) consumer.Sink { return slowSink{p} } // so it stops near the middle
	first, _ := runBuilt(t, h, cc, slow, func(s pipeline.Stats) bool { return s.Stored >= half })
	stored := first.Pipeline.Stats().Stored
	if stored >= int64(len(events)) {
		t.Fatalf("the first run stored all %d events: no restart in the middle", stored)
	}
	t.Logf("first run stored %d of %d events, then stopped", stored, len(events))
	second, _, logs := runBuiltLogged(t, h, cc, nil, func(s pipeline.Stats) bool { return stored+s.Stored >= int64(len(events)) })
	if l := logs.String(); !strings.Contains(l, "detector state rebuilt from ClickHouse") || strings.Contains(l, " events=0 ") {
		t.Errorf("the second run did not rebuild its state from the stored events:\n%s", logs.String())
	}
	if total := stored + second.Pipeline.Stats().Stored; total != int64(len(events)) {
		t.Fatalf("the two runs stored %d events, want %d", total, len(events))
	}
	sameAsAnalyze(t, h, want, wantRevs, "the restarted run")
}

// analyzeReference runs analyze on the events, as a file: the incidents it
// finds and its revocation rows, sorted.
func analyzeReference(t *testing.T, c config.Config, events []event.Event) ([]incident, []string) {
	t.Helper()
	var ndjson bytes.Buffer
	for i := range events {
		ndjson.Write(ingest.AppendJSON(nil, &events[i]))
		ndjson.WriteByte('\n')
	}
	guard, _ := redact.New(redact.Config{Key: []byte(c.Redaction.Key)})
	det, err := detect.New(c.Detect, discard{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := analyze.Run(context.Background(), analyze.Options{Input: &ndjson, Redact: guard,
		Detector: reportDetector{det}, Revocation: sli.TrackerConfig{Horizon: c.Pipeline.RevocationHorizon}})
	if err != nil {
		t.Fatal(err)
	}
	want := incidents(rep.Findings)
	if len(want) < 6 {
		t.Fatalf("analyze found only %d incidents: the traffic does not exercise the detectors", len(want))
	}
	var revs []string
	for _, r := range rep.SLIs.Revocations {
		for _, row := range pipeline.RevocationRows(r) {
			revs = append(revs, revocationRow(row.RevokedAt, row.TargetID, row.Service, row.Propagated, row.ResidualAcceptances))
		}
	}
	slices.Sort(revs)
	return want, revs
}

// storedResults reads the incidents and revocation rows the store holds.
func storedResults(t *testing.T, h *harness) ([]incident, []string) {
	t.Helper()
	var got []finding.Finding
	rows, err := h.store.Conn().Query(context.Background(), `SELECT kind, key, evidence FROM `+h.store.Database()+`.findings FINAL`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var kind, key, evidence string
		if err := rows.Scan(&kind, &key, &evidence); err != nil {
			t.Fatal(err)
		}
		f := finding.Finding{Kind: finding.Kind(kind), Key: key}
		if strings.Contains(evidence, `"superseded_by"`) {
			f.Evidence = map[string]any{"superseded_by": true}
		}
		got = append(got, f)
	}
	rows.Close()
	var revs []string
	rrows, err := h.store.Conn().Query(context.Background(),
		`SELECT revoked_at, target_id, service, propagated, residual_acceptances FROM `+h.store.Database()+`.revocations FINAL`)
	if err != nil {
		t.Fatal(err)
	}
	for rrows.Next() {
		var at time.Time
		var target, svc string
		var prop bool
		var residual uint32
		if err := rrows.Scan(&at, &target, &svc, &prop, &residual); err != nil {
			t.Fatal(err)
		}
		revs = append(revs, revocationRow(at, target, svc, prop, residual))
	}
	rrows.Close()
	slices.Sort(revs)
	return incidents(got), revs
}

// slowSink delivers at most a chunk every 150 ms per partition.
type slowSink struct{ *pipeline.Pipeline }

func (s slowSink) Deliver(ctx context.Context, msgs []consumer.Message) error {
	time.Sleep(150 * time.Millisecond)
	return s.Pipeline.Deliver(ctx, msgs)
}

// listDiff names what only one of two sorted lists holds.
func listDiff(got, want []string) string {
	var only, missing []string
	for _, g := range got {
		if _, ok := slices.BinarySearch(want, g); !ok {
			only = append(only, g)
		}
	}
	for _, w := range want {
		if _, ok := slices.BinarySearch(got, w); !ok {
			missing = append(missing, w)
		}
	}
	return fmt.Sprintf("%d rows vs %d; only in the run: %v; missing from the run: %v", len(got), len(want), only, missing)
}

// TestEveryEventDeliveredTwiceChangesNothing sends every event twice (as a
// producer retrying would: same content, another offset) over an unkeyed
// 6-partition topic: each is stored once, the per-minute SLIs count it
// once, and the findings and revocation rows equal analyze's on the events
// sent once.
func TestEveryEventDeliveredTwiceChangesNothing(t *testing.T) {
	events := generate(t, unkeyedSpec())
	c := config.Default()
	c.Redaction.Key = "twice"
	c.Pipeline.RebuildWindow = 0
	want, wantRevs := analyzeReference(t, c, events)
	twice := make([]event.Event, 0, 2*len(events))
	for i := range events {
		twice = append(twice, events[i])
		if j := i - 300; j >= 0 { // the copy arrives a little later, as a retry does
			twice = append(twice, events[j])
		}
	}
	twice = append(twice, events[max(len(events)-300, 0):]...)

	h := newHarness(t, 6)
	produceUnkeyed(t, h.brokers, h.topic, 6, ingest.FormatJSON, twice)
	cc := c
	cc.Kafka = h.kcfg
	cc.ClickHouse.Database = h.store.Database()
	cc.ClickHouse.BatchRows, cc.ClickHouse.BatchInterval = 5000, 200*time.Millisecond
	// Without a request_id a copy cannot be told from a repeat: those are
	// kept twice, as the docs say.
	noID := 0
	for i := range events {
		if events[i].RequestID == "" {
			noID++
		}
	}
	if noID > len(events)/100 {
		t.Fatalf("%d of %d events lack a request_id: the test would prove little", noID, len(events))
	}
	wantStored := int64(len(events) + noID)
	built, reg := runBuilt(t, h, cc, nil, func(s pipeline.Stats) bool { return s.Consumed >= int64(len(twice)) && s.Stored >= wantStored })
	if s := built.Pipeline.Stats(); s.Stored != wantStored {
		t.Fatalf("stored %d events of %d sent twice (%d without request_id), want each once", s.Stored, len(events), noID)
	}
	if v := metricValue(t, reg, `tokenwatch_events_duplicate_total{topic="`+h.topic+`"}`); v != float64(len(events)-noID) {
		t.Errorf("tokenwatch_events_duplicate_total = %v, want %d", v, len(events)-noID)
	}
	var validations uint64
	if err := h.store.Conn().QueryRow(context.Background(), `SELECT sumIf(events, kind = 'validate') FROM `+h.store.Database()+`.sli_minute`).Scan(&validations); err != nil {
		t.Fatal(err)
	}
	var wantValidations uint64
	for i := range events {
		if events[i].Kind == event.KindValidate {
			wantValidations++
		}
	}
	if validations != wantValidations {
		t.Errorf("sli_minute counts %d validations, want %d (each once)", validations, wantValidations)
	}
	sameAsAnalyze(t, h, want, wantRevs, "the run on events sent twice")
}

// sameAsAnalyze checks that the store holds analyze's incidents and
// revocation rows.
func sameAsAnalyze(t *testing.T, h *harness, want []incident, wantRevs []string, who string) {
	t.Helper()
	got, gotRevs := storedResults(t, h)
	if !slices.Equal(got, want) {
		t.Errorf("findings of %s differ from analyze's:\n run:     %v\n analyze: %v", who, got, want)
	}
	if !slices.Equal(gotRevs, wantRevs) {
		t.Errorf("revocation rows of %s differ from analyze's: %s", who, listDiff(gotRevs, wantRevs))
	}
}

// generate returns every event of spec.
func generate(t *testing.T, spec gen.Spec) []event.Event {
	t.Helper()
	events, err := gen.All(spec)
	if err != nil {
		t.Fatal(err)
	}
	return events
}
