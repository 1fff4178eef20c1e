package sli

import (
	"slices"
	"sync"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// Tasks is the fleet's analyze stage's revocation tracking: one Tracker per
// keyed partition this member owns, the way Kafka Streams runs one task per
// input partition. Each has its own event time. A partition taken over from
// a member that died is minutes behind the partitions this member already
// reads: with one tracker for all of them, its history and its backlog were
// late for the event time the others had reached, so a broadcast revoke's
// share of that partition was reported (or lost) before its events were
// read. With a tracker per partition, that partition's share is reported
// when its own events pass the revoke's horizon (docs/fleet.md, "Taking
// over").
//
// The keyed partition of an event is the one it was read from
// (event.Source.Partition). Tasks is safe for concurrent use.
type Tasks struct {
	cfg TrackerConfig

	mu       sync.Mutex
	byPart   map[int32]*Tracker
	live     map[int32]bool // caught up with the partition's end: Advance moves it
	dropped  TrackerStats   // counters of trackers handed to other members
	results  []func(Revocation)
	breaches []func(Revocation)
	partials []func(RevocationPartial)
}

// NewTasks builds the trackers' factory; cfg.Split must be set.
func NewTasks(cfg TrackerConfig) (*Tasks, error) {
	if _, err := NewTracker(cfg); err != nil {
		return nil, err
	}
	return &Tasks{cfg: cfg, byPart: map[int32]*Tracker{}, live: map[int32]bool{}}, nil
}

// OnResult, OnBreach and OnPartial register callbacks, as on a Tracker,
// for every partition's tracker. Register before the first Observe.
func (t *Tasks) OnResult(fn func(Revocation)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.results = append(t.results, fn)
}

// OnBreach registers fn for early reports (TrackerConfig.BreachAfter).
func (t *Tasks) OnBreach(fn func(Revocation)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.breaches = append(t.breaches, fn)
}

// OnPartial registers fn for the partial results of broadcast revokes.
func (t *Tasks) OnPartial(fn func(RevocationPartial)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partials = append(t.partials, fn)
}

// SetOwned names the keyed partitions this member owns now. A partition it
// keeps keeps its tracker; a new one starts with a fresh tracker (the
// pipeline rebuilds it from the partition's history) that is not live until
// SetLag reports it caught up; one handed away is forgotten (its new owner
// reports what was pending).
func (t *Tasks) SetOwned(partitions []int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, tr := range t.byPart {
		if !slices.Contains(partitions, p) {
			t.dropped.add(tr.Stats())
			delete(t.byPart, p)
			delete(t.live, p)
		}
	}
	for _, p := range partitions {
		t.tracker(p)
	}
}

// SetLag tells how far partition's reader is behind the partition's end:
// at 0 the tracker is live, and Advance moves its event time while the
// partition is quiet.
func (t *Tasks) SetLag(partition int32, lag int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.byPart[partition]; ok {
		t.live[partition] = lag == 0
	}
}

// tracker returns partition's tracker, making it on first use. t.mu held.
func (t *Tasks) tracker(p int32) *Tracker {
	if tr := t.byPart[p]; tr != nil {
		return tr
	}
	tr, _ := NewTracker(t.cfg) // the config was validated by NewTasks
	tr.SetOwned([]int32{p})
	for _, fn := range t.results {
		tr.OnResult(fn)
	}
	for _, fn := range t.breaches {
		tr.OnBreach(fn)
	}
	for _, fn := range t.partials {
		tr.OnPartial(fn)
	}
	t.byPart[p] = tr
	return tr
}

// Observe hands e to the tracker of the keyed partition it was read from.
func (t *Tasks) Observe(e *event.Event) {
	t.mu.Lock()
	tr := t.tracker(e.Src.Partition)
	t.mu.Unlock()
	tr.Observe(e)
}

// Learn hands what a refresh told of the token it issued to the tracker of
// partition, where the token facts were read from (the token's partition).
func (t *Tasks) Learn(partition int32, f TokenFacts) {
	t.mu.Lock()
	tr := t.tracker(partition)
	t.mu.Unlock()
	tr.Learn(f)
}

// Advance moves the event time of every live tracker to now (the member's
// watermark): a quiet partition still reports its partials. A partition
// still reading its backlog moves by its own events only.
func (t *Tasks) Advance(now time.Time) {
	for _, tr := range t.snapshot(true) {
		tr.Advance(now)
	}
}

// Flush flushes every tracker (see Tracker.Flush).
func (t *Tasks) Flush() {
	for _, tr := range t.snapshot(false) {
		tr.Flush()
	}
}

// Stats adds up the trackers' counters, with those of the trackers handed
// away.
func (t *Tasks) Stats() TrackerStats {
	t.mu.Lock()
	s := t.dropped
	s.IndexedTokens, s.PendingRevokes, s.BufferedEvents = 0, 0, 0
	trs := make([]*Tracker, 0, len(t.byPart))
	for _, tr := range t.byPart {
		trs = append(trs, tr)
	}
	t.mu.Unlock()
	for _, tr := range trs {
		s.add(tr.Stats())
	}
	return s
}

// snapshot lists the trackers (only the live ones if liveOnly) in
// partition order.
func (t *Tasks) snapshot(liveOnly bool) []*Tracker {
	t.mu.Lock()
	defer t.mu.Unlock()
	parts := make([]int32, 0, len(t.byPart))
	for p := range t.byPart {
		if !liveOnly || t.live[p] {
			parts = append(parts, p)
		}
	}
	slices.Sort(parts)
	out := make([]*Tracker, len(parts))
	for i, p := range parts {
		out[i] = t.byPart[p]
	}
	return out
}

func (s *TrackerStats) add(o TrackerStats) {
	s.IndexedTokens += o.IndexedTokens
	s.PendingRevokes += o.PendingRevokes
	s.BufferedEvents += o.BufferedEvents
	s.IndexEvictions += o.IndexEvictions
	s.PendingEvictions += o.PendingEvictions
	s.ReorderOverflows += o.ReorderOverflows
	s.LateEvents += o.LateEvents
	s.RevokesWithoutTarget += o.RevokesWithoutTarget
}
