package eventtime

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

type out struct {
	ts   []time.Time
	late int
}

func (o *out) emit(_ Partition, e *event.Event, _ time.Time, late, _ bool) {
	o.ts = append(o.ts, e.TS)
	if late {
		o.late++
	}
}

func ev(sec int) *event.Event { return &event.Event{TS: t0.Add(time.Duration(sec) * time.Second)} }

var p0, p1, p2 = Partition{"t", 0}, Partition{"t", 1}, Partition{"t", 2}

// A backlog read at different speeds: partition 0 delivers an hour of
// events before partition 1 delivers its first. The merged stream must be
// in ts order, with nothing reordered.
func TestMergeReleasesInEventTimeOrderAcrossPartitionsReadAtDifferentSpeeds(t *testing.T) {
	var o out
	m := New(Config{IdleTimeout: time.Minute}, o.emit)
	now := time.Now()
	m.Assign(p0, now)
	m.Assign(p1, now)
	for s := 0; s < 3600; s += 2 { // p0: even seconds, the whole hour first
		m.Add(p0, ev(s), now, now)
		m.Advance(now)
	}
	if len(o.ts) != 0 {
		t.Fatalf("released %d events while partition 1 had delivered nothing", len(o.ts))
	}
	for s := 1; s < 3600; s += 2 { // then p1: odd seconds
		m.Add(p1, ev(s), now, now)
		m.Advance(now)
	}
	m.Flush()
	if len(o.ts) != 3600 {
		t.Fatalf("released %d of 3600", len(o.ts))
	}
	if !slices.IsSortedFunc(o.ts, func(a, b time.Time) int { return a.Compare(b) }) {
		t.Fatal("merged stream is not in ts order")
	}
	if s := m.Stats(); s.Reordered != 0 || s.Late != 0 || s.Forced != 0 {
		t.Fatalf("stats %+v, want nothing reordered, late or forced", s)
	}
}

// The watermark is the minimum over the partitions; releasing waits for
// the slowest, and a partition silent for IdleTimeout stops holding it.
func TestWatermarkIsTheMinimumAndIdlePartitionsAreExcluded(t *testing.T) {
	var o out
	m := New(Config{IdleTimeout: 5 * time.Second}, o.emit)
	now := time.Now()
	m.Add(p0, ev(100), now, now)
	m.Add(p1, ev(10), now, now)
	m.Add(p2, ev(50), now, now)
	m.Advance(now)
	if got := m.Watermark(); !got.Equal(ev(10).TS) {
		t.Fatalf("watermark %v, want the slowest partition's %v", got, ev(10).TS)
	}
	if len(o.ts) != 1 {
		t.Fatalf("released %d, want only the event at the watermark", len(o.ts))
	}
	// p0 and p2 keep delivering; p1 falls silent.
	later := now.Add(6 * time.Second)
	m.Add(p0, ev(120), now, later)
	m.Add(p2, ev(110), now, later)
	m.Advance(later)
	if got := m.Watermark(); !got.Equal(ev(110).TS) {
		t.Fatalf("watermark %v after p1 went idle, want %v", got, ev(110).TS)
	}
	if s := m.Stats(); s.Idle != 1 || s.Partitions != 2 {
		t.Fatalf("stats %+v, want 1 idle and 2 active partitions", s)
	}
	// p1 wakes up with an event far behind: passed on at once, counted.
	m.Add(p1, ev(20), now, later)
	if s := m.Stats(); s.Reordered != 1 || s.Late != 1 {
		t.Fatalf("stats %+v, want the woken partition's event reordered and late", s)
	}
	if len(o.ts) != 5 || o.late != 1 { // 10; 50, 100, 110 at the new watermark; the late 20
		t.Fatalf("released %d (late %d), want 5 with 1 late", len(o.ts), o.late)
	}
}

// A partition assigned but not yet heard from holds the watermark until it
// delivers or its idle timeout passes.
func TestAssignedSilentPartitionHoldsTheWatermarkUntilIdle(t *testing.T) {
	var o out
	m := New(Config{IdleTimeout: 5 * time.Second}, o.emit)
	now := time.Now()
	m.Assign(p0, now)
	m.Assign(p1, now)
	m.Add(p0, ev(1), now, now)
	m.Add(p0, ev(2), now, now)
	m.Advance(now.Add(time.Second))
	if len(o.ts) != 0 {
		t.Fatalf("released %d while partition 1 may still deliver older events", len(o.ts))
	}
	m.Advance(now.Add(4 * time.Second)) // p0 not idle yet (its lastHeard is now)
	if len(o.ts) != 0 {
		t.Fatalf("released %d before the timeout", len(o.ts))
	}
	m.Add(p0, ev(3), now, now.Add(5*time.Second))
	m.Advance(now.Add(5 * time.Second))
	if len(o.ts) != 3 {
		t.Fatalf("released %d after partition 1's timeout, want 3", len(o.ts))
	}
}

// Within a partition events come a little out of order; the merger passes
// them on behind the released stream, and only those beyond the lateness
// count as late.
func TestSmallDisorderIsReorderedNotLate(t *testing.T) {
	var o out
	m := New(Config{IdleTimeout: time.Minute, Lateness: 30 * time.Second}, o.emit)
	now := time.Now()
	m.Add(p0, ev(100), now, now)
	m.Advance(now)
	m.Add(p0, ev(90), now, now)  // 10 s behind: reordered
	m.Add(p0, ev(60), now, now)  // 40 s behind: late
	m.Add(p0, ev(100), now, now) // equal: held, not behind
	m.Advance(now)
	s := m.Stats()
	if s.Reordered != 2 || s.Late != 1 || s.Released != 4 {
		t.Fatalf("stats %+v, want 2 reordered, 1 late, 4 released", s)
	}
}

// The gate blocks a partition running ahead while the buffer is over half
// full, never the partition holding the watermark, and opens once the slow
// one catches up.
func TestGateBlocksThePartitionsAheadAndNeverTheSlowest(t *testing.T) {
	var o out
	m := New(Config{IdleTimeout: time.Minute, MaxBuffered: 100}, o.emit)
	now := time.Now()
	m.Add(p1, ev(0), now, now)
	for s := 1; s <= 60; s++ {
		m.Add(p0, ev(s), now, now)
	}
	m.Advance(now)
	if m.Gate(p0) == nil {
		t.Fatal("partition 0 runs ahead with the buffer over half full, but is not blocked")
	}
	if m.Gate(p1) != nil {
		t.Fatal("partition 1 holds the watermark and must never be blocked")
	}
	ch := m.Gate(p0)
	for s := 1; s <= 60; s++ {
		m.Add(p1, ev(s), now, now)
	}
	m.Advance(now)
	select {
	case <-ch:
	default:
		t.Fatal("the gate's channel did not close when partition 0 was unblocked")
	}
	if m.Gate(p0) != nil {
		t.Fatalf("partition 0 still blocked after partition 1 caught up (buffered %d)", m.Stats().Buffered)
	}
}

// With MaxAhead, a partition whose watermark runs more than MaxAhead past
// the stream's is paused though the buffer is nearly empty, and let go when
// the others catch up (the fleet's ingest stage keeps its raw partitions
// together in the keyed topic this way).
func TestMaxAheadPausesAPartitionFarAheadInEventTime(t *testing.T) {
	var o out
	m := New(Config{IdleTimeout: time.Minute, MaxBuffered: 100_000, MaxAhead: 30 * time.Second}, o.emit)
	now := time.Now()
	m.Add(p1, ev(0), now, now)
	for s := 1; s <= 20; s++ {
		m.Add(p0, ev(s), now, now)
	}
	m.Advance(now)
	if m.Gate(p0) != nil || m.Gate(p1) != nil {
		t.Fatal("20 s apart, within MaxAhead: neither partition may be paused")
	}
	for s := 21; s <= 120; s++ {
		m.Add(p0, ev(s), now, now)
	}
	m.Advance(now)
	if m.Gate(p0) == nil {
		t.Fatalf("partition 0 runs 2 minutes ahead of partition 1 with %d events held, but is not paused", m.Stats().Buffered)
	}
	if m.Gate(p1) != nil {
		t.Fatal("partition 1 holds the watermark and must never be paused")
	}
	for s := 1; s <= 100; s++ {
		m.Add(p1, ev(s), now, now)
	}
	m.Advance(now)
	if m.Gate(p0) != nil {
		t.Fatal("partition 0 still paused after partition 1 caught up to within MaxAhead")
	}
}

// Past MaxBuffered the oldest events are released early, counted, and
// nothing is lost.
func TestFullBufferReleasesTheOldestAndLosesNothing(t *testing.T) {
	var o out
	m := New(Config{IdleTimeout: time.Minute, MaxBuffered: 50}, o.emit)
	now := time.Now()
	m.Assign(p1, now) // never delivers within the test: nothing is released by the watermark
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 500; i++ {
		m.Add(p0, ev(r.IntN(1000)), now, now)
		m.Advance(now)
	}
	m.Flush()
	s := m.Stats()
	if s.Forced == 0 || s.Buffered != 0 {
		t.Fatalf("stats %+v, want forced releases and an empty buffer", s)
	}
	if len(o.ts) != 500 || s.Released != 500 {
		t.Fatalf("released %d (stats %d) of 500", len(o.ts), s.Released)
	}
}

// A silent partition known to have a backlog is not idle: a slow reader
// holds the watermark (up to LaggingTimeout), a caught-up one does not.
func TestPartitionWithBacklogIsNotIdle(t *testing.T) {
	var o out
	m := New(Config{IdleTimeout: 5 * time.Second, LaggingTimeout: time.Minute}, o.emit)
	now := time.Now()
	m.Assign(p0, now)
	m.Assign(p1, now)
	m.Backlog(p1, 1200, now)
	for s := 1; s <= 10; s++ {
		m.Add(p0, ev(s), now, now.Add(10*time.Second))
	}
	m.Advance(now.Add(10 * time.Second))
	if len(o.ts) != 0 {
		t.Fatalf("released %d while partition 1 has a backlog it has not delivered", len(o.ts))
	}
	m.Add(p0, ev(11), now, now.Add(61*time.Second))
	m.Advance(now.Add(61 * time.Second))
	if len(o.ts) != 11 {
		t.Fatalf("released %d after the lagging timeout, want 11", len(o.ts))
	}
	m.Backlog(p1, 0, now.Add(62*time.Second)) // caught up: idle after IdleTimeout again
	m.Add(p0, ev(12), now, now.Add(70*time.Second))
	m.Advance(now.Add(70 * time.Second))
	if len(o.ts) != 12 {
		t.Fatalf("released %d, want 12", len(o.ts))
	}
}

// One emitter whose clock runs ten minutes ahead must not drag the
// watermark: the other events of the batch would all become late.
func TestEmitterAheadDoesNotDragTheWatermark(t *testing.T) {
	var o out
	m := New(Config{IdleTimeout: time.Minute, Lateness: 30 * time.Second}, o.emit)
	now := time.Now()
	for _, p := range []Partition{p0, p1} {
		for s := 0; s < 10; s++ {
			m.Add(p, ev(s), now, now)
		}
		m.Add(p, ev(600), now, now) // the skewed emitter
	}
	m.Advance(now)
	if wm := m.Watermark(); wm.After(ev(10).TS) {
		t.Fatalf("watermark %v dragged by an event ten minutes ahead", wm)
	}
	for _, p := range []Partition{p0, p1} {
		for s := 10; s < 20; s++ {
			m.Add(p, ev(s), now, now)
		}
	}
	m.Advance(now)
	m.Flush()
	if s := m.Stats(); s.Late != 0 || s.Reordered != 0 {
		t.Fatalf("stats %+v: the ordinary events became late", s)
	}
}

// With partitions learned from the events, nothing is released until every
// source has had IdleTimeout to be heard.
func TestDiscoveredPartitionsWarmUpBeforeTheFirstRelease(t *testing.T) {
	var o out
	m := New(Config{IdleTimeout: 5 * time.Second, Discover: true}, o.emit)
	now := time.Now()
	m.Add(p0, ev(10), now, now)
	m.Advance(now)
	if len(o.ts) != 0 {
		t.Fatal("released before the other sources could be heard")
	}
	m.Add(p1, ev(5), now, now.Add(time.Second)) // an older source shows up
	m.Advance(now.Add(time.Second))
	m.Add(p0, ev(11), now, now.Add(6*time.Second))
	m.Add(p1, ev(12), now, now.Add(6*time.Second))
	m.Advance(now.Add(6 * time.Second))
	if len(o.ts) == 0 || !o.ts[0].Equal(ev(5).TS) {
		t.Fatalf("released %v, want the older source's event first", o.ts)
	}
	if s := m.Stats(); s.Reordered != 0 {
		t.Fatalf("stats %+v: nothing should be out of order", s)
	}
}

// A stream whose source still has a backlog upstream (SetLagging: the
// fleet's analyze stage, a raw partition whose ingest member died) holds
// the watermark while silent, up to LaggingTimeout; once the predicate says
// otherwise, it is idle after IdleTimeout.
func TestAStreamLaggingUpstreamHoldsTheWatermarkWhileSilent(t *testing.T) {
	var o out
	m := New(Config{IdleTimeout: 5 * time.Second, LaggingTimeout: time.Minute, Discover: true}, o.emit)
	now := time.Now()
	m.Add(p0, ev(1), now, now)
	m.Add(p1, ev(2), now, now)
	m.SetLagging(func(p Partition) bool { return p == p1 })
	for s := 3; s <= 10; s++ {
		m.Add(p0, ev(s), now, now.Add(20*time.Second))
	}
	m.Advance(now.Add(20 * time.Second))
	if len(o.ts) != 2 {
		t.Fatalf("released %d: partition 1, silent but lagging upstream, should hold the watermark at its event 2", len(o.ts))
	}
	m.SetLagging(func(Partition) bool { return false })
	m.Advance(now.Add(21 * time.Second))
	if len(o.ts) <= 2 {
		t.Fatalf("released %d after partition 1's upstream caught up: still held at partition 1's event 2", len(o.ts))
	}
}

// A stream expected before its first event (Expect: the fleet's analyze
// stage, a raw partition with a backlog upstream that has delivered
// nothing yet) holds the watermark while it lags upstream, so its first
// events, older than everything delivered so far, are not late; Expect
// leaves a stream already heard as it is.
func TestAnExpectedStreamHoldsTheWatermarkBeforeItsFirstEvent(t *testing.T) {
	for _, expect := range []bool{false, true} {
		var o out
		m := New(Config{IdleTimeout: 5 * time.Second, LaggingTimeout: time.Minute, Discover: true}, o.emit)
		now := time.Now()
		if expect {
			m.Expect(p1, now)
		}
		m.SetLagging(func(p Partition) bool { return p == p1 })
		for s := 100; s <= 200; s++ {
			m.Add(p0, ev(s), now, now)
		}
		m.Advance(now.Add(10 * time.Second))
		if expect && len(o.ts) != 0 {
			t.Fatalf("released %d while the expected stream, lagging upstream, had delivered nothing", len(o.ts))
		}
		if !expect && len(o.ts) == 0 {
			t.Fatal("nothing released with no stream expected: the test does not tell the two apart")
		}
		m.Add(p1, ev(50), now, now.Add(11*time.Second)) // the backlog's first event
		m.Advance(now.Add(11 * time.Second))
		m.Flush()
		if s := m.Stats(); expect && (s.Reordered != 0 || s.Late != 0) {
			t.Fatalf("expected stream: %+v, want nothing reordered", s)
		} else if !expect && s.Reordered != 1 {
			t.Fatalf("unexpected stream: %+v, want its first event reordered", s)
		}
	}
	// Expect does not reset a stream already heard: silent past IdleTimeout
	// and not lagging, it stays idle.
	var o out
	m := New(Config{IdleTimeout: 5 * time.Second}, o.emit)
	now := time.Now()
	m.Add(p0, ev(1), now, now)
	m.Add(p1, ev(2), now, now)
	m.Advance(now)
	m.Expect(p1, now.Add(10*time.Second))
	m.Add(p0, ev(30), now, now.Add(10*time.Second))
	m.Advance(now.Add(10 * time.Second))
	if s := m.Stats(); s.Idle != 1 {
		t.Fatalf("stats %+v: Expect revived a silent stream", s)
	}
}
