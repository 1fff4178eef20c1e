package pipeline_test

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/metrics"
	"github.com/tokenwatch/tokenwatch/pipeline"
)

// An event whose ts lies outside the plausible window (before 1900, which
// the events table cannot hold; more than pipeline.max_event_ahead ahead;
// older than pipeline.max_event_age) is rejected with a reason naming the
// message and the field, counted, and its offset still committed; it is
// never stored with another ts than it was sent with.
func TestEventTimesOutsideThePlausibleWindowAreRejectedNotAltered(t *testing.T) {
	now := time.Now().UTC()
	times := []time.Time{
		now.Add(-time.Hour),                      // plausible
		time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC), // the year 1: was stored as 1829
		now.Add(48 * time.Hour),                  // a clock two days ahead
		now.Add(-60 * 24 * time.Hour),            // older than the retention
	}
	var msgs []consumer.Message
	for i, ts := range times {
		e := event.Event{TS: ts, Kind: event.KindValidate, Outcome: event.OK, Service: "api", TokenID: "tok-" + string(rune('a'+i))}
		msgs = append(msgs, consumer.Message{Src: event.Source{Topic: "auth", Partition: 2, Offset: int64(i)}, Value: ingest.AppendJSON(nil, &e)})
	}
	r := runLimited(t, pipeline.Config{MaxEventAhead: 24 * time.Hour, MaxEventAge: 30 * 24 * time.Hour}, msgs, 2, 3)
	st, acks, reg, logs := r.st, r.acks, r.reg, r.logs
	if last, _ := acks.get(2); last != 3 {
		t.Fatalf("acked up to offset %d, want 3: a rejected message's offset is done too", last)
	}
	if n := st.stored.Load(); n != 1 {
		t.Fatalf("stored %d events, want only the plausible one", n)
	}
	rejected := testutil.ToFloat64(prometheusCounter(t, reg, "tokenwatch_events_rejected_total"))
	if rejected != 3 {
		t.Fatalf("counted %v rejections with reason invalid_value, want 3", rejected)
	}
	for _, want := range []string{`offset 1: field \"ts\": ts 0001-01-01T00:00:01Z is before 1900`,
		`offset 2: field \"ts\": ts ` + times[2].Format(time.RFC3339) + ` is 48h0m0s ahead`, `offset 3: field \"ts\"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no log line with %q:\n%s", want, logs.String())
		}
	}
}

// A raw message over pipeline.max_message_bytes, or an event whose fields
// outside the contract take more than pipeline.max_extra_bytes, is rejected
// with reason too_large, counted, its offset committed, and not stored.
func TestOversizedMessagesAndExtraFieldsAreRejected(t *testing.T) {
	now := time.Now().UTC()
	ok := event.Event{TS: now, Kind: event.KindValidate, Outcome: event.OK, Service: "api", TokenID: "tok-ok"}
	big := ok
	big.TokenID = "tok-big"
	big.Extra = map[string]string{"blob": `"` + strings.Repeat("x", 5000) + `"`}
	small := ok
	small.TokenID, small.Extra = "tok-small", map[string]string{"note": `"fine"`}
	values := [][]byte{ingest.AppendJSON(nil, &ok), ingest.AppendJSON(nil, &big), ingest.AppendJSON(nil, &small),
		append(ingest.AppendJSON(nil, &ok), bytes.Repeat([]byte(" "), 20000)...)}
	var msgs []consumer.Message
	for i, v := range values {
		msgs = append(msgs, consumer.Message{Src: event.Source{Topic: "auth", Partition: 1, Offset: int64(i)}, Value: v})
	}
	r := runLimited(t, pipeline.Config{MaxMessageBytes: 10000, MaxExtraBytes: 1000}, msgs, 1, 3)
	st, acks, reg, logs := r.st, r.acks, r.reg, r.logs
	if last, _ := acks.get(1); last != 3 {
		t.Fatalf("acked up to offset %d, want 3", last)
	}
	if n := st.stored.Load(); n != 2 {
		t.Fatalf("stored %d events, want the two of normal size", n)
	}
	if r := testutil.ToFloat64(prometheusCounter(t, reg, "tokenwatch_events_rejected_total")); r != 2 {
		t.Fatalf("counted %v rejections, want 2", r)
	}
	for _, want := range []string{`offset 1: field \"extra\": 1 fields outside the contract take 5006 bytes; want at most pipeline.max_extra_bytes (1000) (too_large)`,
		`offset 3: the message is`, `want at most pipeline.max_message_bytes (10000) (too_large)`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no log line with %q:\n%s", want, logs.String())
		}
	}
}

// 100 bad messages in a burst: the log's rate limit lets 10 lines a second
// through, and says how many it kept out and their offset spans per
// partition, so every rejected message can still be found by its offset.
func TestRejectionsTheLogLimitKeepsOutAreSummedUpByPartition(t *testing.T) {
	var msgs []consumer.Message
	for i := range 100 {
		msgs = append(msgs, consumer.Message{Src: event.Source{Topic: "auth", Partition: int32(i % 2), Offset: int64(i / 2)}, Value: []byte("{not json")})
	}
	logs := runLimited(t, pipeline.Config{}, msgs, 0, -1).logs // four chunks, as the consumer hands them on
	found := map[string]int{}                                  // "partition/offset" -> times accounted for
	one := regexp.MustCompile(`partition (\d) offset (\d+)`)
	span := regexp.MustCompile(`auth/(\d):(\d+)-(\d+) \((\d+)\)`)
	summed := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "message rejected") {
			if m := one.FindStringSubmatch(line); m != nil {
				found[m[1]+"/"+m[2]]++
			}
		}
		if strings.Contains(line, "not logged one by one") {
			for _, m := range span.FindAllStringSubmatch(line, -1) {
				first, _ := strconv.Atoi(m[2])
				last, _ := strconv.Atoi(m[3])
				n, _ := strconv.Atoi(m[4])
				summed += n
				for o := first; o <= last; o++ {
					found[m[1]+"/"+strconv.Itoa(o)]++
				}
			}
		}
	}
	if summed == 0 {
		t.Fatalf("no summary of the rejections kept out of the log:\n%s", logs.String())
	}
	for i := range 100 {
		if k := strconv.Itoa(i%2) + "/" + strconv.Itoa(i/2); found[k] == 0 {
			t.Errorf("rejected message at partition %s cannot be found in the log", k)
		}
	}
	if individual := strings.Count(logs.String(), "message rejected"); individual+summed != 100 {
		t.Errorf("%d logged one by one and %d summed up, want 100 in all", individual, summed)
	}
}

// limitedRun is what runLimited leaves to look at.
type limitedRun struct {
	st   *flakyStore
	acks *ackLog
	reg  *prometheus.Registry
	logs bytes.Buffer
}

// runLimited runs a pipeline on JSON messages with the limits of limits
// (and small batches), delivers msgs in chunks of 25, waits (at most 5 s)
// until partition's offset last is acknowledged (last < 0: no wait), and
// stops it.
func runLimited(t *testing.T, limits pipeline.Config, msgs []consumer.Message, partition int32, last int64) *limitedRun {
	t.Helper()
	r := &limitedRun{st: &flakyStore{}, acks: &ackLog{}, reg: prometheus.NewRegistry()}
	cfg := limits
	cfg.BatchRows, cfg.BatchInterval, cfg.MaxPendingBatches = 10, 20*time.Millisecond, 1
	cfg.RetryInitial, cfg.RetryMax, cfg.LabelCap, cfg.ShutdownGrace = 2*time.Millisecond, 10*time.Millisecond, 10, 300*time.Millisecond
	cfg.Format = ingest.FormatJSON
	dec, _ := ingest.NewDecoder(ingest.FormatJSON)
	p, err := pipeline.New(cfg, pipeline.Options{Decoder: dec, Store: r.st, Acker: r.acks, Metrics: metrics.New(r.reg),
		Log: slog.New(slog.NewTextHandler(&r.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	for i := 0; i < len(msgs); i += 25 {
		if err := p.Deliver(ctx, msgs[i:min(i+25, len(msgs))]); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for last >= 0 && time.Now().Before(deadline) {
		if got, _ := r.acks.get(partition); got == last {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	return r
}

// When every message since the last stored row was rejected, their offsets
// are committed within the batch interval, not only when the next row is
// stored or at shutdown (the fleet's analyze stage reads keyed records
// that carry no event, partials and token facts, which left its group's
// offsets behind the keyed topic's end for as long as no row came).
func TestOffsetsOfMessagesWithoutRowsAreAckedWhileRunning(t *testing.T) {
	var msgs []consumer.Message
	for i := range 3 {
		msgs = append(msgs, consumer.Message{Src: event.Source{Topic: "auth", Partition: 4, Offset: int64(10 + i)}, Value: []byte(`{"not":"an event"}`)})
	}
	st, acks := &flakyStore{}, &ackLog{}
	cfg := pipeline.Config{BatchRows: 10, BatchInterval: 20 * time.Millisecond, MaxPendingBatches: 1, RetryInitial: 2 * time.Millisecond,
		RetryMax: 10 * time.Millisecond, LabelCap: 10, ShutdownGrace: 300 * time.Millisecond, Format: ingest.FormatJSON}
	dec, _ := ingest.NewDecoder(ingest.FormatJSON)
	p, err := pipeline.New(cfg, pipeline.Options{Decoder: dec, Store: st, Acker: acks, Metrics: metrics.New(prometheus.NewRegistry()),
		Log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	if err := p.Deliver(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if last, ok := acks.get(4); ok && last == 12 {
			cancel()
			<-done
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	last, ok := acks.get(4)
	t.Fatalf("while running, acked %d (%v), want offset 12: rejected messages' offsets waited for a row", last, ok)
}
