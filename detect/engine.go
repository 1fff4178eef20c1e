package detect

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwatch/tokenwatch/aggregate"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// Engine runs every detector over one stream. It is safe for concurrent use
// (one mutex: the detectors share per-service and per-kid state, so events
// of one partition cannot be judged alone).
type Engine struct {
	mu  sync.Mutex
	cfg Config
	// The event-time clock (ms). Not simply the latest ts: one service whose
	// clock runs minutes ahead would drag every expiry, quiet period and
	// detected_at with it. So the clock follows the median of the services'
	// latest ts (recomputed each tick), and an event moves it at most
	// clockSlackMS past that median.
	clock     int64
	median    int64   // robust clock at the last tick
	raw       int64   // the latest ts of any event
	svcLatest []int64 // per interned service: its latest ts
	nextTick  int64
	started   bool
	observed  bool  // events arrived since the last Advance
	late      int64 // events behind the clock by more than AllowedLateness

	services *interner
	book     *book
	replay   *replayDetector
	refresh  *refreshDetector
	rate     *rateDetector
	rotation *rotationDetector
	skew     *skewDetector
	revoke   *revocationDetector
	audience *audienceDetector

	tokens   *table[client]
	families *table[familyState]
	clients  rateTables
	subjects rateTables
	kids     *table[kidState]
	probes   *table[probe]
	m        *metrics

	agg aggregates
	// muted drops what the book sends while a slice of replayed partials
	// is judged (its findings were reported the first time).
	muted bool
	// history: Replay in a fleet (folded by the events' own slices).
	history bool
}

// tickMS is how often (event time) the engine expires state, closes quiet
// findings and sends throttled updates.
const tickMS = 1000

// clockSlackMS is how far one event may move the clock past the services'
// median: enough for the clock to follow a healthy stream between ticks.
const clockSlackMS = 2 * tickMS

// activeWindowMS: services silent for longer do not vote on the clock.
const activeWindowMS = 10 * 60 * 1000

// New builds an engine. reg may be nil (no metrics exported, e.g. in tests
// or analyze); sink receives every finding open, update and close.
func New(cfg Config, sink Sink, reg prometheus.Registerer) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	if sink == nil {
		return nil, fmt.Errorf("detect: a sink is required")
	}
	nat, err := parseNATRanges(cfg.NATEgressRanges)
	if err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, m: m, services: newInterner(cfg.MaxServices)}
	e.book = newBook(&e.cfg, mutable{sink, &e.muted}, m, e.services, func() int64 { return e.clock })
	e.agg = aggregates{fold: folding{open: map[srcSlice]*openSlice{}}, closers: map[int32]*aggregate.Closer[Aggregates]{},
		cfg: AggregateConfig{Sources: 1, Retain: time.Hour}}
	e.tokens = newStateTable[client](m, stateToken, cfg.MaxTokens)
	e.families = newStateTable[familyState](m, stateFamily, cfg.MaxFamilies)
	e.clients = rateTables{newStateTable[quietRate](m, stateClient, cfg.MaxRateSeries), newStateTable[rateSeries](m, stateClientBusy, cfg.MaxRateSeries)}
	e.subjects = rateTables{newStateTable[quietRate](m, stateSubject, cfg.MaxRateSeries), newStateTable[rateSeries](m, stateSubjectBusy, cfg.MaxRateSeries)}
	e.kids = newStateTable[kidState](m, stateKid, cfg.MaxKids)
	e.probes = newStateTable[probe](m, stateProbe, cfg.MaxAudienceProbes)

	e.replay = &replayDetector{cfg: &e.cfg, book: e.book, services: e.services, nat: nat, tokens: e.tokens}
	e.refresh = &refreshDetector{cfg: &e.cfg, book: e.book, services: e.services, nat: nat, families: e.families}
	e.rate = &rateDetector{cfg: &e.cfg, book: e.book, clients: e.clients, subjects: e.subjects}
	e.rotation = &rotationDetector{cfg: &e.cfg, book: e.book, services: e.services, kids: e.kids, failures: map[uint16]*failureBuckets{}}
	e.skew = &skewDetector{cfg: &e.cfg, book: e.book, services: e.services, perSvc: map[uint16]*skewState{}}
	e.revoke = &revocationDetector{cfg: &e.cfg, book: e.book}
	e.audience = &audienceDetector{cfg: &e.cfg, book: e.book, probes: e.probes}
	return e, nil
}

// Observe runs one event through every detector. Findings it opens reach the
// sink before Observe returns. Events may arrive out of order within
// Config.AllowedLateness.
func (en *Engine) Observe(e *event.Event) {
	en.mu.Lock()
	defer en.mu.Unlock()
	en.observe(e)
}

// Replay runs one event of history through the detectors to rebuild their
// state (the caller mutes what they report). In a fleet, history folds into
// this member's aggregates by its own minute, and only where that minute
// is still open here: the member that read it first published the minutes
// it had closed, and left the others (it publishes no open minute when it
// stops), so the new owner of its partitions folds them whole.
func (en *Engine) Replay(e *event.Event) {
	en.mu.Lock()
	defer en.mu.Unlock()
	en.history = en.agg.publish != nil
	en.observe(e)
	en.history = false
}

func (en *Engine) observe(e *event.Event) {
	if e == nil || e.TS.IsZero() {
		return
	}
	ms := e.TS.UnixMilli()
	en.observed = true
	if en.started && ms < en.clock-en.cfg.AllowedLateness.Milliseconds() {
		// Still judged (state outlives its expiry by the lateness, so
		// little is lost), but counted: windows already closed missed it.
		en.late++
	}
	en.advance(ms, int(en.services.id(e.Service)))
	// The per-service detectors read slices of the aggregates (folded here,
	// judged when the slice closes: detect/aggregates.go), by the clock's
	// slice; history replayed in a fleet by its own.
	slice, src := floorDiv(en.clock, sliceMS), en.source(e)
	if en.history {
		slice = floorDiv(ms, sliceMS)
	}
	f := &en.agg.fold
	switch e.Kind {
	case event.KindValidate, event.KindIntrospect:
		en.replay.observe(e, ms)
		en.rotation.observeValidation(e, ms, slice, src, f)
		if e.Kind == event.KindValidate {
			en.skew.observe(e, ms, slice, src, f)
			en.audience.observe(e, ms)
		}
	case event.KindRefresh:
		en.refresh.observe(e, ms)
		// By the event's own slice: the clock moves in steps, and folding
		// by it would pile one client's steady refreshes into one minute
		// now and then (a false rate anomaly).
		en.rate.observe(e, ms, floorDiv(ms, sliceMS), src, f)
	case event.KindIssue:
		en.refresh.observeIssue(e, ms)
		en.rotation.observeIssue(e, ms, slice, src, f)
	case event.KindKeyRotate:
		en.rotation.observeRotate(e, ms, slice, src, f)
	}
}

// LateEvents counts the events that arrived behind the engine's clock by
// more than Config.AllowedLateness.
func (en *Engine) LateEvents() int64 {
	en.mu.Lock()
	defer en.mu.Unlock()
	return en.late
}

// ObserveRevocation takes one revoke's propagation result (M4, from sli).
func (en *Engine) ObserveRevocation(r Revocation) {
	en.mu.Lock()
	defer en.mu.Unlock()
	en.revoke.observe(r)
}

// Advance moves the event-time clock forward (it never goes back): state
// past its expiry is dropped, quiet findings are closed and pending updates
// are sent. When no event arrived since the last call the input is idle and
// now is taken as is, so findings still close; while events flow, now is a
// hint held to the services' median like any event's ts.
func (en *Engine) Advance(now time.Time) {
	en.mu.Lock()
	defer en.mu.Unlock()
	ms := now.UnixMilli()
	if !en.observed && en.started && ms > en.clock {
		en.clock, en.median = ms, max(en.median, ms)
		en.raw = max(en.raw, ms)
		en.tick(false)
		en.nextTick = ms + tickMS
		return
	}
	en.observed = false
	en.advance(ms, -1)
}

func (en *Engine) advance(ms int64, svc int) {
	if svc >= 0 {
		for svc >= len(en.svcLatest) {
			en.svcLatest = append(en.svcLatest, 0)
		}
		en.svcLatest[svc] = max(en.svcLatest[svc], ms)
	}
	if !en.started {
		en.started, en.clock, en.median, en.raw, en.nextTick = true, ms, ms, ms, ms+tickMS
		return
	}
	en.raw = max(en.raw, ms)
	if c := min(ms, en.median+clockSlackMS); c > en.clock {
		en.clock = c
	}
	if en.raw >= en.nextTick {
		en.median = max(en.median, en.servicesMedian())
		en.clock = max(en.clock, en.median)
		en.tick(false)
		en.nextTick = en.raw + tickMS
	}
}

// servicesMedian is the lower median of the latest ts of the services heard
// from lately: a service whose clock runs ahead is outvoted.
func (en *Engine) servicesMedian() int64 {
	var buf [64]int64
	marks := buf[:0]
	for _, t := range en.svcLatest {
		if t != 0 && t >= en.clock-activeWindowMS {
			marks = append(marks, t)
		}
	}
	if len(marks) == 0 {
		return en.clock
	}
	slices.Sort(marks)
	return marks[(len(marks)-1)/2]
}

func (en *Engine) tick(all bool) {
	// State lives AllowedLateness past its expiry (added when stored), so
	// late events still find it; expire against the clock itself.
	now := en.clock
	// A slice closes once the clock is the lateness past it: the refresh
	// rate folds by the events' own slice, which late events may still
	// reach until then.
	en.closeSlices(floorDiv(now-en.cfg.AllowedLateness.Milliseconds(), sliceMS))
	en.tokens.expire(now)
	en.families.expire(now)
	en.kids.expire(now)
	en.probes.expire(now)
	for _, rt := range []rateTables{en.clients, en.subjects} {
		rt.quiet.expire(now)
		rt.busy.expire(now)
	}
	en.book.tick(now, all)
	for _, t := range []interface{ report() }{en.tokens, en.families, en.clients.quiet, en.clients.busy, en.subjects.quiet, en.subjects.busy, en.kids, en.probes} {
		t.report()
	}
	en.m.entries.WithLabelValues(stateService).Set(float64(len(en.services.names) - 2))
}

// Flush ends the input: pending updates are sent, and every finding, open
// and closed, is returned sorted by first seen, kind and key. Findings folded
// into a stronger one are left out (their evidence is on it).
func (en *Engine) Flush() []finding.Finding {
	en.mu.Lock()
	defer en.mu.Unlock()
	en.flushSlices()
	en.tick(true)
	return en.book.all()
}
