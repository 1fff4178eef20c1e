package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/metrics"
	"github.com/tokenwatch/tokenwatch/pipeline"
	"github.com/tokenwatch/tokenwatch/store"
)

// flakyStore fails inserts while down is set, and counts what it stored.
type flakyStore struct {
	down   atomic.Bool
	tries  atomic.Int64
	stored atomic.Int64
}

func (s *flakyStore) InsertEvents(_ context.Context, b *store.Batch) error {
	s.tries.Add(1)
	if s.down.Load() {
		return errors.New("dial tcp: connection refused")
	}
	s.stored.Add(int64(b.Len()))
	return nil
}
func (s *flakyStore) InsertFindings(context.Context, []finding.Finding) error     { return nil }
func (s *flakyStore) InsertRevocations(context.Context, []store.Revocation) error { return nil }

type ackLog struct {
	mu   sync.Mutex
	last map[int32]int64
}

func (a *ackLog) Ack(_ string, partition int32, last int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = map[int32]int64{}
	}
	a.last[partition] = max(a.last[partition], last)
}

func (a *ackLog) get(p int32) (int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.last[p]
	return v, ok
}

func messages(from, n int) []consumer.Message {
	out := make([]consumer.Message, n)
	for i := range out {
		off := int64(from + i)
		e := event.Event{TS: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC).Add(time.Duration(off) * time.Millisecond),
			Kind: event.KindValidate, Outcome: event.OK, Service: "api", TokenID: fmt.Sprintf("%016x", off)}
		out[i] = consumer.Message{Src: event.Source{Topic: "auth", Partition: 0, Offset: off}, Value: ingest.AppendJSON(nil, &e)}
	}
	return out
}

func newTestPipeline(t *testing.T, st pipeline.Store, acks pipeline.Acker, reg prometheus.Registerer) *pipeline.Pipeline {
	t.Helper()
	dec, _ := ingest.NewDecoder(ingest.FormatJSON)
	p, err := pipeline.New(pipeline.Config{BatchRows: 10, BatchInterval: 20 * time.Millisecond, MaxPendingBatches: 1,
		RetryInitial: 2 * time.Millisecond, RetryMax: 10 * time.Millisecond, LabelCap: 10, ShutdownGrace: 300 * time.Millisecond},
		pipeline.Options{Decoder: dec, Store: st, Acker: acks, Metrics: metrics.New(reg), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWhileClickHouseIsDownNothingIsAckedAndEverythingIsStoredWhenItReturns(t *testing.T) {
	st := &flakyStore{}
	st.down.Store(true)
	acks := &ackLog{}
	reg := prometheus.NewRegistry()
	p := newTestPipeline(t, st, acks, reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()

	if err := p.Deliver(ctx, messages(0, 25)); err != nil {
		t.Fatal(err)
	}
	for st.tries.Load() < 5 {
		time.Sleep(time.Millisecond)
	}
	if _, ok := acks.get(0); ok {
		t.Fatal("an offset was acknowledged while ClickHouse refused every insert")
	}
	st.down.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for st.stored.Load() < 25 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := st.stored.Load(); n != 25 {
		t.Fatalf("stored %d of 25 after ClickHouse came back", n)
	}
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if last, _ := acks.get(0); last == 24 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if last, _ := acks.get(0); last != 24 {
		t.Fatalf("acked up to offset %d, want 24", last)
	}
	if r := testutil.ToFloat64(prometheusCounter(t, reg, "tokenwatch_clickhouse_retries_total")); r < 4 {
		t.Errorf("clickhouse retries counted %v, want at least 4", r)
	}
	cancel()
	<-done
}

func TestASlowClickHouseStopsTheConsumerInsteadOfGrowingMemory(t *testing.T) {
	st := &flakyStore{}
	st.down.Store(true) // never comes back
	p := newTestPipeline(t, st, &ackLog{}, prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()

	var accepted atomic.Int64
	dctx, stopDelivering := context.WithCancel(context.Background())
	go func() {
		for i := 0; i < 10_000; i++ {
			if p.Deliver(dctx, messages(i*10, 10)) != nil {
				return
			}
			accepted.Add(1)
		}
	}()
	// Wait until deliveries stop (on a loaded machine the pipeline takes a
	// while to fill up), then check that they stopped early and stay stopped.
	n, deadline := accepted.Load(), time.Now().Add(10*time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(300 * time.Millisecond)
		again := accepted.Load()
		if again == n {
			break
		}
		n = again
	}
	time.Sleep(300 * time.Millisecond)
	if again := accepted.Load(); again != n || n > 40 {
		t.Fatalf("the consumer kept delivering (%d then %d chunks of 10) while nothing could be stored", n, again)
	}
	stopDelivering()
	// And a stop still returns, within the shutdown grace, with ClickHouse down.
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the pipeline did not stop while ClickHouse was down")
	}
}

func prometheusCounter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sum"})
	c.Add(total)
	return c
}

// gatedPublisher acknowledges nothing until open is closed.
type gatedPublisher struct {
	mu        sync.Mutex
	published int
	open      chan struct{}
}

func (g *gatedPublisher) Publish(*event.Event, int) { g.mu.Lock(); g.published++; g.mu.Unlock() }
func (g *gatedPublisher) Mark() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return uint64(g.published)
}
func (g *gatedPublisher) Wait(ctx context.Context, _ uint64) error {
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// In the fleet's ingest stage, raw offsets are acknowledged only after the
// events are stored and their keyed copies acknowledged by the brokers.
func TestRawOffsetsWaitForTheKeyedCopies(t *testing.T) {
	st := &flakyStore{}
	acks := &ackLog{}
	dec, _ := ingest.NewDecoder(ingest.FormatJSON)
	pub := &gatedPublisher{open: make(chan struct{})}
	p, err := pipeline.New(pipeline.Config{BatchRows: 10, BatchInterval: 20 * time.Millisecond, MaxPendingBatches: 1,
		RetryInitial: 2 * time.Millisecond, RetryMax: 10 * time.Millisecond, LabelCap: 10, ShutdownGrace: 300 * time.Millisecond},
		pipeline.Options{Decoder: dec, Store: st, Acker: acks, Publisher: pub, Metrics: metrics.New(prometheus.NewRegistry()),
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	if err := p.Deliver(ctx, messages(0, 25)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.stored.Load() < 10 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if st.stored.Load() < 10 {
		t.Fatalf("stored %d events: the test needs a stored batch", st.stored.Load())
	}
	if last, ok := acks.get(0); ok {
		t.Fatalf("offset %d acknowledged while the keyed copies were not", last)
	}
	close(pub.open)
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if last, _ := acks.get(0); last == 24 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if last, _ := acks.get(0); last != 24 {
		t.Fatalf("acked up to %d once the keyed copies were acknowledged, want 24", last)
	}
	if n := pub.Mark(); n != 25 {
		t.Fatalf("published %d events to the keyed topic, want 25", n)
	}
	cancel()
	<-done
}
