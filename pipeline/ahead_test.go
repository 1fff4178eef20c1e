package pipeline_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/eventtime"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/metrics"
	"github.com/tokenwatch/tokenwatch/pipeline"
)

// orderPublisher notes the events handed to the keyed topic, in order.
type orderPublisher struct {
	mu  sync.Mutex
	ts  []time.Time
	src []int32
}

func (o *orderPublisher) Publish(e *event.Event, _ int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ts = append(o.ts, e.TS)
	o.src = append(o.src, e.Src.Partition)
}
func (o *orderPublisher) Mark() uint64                       { return 0 }
func (o *orderPublisher) Wait(context.Context, uint64) error { return nil }

// TestTheIngestStageKeepsRawPartitionsWithinMaxAheadOfEachOther reads two
// raw partitions, one delivered as fast as the pipeline takes it and one
// slowly: the keyed topic receives them in the order they are processed,
// and the fast one may not run further ahead of the slow one than MaxAhead
// and the chunk on its way (an analyze member merges them again, and a
// stream far behind the others makes its merge buffer grow and its events
// late). Queued chunks used to let it run 16 chunks ahead.
func TestTheIngestStageKeepsRawPartitionsWithinMaxAheadOfEachOther(t *testing.T) {
	const chunk = 10 // events of 100 ms: a chunk spans 1 s
	_, fast := partitionEvents(0, t0, 100*time.Millisecond, 600)
	_, slow := partitionEvents(1, t0, 100*time.Millisecond, 600)
	pub := &orderPublisher{}
	dec, _ := ingest.NewDecoder(ingest.FormatJSON)
	p, err := pipeline.New(pipeline.Config{BatchRows: 1000, BatchInterval: 20 * time.Millisecond, MaxPendingBatches: 4,
		RetryInitial: time.Millisecond, RetryMax: time.Millisecond, LabelCap: 10,
		EventTime: eventtime.Config{Lateness: time.Second, IdleTimeout: time.Minute, MaxBuffered: 100_000, MaxAhead: 2 * time.Second}},
		pipeline.Options{Decoder: dec, Store: &flakyStore{}, Publisher: pub,
			Metrics: metrics.New(prometheus.NewRegistry()), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	if err := p.Assigned(ctx, "auth", []int32{0, 1}); err != nil {
		t.Fatal(err)
	}
	// Both start together (the gate knows nothing of a partition that has
	// not delivered yet); then one is read faster.
	if err := p.Deliver(ctx, slow[:chunk]); err != nil {
		t.Fatal(err)
	}
	slow = slow[chunk:]
	var readers sync.WaitGroup
	for _, r := range []struct {
		msgs  []consumer.Message
		pause time.Duration
	}{{fast, 0}, {slow, 5 * time.Millisecond}} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := 0; i < len(r.msgs); i += chunk {
				if err := p.Deliver(ctx, r.msgs[i:i+chunk]); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(r.pause)
			}
		}()
	}
	readers.Wait()
	if err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done

	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.ts) != len(fast)+len(slow)+chunk {
		t.Fatalf("%d events published, want %d", len(pub.ts), len(fast)+len(slow)+chunk)
	}
	var reached [2]time.Time
	var ahead time.Duration
	for i, ts := range pub.ts {
		reached[pub.src[i]] = ts
		if reached[1].IsZero() || !reached[1].Before(t0.Add(599*100*time.Millisecond)) {
			continue
		}
		ahead = max(ahead, reached[0].Sub(reached[1]))
	}
	// MaxAhead, the chunk on its way and one more the gate judged on the
	// median of what was pending.
	if limit := 2*time.Second + 2*chunk*100*time.Millisecond; ahead > limit {
		t.Errorf("the fast raw partition ran %s ahead of the slow one in the keyed topic, want at most %s", ahead, limit)
	}
}
