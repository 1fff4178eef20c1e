package pipeline_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
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

// orderRecorder is an observer that notes the ts of every event it is
// handed, live or replayed, in the order it is handed them.
type orderRecorder struct {
	mu  sync.Mutex
	ts  []time.Time
	src []int32
}

func (r *orderRecorder) Observe(e *event.Event) { r.note(e) }
func (r *orderRecorder) Replay(e *event.Event)  { r.note(e) }
func (r *orderRecorder) Tick(time.Time)         {}
func (r *orderRecorder) Flush()                 {}
func (r *orderRecorder) note(e *event.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ts = append(r.ts, e.TS)
	r.src = append(r.src, e.Src.Partition)
}

// history is a Replayer holding the stored events of partitions.
type history struct{ events []event.Event }

func (h history) StoredEventTime(_ context.Context, _ string, partitions []int32) (map[int32]time.Time, error) {
	out := map[int32]time.Time{}
	for _, e := range h.events {
		if e.TS.After(out[e.Src.Partition]) {
			out[e.Src.Partition] = e.TS
		}
	}
	return out, nil
}

func (h history) ReplayEvents(_ context.Context, _ string, _ []int32, since time.Time, fn func(*event.Event)) (int, error) {
	for i := range h.events {
		if !h.events[i].TS.Before(since) {
			fn(&h.events[i])
		}
	}
	return len(h.events), nil
}

// startOrderPipeline runs a pipeline reading JSON into a store that takes
// everything (events merged with a lateness of 1 s, a partition idle after
// a minute, maxAhead as given), with o's collaborators; stop ends it and
// waits for Run to return.
func startOrderPipeline(t *testing.T, maxAhead time.Duration, o pipeline.Options, edit ...func(*pipeline.Config)) (p *pipeline.Pipeline, ctx context.Context, stop func()) {
	t.Helper()
	o.Decoder, _ = ingest.NewDecoder(ingest.FormatJSON)
	o.Store = &flakyStore{}
	o.Metrics = metrics.New(prometheus.NewRegistry())
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cfg := pipeline.Config{BatchRows: 1000, BatchInterval: 20 * time.Millisecond, MaxPendingBatches: 4,
		RetryInitial: time.Millisecond, RetryMax: time.Millisecond, LabelCap: 10, RebuildWindow: time.Hour,
		EventTime: eventtime.Config{Lateness: time.Second, IdleTimeout: time.Minute, MaxBuffered: 100_000, MaxAhead: maxAhead}}
	for _, f := range edit {
		f(&cfg)
	}
	p, err := pipeline.New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	return p, ctx, func() { cancel(); <-done }
}

var t0 = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

// partitionEvents are n validations of partition part, every step from
// start, as stored events and as messages from offset 0.
func partitionEvents(part int32, start time.Time, step time.Duration, n int) ([]event.Event, []consumer.Message) {
	evs := make([]event.Event, n)
	msgs := make([]consumer.Message, n)
	for i := range evs {
		src := event.Source{Topic: "auth", Partition: part, Offset: int64(i)}
		evs[i] = event.Event{TS: start.Add(time.Duration(i) * step), Kind: event.KindValidate, Outcome: event.OK, Service: "api",
			TokenID: "t" + string(rune('a'+part)) + start.Add(time.Duration(i)*step).Format("150405.000"), Src: src}
		msgs[i] = consumer.Message{Src: src, Value: ingest.AppendJSON(nil, &evs[i])}
	}
	return evs, msgs
}

// TestARebuildWhileOtherPartitionsAreHeldKeepsEventTimeOrder takes over a
// partition while this member holds events of its other partitions in the
// merge (one of them is behind): the taken-over partition's history, which
// reaches further, must meet the held events in ts order rather than move
// the stages' clocks past them (they would arrive late, and a revoke that
// late is lost: what a member taking a partition from another mid-backlog
// did before).
func TestARebuildWhileOtherPartitionsAreHeldKeepsEventTimeOrder(t *testing.T) {
	stored, _ := partitionEvents(2, t0.Add(-10*time.Second), 100*time.Millisecond, 300) // to 10:00:20
	_, live2 := partitionEvents(2, t0.Add(20*time.Second), 100*time.Millisecond, 100)
	for i := range live2 {
		live2[i].Src.Offset += 300
	}
	_, live0 := partitionEvents(0, t0, 100*time.Millisecond, 400)
	_, live1 := partitionEvents(1, t0, 100*time.Millisecond, 400)

	rec := &orderRecorder{}
	p, ctx, stop := startOrderPipeline(t, 0, pipeline.Options{Replayer: history{stored}, Observers: []pipeline.Observer{rec}})
	step := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Partitions 0 and 1 are read; 1 has not delivered yet, so partition
	// 0's first 10 s wait in the merge.
	step(p.Assigned(ctx, "auth", []int32{0, 1}))
	step(p.Deliver(ctx, live0[:100]))
	step(p.Drain(ctx))
	// Partition 2 moves here: its history reaches 10:00:20.
	step(p.Assigned(ctx, "auth", []int32{0, 1, 2}))
	step(p.Rebuild(ctx, "auth", []int32{2}))
	step(p.Deliver(ctx, live1))
	step(p.Deliver(ctx, live0[100:]))
	step(p.Deliver(ctx, live2))
	step(p.Drain(ctx))
	stop()

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if want := len(stored) + len(live2) + len(live0) + len(live1); len(rec.ts) != want {
		t.Fatalf("the stages saw %d events, want %d", len(rec.ts), want)
	}
	for i := 1; i < len(rec.ts); i++ {
		if rec.ts[i].Before(rec.ts[i-1]) {
			t.Fatalf("event %d (partition %d, %s) reached the stages after one at %s (partition %d): the rebuilt history passed the held events",
				i, rec.src[i], rec.ts[i].Format("15:04:05.000"), rec.ts[i-1].Format("15:04:05.000"), rec.src[i-1])
		}
	}
}

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
	p, ctx, stop := startOrderPipeline(t, 2*time.Second, pipeline.Options{Publisher: pub})
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
	stop()

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

// boundedHistory is a history that tells where a replay of at most max
// events must start, as the store does.
type boundedHistory struct{ history }

func (h boundedHistory) ReplayStart(_ context.Context, _ string, _ []int32, since time.Time, max int) (time.Time, int, error) {
	var in []time.Time
	for _, e := range h.events {
		if !e.TS.Before(since) {
			in = append(in, e.TS)
		}
	}
	if len(in) <= max {
		return since, len(in), nil
	}
	slices.SortFunc(in, func(a, b time.Time) int { return b.Compare(a) })
	return in[max-1], len(in), nil
}

// TestARebuildReplaysAtMostRebuildMaxEventsAndSaysSo: a window holding
// 1,000 stored events, a bound of 100: the rebuild replays the latest 100
// and warns with how many the window held.
func TestARebuildReplaysAtMostRebuildMaxEventsAndSaysSo(t *testing.T) {
	stored, _ := partitionEvents(0, t0, 100*time.Millisecond, 1000)
	rec := &orderRecorder{}
	var logs syncBuffer
	p, ctx, stop := startOrderPipeline(t, 0, pipeline.Options{Replayer: boundedHistory{history{stored}}, Observers: []pipeline.Observer{rec},
		Log: slog.New(slog.NewTextHandler(&logs, nil))}, func(c *pipeline.Config) { c.RebuildMaxEvents = 100 })
	if err := p.Assigned(ctx, "auth", []int32{0}); err != nil {
		t.Fatal(err)
	}
	if err := p.Rebuild(ctx, "auth", []int32{0}); err != nil {
		t.Fatal(err)
	}
	stop()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.ts) != 100 || !rec.ts[0].Equal(stored[900].TS) {
		t.Fatalf("replayed %d events from %v, want the latest 100 (from %v)", len(rec.ts), rec.ts[0], stored[900].TS)
	}
	if l := logs.String(); !strings.Contains(l, "rebuild_max_events") || !strings.Contains(l, "in_window=1000") {
		t.Errorf("no warning naming the bound and the 1000 events in the window:\n%s", l)
	}
}
