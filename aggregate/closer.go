// Package aggregate closes per-minute partial aggregates from several
// sources into one view, for the state no key of the keyed topic owns (per
// service, kid, client or subject: docs/fleet.md, "Aggregates").
//
// Each analyze member folds the events of each keyed partition it owns into
// one partial per minute (counts and samples, never the events themselves)
// and sends it to the one member that owns the aggregate. That owner merges
// the partials of a minute and hands the merged minute to the detectors, in
// minute order, once every source has reported it, or once it has waited
// long enough for a source that never does.
//
// A partial's identity is (source, minute), where the source is the keyed
// partition, not the member: a partition's partial is the same whichever
// member folded it, so a member that took a partition over and folded its
// history again sends a copy, not a second contribution. Seq (the events
// folded in) tells a copy (same or lower) from a fuller partial of the same
// minute (higher: it replaces the other while the minute is open).
//
// Kafka Streams does this with a windowed aggregation after a repartition;
// there is no such library for Go, and the closing rule (every source, in
// minute order) is what makes a fleet's answer equal one process's.
package aggregate

import (
	"slices"
	"time"
)

// Partial is what one source saw of the aggregates in one minute.
type Partial[B any] struct {
	Source int32  `json:"source"` // the keyed partition (0 in one process)
	Dest   int32  `json:"dest"`   // the keyed partition whose owner merges it (0 in one process)
	Minute int64  `json:"minute"` // Unix minutes
	Seq    uint64 `json:"seq"`    // events folded in: a higher one supersedes
	Member string `json:"member,omitempty"`
	Body   B      `json:"body"`
	// Replayed marks a partial read again while its reader rebuilt its
	// state (not sent on the wire): what it closes is not reported again.
	Replayed bool `json:"-"`
}

// Closed is one minute, merged: every source's partial, by source.
type Closed[B any] struct {
	Minute int64
	Parts  []Partial[B]
	// Missing counts the sources that had not reported when the wait ran
	// out (0 when the minute closed complete).
	Missing int
	// Replayed: every partial was read again while rebuilding.
	Replayed bool
}

// Outcome of adding one partial.
type Outcome int

const (
	Merged    Outcome = iota // new: part of its minute
	Duplicate                // a copy (same or lower seq) of one already held: changes nothing
	Late                     // its minute had closed without it: counted, the caller decides
)

// Closer holds the open minutes of one aggregate owner. Not safe for
// concurrent use.
type Closer[B any] struct {
	sources int
	wait    time.Duration
	open    map[int64]*minute[B]
	closed  int64 // the latest closed minute (0: none yet)
	// reported is each source's latest minute: a source that reported a
	// later minute has nothing more to say about an earlier one (its
	// member started after it, or had sent it).
	reported map[int32]int64
	// seqs of the partials of closed minutes, kept retain minutes, so a copy
	// read again later is told from a late partial.
	seen   map[srcMinute]uint64
	retain int64

	Duplicates, LateParts, Incomplete uint64
}

type srcMinute struct {
	src    int32
	minute int64
}

type minute[B any] struct {
	parts map[int32]Partial[B]
	since time.Time // wall clock: when its first partial arrived
}

// NewCloser is for sources sources (the keyed topic's partitions, or 1);
// a minute that lacks a source's partial for wait (wall clock) closes
// without it. Copies are recognised for retain minutes after their minute
// closed (at least the rebuild window, so a member rebuilding sends copies,
// not late partials).
func NewCloser[B any](sources int, wait time.Duration, retain time.Duration) *Closer[B] {
	return &Closer[B]{sources: max(sources, 1), wait: wait, open: map[int64]*minute[B]{}, reported: map[int32]int64{},
		seen: map[srcMinute]uint64{}, retain: max(int64(retain/time.Minute), 1)}
}

// Add takes one partial, received at now (wall clock).
func (c *Closer[B]) Add(p Partial[B], now time.Time) Outcome {
	k := srcMinute{p.Source, p.Minute}
	c.reported[p.Source] = max(c.reported[p.Source], p.Minute)
	if p.Minute <= c.closed {
		if seq, ok := c.seen[k]; ok && p.Seq <= seq {
			c.Duplicates++
			return Duplicate
		}
		c.LateParts++
		c.seen[k] = p.Seq
		return Late
	}
	m := c.open[p.Minute]
	if m == nil {
		m = &minute[B]{parts: map[int32]Partial[B]{}, since: now}
		c.open[p.Minute] = m
	}
	if old, ok := m.parts[p.Source]; ok {
		if p.Seq <= old.Seq {
			c.Duplicates++
			return Duplicate
		}
		// A fuller partial of the same minute: it was folded from more of
		// the partition's events (a member that rebuilt more than the last
		// one had read). The replayed mark stays only if both were replays.
		p.Replayed = p.Replayed && old.Replayed
	}
	m.parts[p.Source] = p
	return Merged
}

// Ready closes the minutes that can close at now, oldest first: a minute
// closes when every source has reported it (or a later minute), or when it
// has waited long enough, and never before an earlier open minute.
func (c *Closer[B]) Ready(now time.Time) []Closed[B] {
	return c.close(func(k int64, m *minute[B]) bool {
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

// Flush closes every open minute (the input ended).
func (c *Closer[B]) Flush() []Closed[B] { return c.close(func(int64, *minute[B]) bool { return true }) }

// Pending counts the open minutes.
func (c *Closer[B]) Pending() int { return len(c.open) }

// Drop forgets every open minute (this member no longer owns the
// aggregates: their new owner reads the partials again).
func (c *Closer[B]) Drop() {
	clear(c.open)
}

func (c *Closer[B]) close(ready func(int64, *minute[B]) bool) []Closed[B] {
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
		cl := Closed[B]{Minute: k, Missing: c.missing(k), Replayed: true}
		for _, p := range m.parts {
			cl.Parts = append(cl.Parts, p)
			cl.Replayed = cl.Replayed && p.Replayed
			c.seen[srcMinute{p.Source, k}] = p.Seq
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
		if sm.minute < c.closed-c.retain {
			delete(c.seen, sm)
		}
	}
	return out
}

// missing counts the sources that have reported neither minute k nor a
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
