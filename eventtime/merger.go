// Package eventtime keeps event time per source partition and merges the
// partitions' events into one stream in event-time order, the way stream
// processors do (Kafka Streams' stream time per task and its partition
// group, which always processes the buffered record with the smallest
// timestamp; Flink's per-partition watermarks, the minimum over the inputs,
// with idle inputs excluded).
//
// Partitions are read at different speeds, so on a backlog their event
// times drift apart by minutes to hours. A stateful stage fed in arrival
// order would see the slower partitions' events as late. The Merger holds
// each accepted event until the watermark — the minimum, over the partitions
// being read, of how far each has delivered (the median ts of its batches) —
// reaches it, and releases
// events in ts order. A partition that has delivered nothing for
// IdleTimeout (wall clock) stops holding the watermark back, so a quiet
// partition delays the stream by at most that much.
//
// Memory is bounded two ways. Gate blocks the delivery of a partition that
// runs ahead of the watermark while the buffer is more than half full (Kafka
// Streams pauses such partitions the same way), so the slow partition catches
// up instead of the fast ones piling up. And past MaxBuffered the oldest
// events are released regardless; that is counted, and the events that then
// arrive behind the watermark are counted as late, never dropped: they are
// released at once and the stages downstream judge them against their own
// lateness.
//
// Events wait in one FIFO queue per partition, and the merge releases the
// head of the partition whose head is oldest (Kafka Streams' PartitionGroup
// does the same): no allocation per event and O(partitions) per release. A
// partition's own small disorder passes through as its producer wrote it,
// for the stages downstream to order within their lateness, as analyze
// does on a file.
//
// None of the library's candidates fit: kafka-go has no event-time layer,
// and the stream processors that have one (Kafka Streams, Flink) are JVM
// runtimes, not libraries a Go consumer can call.
package eventtime

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// Partition names one source partition.
type Partition struct {
	Topic     string
	Partition int32
}

// Config tunes the merge.
type Config struct {
	// IdleTimeout: a partition that delivered nothing for this long (wall
	// clock) no longer holds the watermark back, unless it is known to have
	// a backlog (Kafka Streams' enforced processing waits the same way for
	// a partition with lag): then only after LaggingTimeout. Default 5s.
	IdleTimeout time.Duration
	// LaggingTimeout bounds the wait for a partition with a backlog that
	// delivers nothing (a stuck reader or an unreachable leader), so one
	// partition cannot stall the stream for ever. Default 12×IdleTimeout.
	LaggingTimeout time.Duration
	// MaxBuffered bounds the events held; past it the oldest are released
	// early. Default 100,000 (about 60 MB: an event held takes about 600 B).
	MaxBuffered int
	// Discover says the partitions are learned from the events (no Assign:
	// the fleet's analyze stage merges by raw partition, read from each
	// keyed record): nothing is released until IdleTimeout after the first
	// event, so every source is heard before the watermark moves.
	Discover bool
	// MaxAhead, when set, also pauses a partition whose watermark runs
	// more than this far (event time) past the stream's, however few events
	// are held: the fleet's ingest stage publishes to the keyed topic in the
	// order it reads, so this keeps its raw partitions within MaxAhead of
	// each other there, and the analyze members do not meet events later
	// than their lateness when one raw partition is read faster (a backlog).
	MaxAhead time.Duration
	// Lateness is how far behind the released stream an event may arrive
	// and still be taken into account by the stages downstream (they keep
	// their own reorder allowance); an event further behind is counted as
	// late. It is passed on either way.
	Lateness time.Duration
}

func (c *Config) defaults() {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Second
	}
	if c.LaggingTimeout < c.IdleTimeout {
		c.LaggingTimeout = 12 * c.IdleTimeout
	}
	if c.MaxBuffered <= 0 {
		c.MaxBuffered = 100_000
	}
}

// Stats are the merger's counters.
type Stats struct {
	Buffered int   // events held now
	Released int64 // events handed on
	// Reordered counts events that arrived with a ts behind what had
	// already been released: handed on at once, out of order. Late counts
	// those of them more than Lateness behind.
	Reordered, Late int64
	// Forced counts events released before the watermark reached them
	// because the buffer was full.
	Forced int64
	// Watermark is the current watermark (zero before the first event).
	Watermark time.Time
	// Partitions is how many partitions hold the watermark now; Idle how
	// many known partitions are excluded as idle.
	Partitions, Idle int
}

type part struct {
	// mark is the partition's watermark: the highest median ts of the
	// batches it delivered (math.MinInt64 until the first). A median, not
	// the newest ts: one emitter whose clock runs minutes ahead would
	// otherwise drag the watermark with it and make every other event late
	// (the detectors' clock follows the services' median for the same
	// reason).
	mark      int64
	pending   []int64 // ts added since the last Advance
	lastHeard time.Time
	heard     bool // delivered at least one event since it was assigned
	lagging   bool // the broker holds more of it than was delivered
	// q holds the partition's events waiting for the watermark, oldest
	// first from q[head]; a revoked partition is dropped once drained.
	q       []held
	head    int
	revoked bool
}

type held struct {
	ts  int64
	seq uint64
	e   event.Event
	src Partition
	at  time.Time // the message's append time, handed back on release
	// replay: stored history fed back after a restart, to rebuild state
	// in order with the live events; released as such.
	replay bool
}

// Merger merges partitions by event time. Add, Assign, Revoke, Advance and
// Flush belong to one goroutine (the pipeline's processing loop); Gate may
// be called from any.
type Merger struct {
	cfg   Config
	emit  Emit
	parts map[Partition]*part
	held  int // events queued over all partitions
	seq   uint64
	// released is the ts of the newest event handed on: an event behind it
	// is late.
	released  int64
	watermark int64
	firstAdd  time.Time
	stats     Stats
	gate      gate
}

// Emit receives a released event: its partition, the append time Add was
// given, and whether it arrived behind the released stream by more than the
// lateness (late: downstream stages may no longer take it into account).
type Emit func(src Partition, e *event.Event, appended time.Time, late, replay bool)

// New builds a merger; emit receives every event, in ts order except those
// that arrived behind what was already released.
func New(cfg Config, emit Emit) *Merger {
	cfg.defaults()
	m := &Merger{cfg: cfg, emit: emit, parts: map[Partition]*part{}, released: math.MinInt64, watermark: math.MinInt64}
	m.gate.changed = make(chan struct{})
	return m
}

// Assign tells the merger a partition is (still) read by this process, as
// its reader starts: until it delivers or IdleTimeout passes, it holds the
// watermark back (its first events may be older than anything seen).
func (m *Merger) Assign(p Partition, now time.Time) {
	pt := m.part(p, now)
	pt.lastHeard, pt.revoked = now, false
}

// Revoke forgets a partition handed to another process; what it still
// holds is released as the watermark passes it.
func (m *Merger) Revoke(p Partition) {
	if pt := m.parts[p]; pt != nil {
		if pt.head == len(pt.q) {
			delete(m.parts, p)
		} else {
			pt.revoked = true
		}
	}
	m.gate.set(p, false)
}

// Expect makes a partition known before it delivers, as Assign does, but
// leaves one already known as it is: the fleet's analyze stage learns its
// streams from the records (Discover), so a raw partition whose events are
// still on their way from the ingest stage (a backlog upstream, see
// SetLagging) would otherwise not hold the watermark back until its first
// record came, and every event of it older than the watermark by then
// would be late.
func (m *Merger) Expect(p Partition, now time.Time) {
	m.part(p, now)
}

// Heard notes that a partition delivered a message, even one without
// accepted events: it is alive.
func (m *Merger) Heard(p Partition, now time.Time) {
	pt := m.part(p, now)
	pt.lastHeard = now
}

func (m *Merger) part(p Partition, now time.Time) *part {
	pt := m.parts[p]
	if pt == nil {
		pt = &part{mark: math.MinInt64, lastHeard: now}
		m.parts[p] = pt
	}
	return pt
}

// Backlog reports how far behind the partition's end its reader is: a
// partition with a backlog is not idle, however long it is silent (up to
// LaggingTimeout).
func (m *Merger) Backlog(p Partition, lag int64, now time.Time) {
	m.part(p, now).lagging = lag > 0
}

// SetLagging marks each partition fn says has a backlog upstream (the
// fleet's analyze stage: a raw partition with events the ingest group has
// not handed on yet, as when its ingest member died): silent, it still
// holds the watermark back, up to LaggingTimeout.
func (m *Merger) SetLagging(fn func(Partition) bool) {
	for p, pt := range m.parts {
		pt.lagging = fn(p)
	}
}

func (m *Merger) idle(pt *part, now time.Time) bool {
	if pt.revoked {
		return true
	}
	silent := now.Sub(pt.lastHeard)
	if pt.lagging {
		return silent >= m.cfg.LaggingTimeout
	}
	return silent >= m.cfg.IdleTimeout
}

// Add takes one accepted event of partition p (copied), with its message's
// append time. An event behind what was already released is handed on at
// once.
func (m *Merger) Add(p Partition, e *event.Event, appended, now time.Time) {
	ts := e.TS.UnixNano()
	pt := m.part(p, now)
	pt.lastHeard, pt.heard = now, true
	pt.pending = append(pt.pending, ts)
	if m.firstAdd.IsZero() {
		m.firstAdd = now
	}
	if ts < m.released {
		m.stats.Reordered++
		late := ts < m.released-int64(m.cfg.Lateness)
		if late {
			m.stats.Late++
		}
		m.stats.Released++
		m.emit(p, e, appended, late, false)
		return
	}
	m.push(pt, held{ts: ts, e: *e, src: p, at: appended})
	for m.held > m.cfg.MaxBuffered {
		m.stats.Forced++
		m.releaseOldest()
	}
}

func (m *Merger) push(pt *part, h held) {
	m.seq++
	h.seq = m.seq
	if pt.head > 0 && pt.head == len(pt.q) {
		pt.q, pt.head = pt.q[:0], 0
	} else if pt.head > 1024 && pt.head > len(pt.q)/2 {
		n := copy(pt.q, pt.q[pt.head:])
		clear(pt.q[n:])
		pt.q, pt.head = pt.q[:n], 0
	}
	pt.q = append(pt.q, h)
	m.held++
}

// oldest is the partition whose head is oldest (nil when nothing is held).
func (m *Merger) oldest() *part {
	var best *part
	for _, pt := range m.parts {
		if pt.head == len(pt.q) {
			continue
		}
		if h := &pt.q[pt.head]; best == nil || h.ts < best.q[best.head].ts ||
			h.ts == best.q[best.head].ts && h.seq < best.q[best.head].seq {
			best = pt
		}
	}
	return best
}

// releaseOldest releases the oldest head; false when nothing is held.
func (m *Merger) releaseOldest() bool {
	pt := m.oldest()
	if pt == nil {
		return false
	}
	m.releaseHead(pt)
	return true
}

func (m *Merger) releaseHead(pt *part) {
	h := &pt.q[pt.head]
	pt.head++
	m.held--
	m.release(h)
	src := h.src
	*h = held{} // drop the event's references
	if pt.revoked && pt.head == len(pt.q) {
		delete(m.parts, src)
	}
}

// AddReplay takes one stored event of partition p, fed back to rebuild
// state after a restart: it counts for the partition's watermark like a
// delivered one (it is the partition's history) and is released marked
// replay. It must come before the partition's live events.
func (m *Merger) AddReplay(p Partition, e *event.Event, now time.Time) {
	ts := e.TS.UnixNano()
	pt := m.part(p, now)
	pt.pending = append(pt.pending, ts)
	if ts < m.released {
		m.stats.Released++
		m.emit(p, e, time.Time{}, false, true)
		return
	}
	m.push(pt, held{ts: ts, e: *e, src: p, replay: true})
}

// Advance recomputes the watermark at wall time now and releases every
// event it has reached; it also updates the gate. Call it after each batch
// of Adds and on a timer (so idle partitions are noticed).
func (m *Merger) Advance(now time.Time) {
	wm, active, idle := int64(math.MaxInt64), 0, 0
	for _, pt := range m.parts {
		if n := len(pt.pending); n > 0 {
			slices.Sort(pt.pending)
			pt.mark = max(pt.mark, pt.pending[(n-1)/2])
			pt.pending = pt.pending[:0]
		}
		if m.idle(pt, now) {
			idle++
			continue
		}
		active++
		if pt.mark < wm {
			wm = pt.mark
		}
	}
	m.stats.Partitions, m.stats.Idle = active, idle
	if m.cfg.Discover && (m.firstAdd.IsZero() || now.Sub(m.firstAdd) < m.cfg.IdleTimeout) {
		m.updateGate(now)
		return // warming up: the sources not heard yet may hold older events
	}
	if active == 0 {
		// Every partition is idle: what is held is all there is.
		wm = math.MinInt64
		if m.held > 0 {
			wm = m.newest()
		}
	}
	if wm > m.watermark {
		m.watermark = wm
	}
	for {
		pt := m.oldest()
		if pt == nil || pt.q[pt.head].ts > m.watermark {
			break
		}
		m.releaseHead(pt)
	}
	m.updateGate(now)
}

func (m *Merger) newest() int64 {
	n := int64(math.MinInt64)
	for _, pt := range m.parts {
		for i := pt.head; i < len(pt.q); i++ {
			n = max(n, pt.q[i].ts)
		}
	}
	return n
}

func (m *Merger) release(h *held) {
	if h.ts > m.released {
		m.released = h.ts
	}
	m.stats.Released++
	m.emit(h.src, &h.e, h.at, false, h.replay)
}

// Flush releases everything held, in ts order (end of input, shutdown, or a
// partition handover).
func (m *Merger) Flush() {
	for m.releaseOldest() {
	}
	if m.released > m.watermark {
		m.watermark = m.released
	}
	m.gate.clear()
}

// Watermark is the event time the merged stream has reached: every event
// released since is at or before it, except the late ones. Zero before the
// first event.
func (m *Merger) Watermark() time.Time {
	w := max(m.watermark, m.released)
	if w == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, w).UTC()
}

// Stats returns the counters.
func (m *Merger) Stats() Stats {
	s := m.stats
	s.Buffered = m.held
	s.Watermark = m.Watermark()
	return s
}

// updateGate blocks the partitions running ahead of the watermark while the
// buffer is over half full, and frees every partition otherwise.
func (m *Merger) updateGate(now time.Time) {
	full := m.held > m.cfg.MaxBuffered/2
	if !full && (m.cfg.MaxAhead <= 0 || m.watermark == math.MinInt64) {
		m.gate.clear()
		return
	}
	for p, pt := range m.parts {
		ahead := pt.heard && !m.idle(pt, now) &&
			((full && pt.mark > m.watermark) || (m.cfg.MaxAhead > 0 && m.watermark != math.MinInt64 && pt.mark > m.watermark+int64(m.cfg.MaxAhead)))
		m.gate.set(p, ahead)
	}
}

// Gate returns nil when partition p may deliver now, or a channel that is
// closed when that should be asked again (the pipeline's Deliver waits on
// it, which is the per-partition back-pressure).
func (m *Merger) Gate(p Partition) <-chan struct{} { return m.gate.wait(p) }

// gate is the part of the merger other goroutines read.
type gate struct {
	mu      sync.Mutex
	blocked map[Partition]bool
	changed chan struct{}
}

func (g *gate) set(p Partition, b bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.blocked[p] == b {
		return
	}
	if g.blocked == nil {
		g.blocked = map[Partition]bool{}
	}
	if b {
		g.blocked[p] = true
	} else {
		delete(g.blocked, p)
		close(g.changed)
		g.changed = make(chan struct{})
	}
}

func (g *gate) clear() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.blocked) == 0 {
		return
	}
	clear(g.blocked)
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *gate) wait(p Partition) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.blocked[p] {
		return nil
	}
	return g.changed
}
