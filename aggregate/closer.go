// Package aggregate closes partial aggregates of time slices (detect's are
// 10 s) from several sources into one view, for the state no key of the keyed topic owns (per
// service, kid, client or subject: docs/fleet.md, "Aggregates").
//
// Each analyze member folds the events of each keyed partition it owns into
// one partial per slice (counts and samples, never the events themselves)
// and sends it to the one member that owns the aggregate. That owner merges
// the partials of a slice and hands the merged slice to the detectors, in
// slice order, once every source has reported it, or once it has waited
// long enough for a source that never does.
//
// A partial's identity is (source, slice), where the source is the keyed
// partition, not the member: a partition's partial is the same whichever
// member folded it, so a member that took a partition over and folded its
// history again sends a copy, not a second contribution. Seq (the events
// folded in) tells a copy (same or lower) from a fuller partial of the same
// slice (higher: it replaces the other while the slice is open).
//
// Kafka Streams does this with a windowed aggregation after a repartition;
// there is no such library for Go, and the closing rule (every source, in
// slice order) is what makes a fleet's answer equal one process's.
package aggregate

import (
	"slices"
	"time"
)

// Partial is what one source saw of the aggregates in one slice.
type Partial[B any] struct {
	Source int32  `json:"source"` // the keyed partition (0 in one process)
	Dest   int32  `json:"dest"`   // the keyed partition whose owner merges it (0 in one process)
	Slice  int64  `json:"slice"`  // Unix time / the slice length (detect: 10 s)
	Seq    uint64 `json:"seq"`    // events folded in: a higher one supersedes
	Member string `json:"member,omitempty"`
	Body   B      `json:"body"`
	// Replayed marks a partial read again while its reader rebuilt its
	// state (not sent on the wire): what it closes is not reported again.
	Replayed bool `json:"-"`
}

// Closed is one slice, merged: every source's partial, by source.
type Closed[B any] struct {
	Slice int64
	Parts []Partial[B]
	// Missing counts the sources that had not reported when the wait ran
	// out (0 when the slice closed complete).
	Missing int
	// Replayed: every partial was read again while rebuilding.
	Replayed bool
}

// Outcome of adding one partial.
type Outcome int

const (
	Merged    Outcome = iota // new: part of its slice
	Duplicate                // a copy (same or lower seq) of one already held: changes nothing
	Late                     // its slice had closed without it: counted, the caller decides
)

// Closer holds the open slices of one aggregate owner. Not safe for
// concurrent use.
type Closer[B any] struct {
	sources int
	wait    time.Duration
	open    map[int64]*slice[B]
	closed  int64 // the latest closed slice (0: none yet)
	// reported is each source's latest slice: a source that reported a
	// later slice has nothing more to say about an earlier one (its
	// member started after it, or had sent it).
	reported map[int32]int64
	// seqs of the partials of closed slices, kept retain slices, so a copy
	// read again later is told from a late partial.
	seen   map[srcSlice]uint64
	retain int64

	Duplicates, LateParts, Incomplete uint64
}

type srcSlice struct {
	src   int32
	slice int64
}

type slice[B any] struct {
	parts map[int32]Partial[B]
	since time.Time // wall clock: when its first partial arrived
}

// NewCloser is for sources sources (the keyed topic's partitions, or 1);
// a slice that lacks a source's partial for wait (wall clock) closes
// without it. Copies are recognised for retain slices after their slice
// closed (at least the rebuild window, so a member rebuilding sends copies,
// not late partials).
func NewCloser[B any](sources int, wait time.Duration, retain int64) *Closer[B] {
	return &Closer[B]{sources: max(sources, 1), wait: wait, open: map[int64]*slice[B]{}, reported: map[int32]int64{},
		seen: map[srcSlice]uint64{}, retain: max(retain, 1)}
}

// Add takes one partial, received at now (wall clock).
func (c *Closer[B]) Add(p Partial[B], now time.Time) Outcome {
	k := srcSlice{p.Source, p.Slice}
	c.reported[p.Source] = max(c.reported[p.Source], p.Slice)
	if p.Slice <= c.closed {
		if seq, ok := c.seen[k]; ok && p.Seq <= seq {
			c.Duplicates++
			return Duplicate
		}
		c.LateParts++
		c.seen[k] = p.Seq
		return Late
	}
	m := c.open[p.Slice]
	if m == nil {
		m = &slice[B]{parts: map[int32]Partial[B]{}, since: now}
		c.open[p.Slice] = m
	}
	if old, ok := m.parts[p.Source]; ok {
		if p.Seq <= old.Seq {
			c.Duplicates++
			return Duplicate
		}
		// A fuller partial of the same slice: it was folded from more of
		// the partition's events (a member that rebuilt more than the last
		// one had read). The replayed mark stays only if both were replays.
		p.Replayed = p.Replayed && old.Replayed
	}
	m.parts[p.Source] = p
	return Merged
}

// Ready closes the slices that can close at now, oldest first: a slice
// closes when every source has reported it (or a later slice), or when it
// has waited long enough, and never before an earlier open slice.
func (c *Closer[B]) Ready(now time.Time) []Closed[B] {
	return c.close(func(k int64, m *slice[B]) bool {
		return c.everySourcePast(k) || now.Sub(m.since) >= c.wait
	})
}

func (c *Closer[B]) everySourcePast(k int64) bool {
	if len(c.reported) < c.sources {
		return false
	}
	for _, r := range c.reported {
		if r < k {
			return false
		}
	}
	return true
}

// Flush closes every open slice (the input ended).
func (c *Closer[B]) Flush() []Closed[B] { return c.close(func(int64, *slice[B]) bool { return true }) }

// Pending counts the open slices.
func (c *Closer[B]) Pending() int { return len(c.open) }

// Drop forgets every open slice (this member no longer owns the
// aggregates: their new owner reads the partials again).
func (c *Closer[B]) Drop() {
	clear(c.open)
}

func (c *Closer[B]) close(ready func(int64, *slice[B]) bool) []Closed[B] {
	if len(c.open) == 0 {
		return nil
	}
	keys := make([]int64, 0, len(c.open))
	for k := range c.open {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []Closed[B]
	for _, k := range keys {
		m := c.open[k]
		if !ready(k, m) {
			break
		}
		cl := Closed[B]{Slice: k, Missing: c.missing(k), Replayed: true}
		for _, p := range m.parts {
			cl.Parts = append(cl.Parts, p)
			cl.Replayed = cl.Replayed && p.Replayed
			c.seen[srcSlice{p.Source, k}] = p.Seq
		}
		slices.SortFunc(cl.Parts, func(a, b Partial[B]) int { return int(a.Source - b.Source) })
		if cl.Missing > 0 {
			c.Incomplete++
		}
		out = append(out, cl)
		delete(c.open, k)
		c.closed = k
	}
	for sm := range c.seen {
		if sm.slice < c.closed-c.retain {
			delete(c.seen, sm)
		}
	}
	return out
}

// missing counts the sources that have reported neither slice k nor a
// later one.
func (c *Closer[B]) missing(k int64) int {
	n := c.sources - len(c.reported)
	for _, r := range c.reported {
		if r < k {
			n++
		}
	}
	return max(n, 0)
}
