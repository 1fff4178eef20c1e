package detect

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/tokenwatch/tokenwatch/aggregate"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// Aggregates is one 10-second slice (sliceMS) of one source's events, as the detectors whose
// state no key owns read them (per service: the clock-skew detector). In one
// process the engine folds every event into one source's partials and
// merges them itself; in a fleet each analyze member folds the keyed
// partitions it owns, and the member owning the aggregates merges every
// partition's partials (docs/fleet.md, "Aggregates"). Either way the
// detectors judge closed slices, so a fleet finds what one process finds.
type Aggregates struct {
	Skew     []SkewService  `json:"skew,omitempty"`
	Rotation *RotationSlice `json:"rotation,omitempty"`
	Rate     []RateCount    `json:"rate,omitempty"`
}

// RateCount is one client's or subject's refreshes in one slice, with the
// service, issuer and region of its latest (a finding names them).
type RateCount struct {
	Scope   string `json:"scope"` // client or subject
	ID      string `json:"id"`
	Count   uint32 `json:"count"`
	Last    int64  `json:"last"` // Unix ms
	Service string `json:"service,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
	Region  string `json:"region,omitempty"`
}

type rateKey struct{ scope, id string }

// RotationSlice is one slice of what the key-rotation detector reads:
// the kids announced (by an issue, a key_rotate or a successful
// validation: real keys), the rotations, and the signature failures
// grouped by service, kid, issuer, region, outcome and 10-second bucket.
type RotationSlice struct {
	Announced []KidSeen      `json:"announced,omitempty"`
	Rotations []RotationSeen `json:"rotations,omitempty"`
	Failures  []FailureGroup `json:"failures,omitempty"`
}

// KidSeen is a kid announced, first at TS (Unix ms) in its slice.
type KidSeen struct {
	Kid string `json:"kid"`
	TS  int64  `json:"ts"`
}

// RotationSeen is one key_rotate event.
type RotationSeen struct {
	TS      int64  `json:"ts"`
	Kid     string `json:"kid"`
	PrevKid string `json:"prev_kid,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
	Service string `json:"service,omitempty"`
}

// FailureGroup counts the bad_signature or unknown_kid failures of one
// service, kid, issuer and region in one 10-second bucket.
type FailureGroup struct {
	Service string        `json:"service"`
	Kid     string        `json:"kid,omitempty"`
	Issuer  string        `json:"issuer,omitempty"`
	Region  string        `json:"region,omitempty"`
	Outcome event.Outcome `json:"outcome"`
	Bucket  int64         `json:"bucket"` // ts / 10 s
	Count   uint32        `json:"count"`
	First   int64         `json:"first"` // Unix ms
	Last    int64         `json:"last"`
}

type failureKey struct {
	service, kid, issuer, region string
	outcome                      event.Outcome
	bucket                       int64
}

func (g *FailureGroup) key() failureKey {
	return failureKey{g.Service, g.Kid, g.Issuer, g.Region, g.Outcome, g.Bucket}
}

func (k failureKey) String() string {
	return k.service + "\x00" + k.kid + "\x00" + k.issuer + "\x00" + k.region + "\x00" + string(k.outcome)
}

// Partial is one source's Aggregates for one slice, for one dest.
type Partial = aggregate.Partial[Aggregates]

// SkewService is one service's validations in one slice, for the clock-skew
// detector: how many, and the near-boundary rejections among them with the
// latest skewSamples of their offsets.
type SkewService struct {
	Service     string       `json:"service"`
	Validations uint32       `json:"validations"`
	Near        uint32       `json:"near"`
	Expired     uint32       `json:"expired,omitempty"`
	NotYetValid uint32       `json:"not_yet_valid,omitempty"`
	Samples     []SkewSample `json:"samples,omitempty"` // the latest skewSamples, by ts
}

// SkewSample is one near-boundary rejection: when, the offset it implies
// (seconds), and where.
type SkewSample struct {
	TS     int64   `json:"ts"` // Unix ms
	Offset float32 `json:"offset_s"`
	Region string  `json:"region,omitempty"`
	Issuer string  `json:"issuer,omitempty"`
}

// folding builds the partials of the slices not yet closed at this member,
// per source.
type folding struct {
	open map[srcSlice]*openSlice
	// next is the first slice not yet closed here (0: none seen yet).
	next int64
	// sources this member folds: the keyed partitions it owns in a fleet
	// (none until assigned); nil in one process, whose only source is 0.
	sources []int32
	// dests: where the partials go. The per-service state (clock skew, key
	// rotation) to global; each client's and subject's rate to destOf
	// its key, so that state spreads over the owners. One process: one
	// dest, 0.
	dests  int
	global int32
	destOf func(scope, id string) int32
	names  map[string]string // see intern
	// the slice the last event fell in (closeUpTo forgets it)
	lastKey srcSlice
	last    *openSlice
}

type srcSlice struct {
	src   int32
	slice int64
}

type openSlice struct {
	seq       uint64
	skew      map[string]*SkewService
	announced map[string]int64
	rotations []RotationSeen
	failures  map[failureKey]*FailureGroup
	rate      map[rateKey]*RateCount
}

func (f *folding) slice(src int32, m int64) *openSlice {
	k := srcSlice{src, m}
	if f.last != nil && f.lastKey == k {
		return f.last // most events fall in the slice of the one before
	}
	om := f.open[k]
	if om == nil {
		om = &openSlice{skew: map[string]*SkewService{}}
		f.open[k] = om
	}
	f.lastKey, f.last = k, om
	return om
}

// closed says whether slice m has closed here (a late event's).
func (f *folding) closed(m int64) bool { return f.next != 0 && m < f.next }

// foldRate counts one refresh for its client's and its subject's rate.
func (f *folding) foldRate(src int32, m int64, scope, id string, e *event.Event, ms int64) {
	if f.closed(m) {
		return
	}
	om := f.slice(src, m)
	if om.rate == nil {
		om.rate = map[rateKey]*RateCount{}
	}
	k := rateKey{scope, id}
	c := om.rate[k]
	if c == nil {
		k.id = strings.Clone(id)
		c = &RateCount{Scope: scope, ID: k.id}
		om.rate[k] = c
	}
	c.Count++
	if ms >= c.Last {
		c.Last = ms
		c.Service, c.Issuer, c.Region = f.intern(e.Service), f.intern(e.Issuer), f.intern(e.Region)
	}
}

// intern keeps one copy of the few service, issuer and region names the
// open slices repeat in every entry.
func (f *folding) intern(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := f.names[s]; ok {
		return v
	}
	if f.names == nil || len(f.names) >= 4096 {
		f.names = map[string]string{}
	}
	v := strings.Clone(s)
	f.names[v] = v
	return v
}

// foldAnnounce notes a kid shown to be a real key.
func (f *folding) foldAnnounce(src int32, m int64, kid string, ms int64) {
	if kid == "" || f.closed(m) {
		return
	}
	om := f.slice(src, m)
	om.seq++
	if om.announced == nil {
		om.announced = map[string]int64{}
	}
	if first, ok := om.announced[kid]; !ok || ms < first {
		om.announced[strings.Clone(kid)] = ms
	}
}

func (f *folding) foldRotation(src int32, m int64, r RotationSeen) {
	if f.closed(m) {
		return
	}
	om := f.slice(src, m)
	om.seq++
	r.Kid, r.PrevKid, r.Issuer, r.Service = strings.Clone(r.Kid), strings.Clone(r.PrevKid), strings.Clone(r.Issuer), strings.Clone(r.Service)
	om.rotations = append(om.rotations, r)
}

func (f *folding) foldFailure(src int32, m int64, e *event.Event, ms int64) {
	if f.closed(m) {
		return
	}
	om := f.slice(src, m)
	om.seq++
	k := failureKey{e.Service, e.Kid, e.Issuer, e.Region, e.Outcome, ms / (failureBucketS * 1000)}
	if om.failures == nil {
		om.failures = map[failureKey]*FailureGroup{}
	}
	g := om.failures[k]
	if g == nil {
		k = failureKey{strings.Clone(e.Service), strings.Clone(e.Kid), strings.Clone(e.Issuer), strings.Clone(e.Region), e.Outcome, k.bucket}
		g = &FailureGroup{Service: k.service, Kid: k.kid, Issuer: k.issuer, Region: k.region, Outcome: e.Outcome, Bucket: k.bucket, First: ms, Last: ms}
		om.failures[k] = g
	}
	g.Count++
	g.First, g.Last = min(g.First, ms), max(g.Last, ms)
}

// foldSkew counts one validation for the clock-skew detector.
func (f *folding) foldSkew(src int32, m int64, e *event.Event, ms int64, offset float64, near bool) {
	if f.closed(m) {
		return // its slice closed here: late (counted by the engine)
	}
	om := f.slice(src, m)
	om.seq++
	s := om.skew[e.Service]
	if s == nil {
		s = &SkewService{Service: strings.Clone(e.Service)}
		om.skew[s.Service] = s
	}
	s.Validations++
	if !near {
		return
	}
	s.Near++
	if offset > 0 {
		s.Expired++
	} else {
		s.NotYetValid++
	}
	s.Samples = append(s.Samples, SkewSample{TS: ms, Offset: float32(offset), Region: strings.Clone(e.Region), Issuer: strings.Clone(e.Issuer)})
	if len(s.Samples) > 2*skewSamples {
		s.trim()
	}
}

// trim keeps the latest skewSamples samples (by ts, then offset: the same
// whatever order the events came in).
func (s *SkewService) trim() {
	slices.SortFunc(s.Samples, func(a, b SkewSample) int {
		return cmp.Or(cmp.Compare(a.TS, b.TS), cmp.Compare(a.Offset, b.Offset))
	})
	if len(s.Samples) > skewSamples {
		s.Samples = slices.Delete(s.Samples, 0, len(s.Samples)-skewSamples)
	}
}

// maxCatchUp is how many slices a member reports one by one after its
// clock jumped (an idle member's, after a long quiet): past it, it reports
// from the latest on, which tells the owner the same (nothing to say).
const maxCatchUp = 360

// sliceMS is the length of the slices the aggregates are folded, sent and
// judged in: 10 s, so a finding waits at most a slice (and the lateness)
// for its slice to close; the detectors keep their own per-minute counts.
const sliceMS = 10_000

// minuteOf is the Unix minute a slice falls in.
func minuteOf(slice int64) int32 { return int32(floorDiv(slice*sliceMS, 60000)) }

// closeUpTo ends every slice before until at this member: for each source,
// a partial per dest, empty where the source had nothing to say to that
// dest in a slice since the first one seen here.
func (f *folding) closeUpTo(until int64, out func([]Partial)) {
	first := f.next
	for k := range f.open {
		if first == 0 || k.slice < first {
			first = k.slice
		}
	}
	if first == 0 {
		// Nothing seen yet: report from the clock's slice on, so the
		// owner learns that this member's sources have nothing to say
		// about the slices before it.
		first = until - 1
	}
	if until-first > maxCatchUp {
		first = until - 1
		for k := range f.open {
			first = min(first, max(k.slice, until-maxCatchUp))
		}
	}
	if first >= until || (f.next != 0 && f.next >= until) {
		return
	}
	f.next = max(f.next, first)
	sources := f.sources
	if sources == nil {
		sources = []int32{0}
	}
	f.last = nil
	var batch []Partial
	for ; f.next < until; f.next++ {
		for _, src := range sources {
			k := srcSlice{src, f.next}
			om := f.open[k]
			delete(f.open, k)
			batch = om.partials(src, f.next, f, batch)
		}
	}
	// Minutes of sources this member no longer folds.
	for k := range f.open {
		if k.slice < until {
			delete(f.open, k)
		}
	}
	if len(batch) > 0 {
		out(batch)
	}
}

// partials splits one source's slice by dest (om nil: nothing to say).
// A partial's seq is what was folded for its dest.
func (om *openSlice) partials(src int32, slice int64, f *folding, dst []Partial) []Partial {
	dests := max(f.dests, 1)
	n := len(dst)
	for d := range dests {
		dst = append(dst, Partial{Source: src, Dest: int32(d), Slice: slice})
	}
	if om == nil {
		return dst
	}
	own := dst[n:]
	g := &own[f.global]
	g.Seq, g.Body = om.seq, om.body()
	if len(om.rate) == 0 {
		return dst
	}
	keys := make([]rateKey, 0, len(om.rate))
	for k := range om.rate {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b rateKey) int { return cmp.Or(strings.Compare(a.scope, b.scope), strings.Compare(a.id, b.id)) })
	for _, k := range keys {
		c := om.rate[k]
		d := int32(0)
		if f.destOf != nil {
			d = f.destOf(c.Scope, c.ID)
		}
		p := &own[d]
		p.Seq += uint64(c.Count)
		p.Body.Rate = append(p.Body.Rate, *c)
	}
	return dst
}

func (om *openSlice) body() Aggregates {
	var a Aggregates
	for _, s := range om.skew {
		s.trim()
		a.Skew = append(a.Skew, *s)
	}
	slices.SortFunc(a.Skew, func(x, y SkewService) int { return strings.Compare(x.Service, y.Service) })
	if len(om.announced)+len(om.rotations)+len(om.failures) == 0 {
		return a
	}
	r := &RotationSlice{Rotations: om.rotations}
	for kid, ts := range om.announced {
		r.Announced = append(r.Announced, KidSeen{Kid: kid, TS: ts})
	}
	slices.SortFunc(r.Announced, func(x, y KidSeen) int { return strings.Compare(x.Kid, y.Kid) })
	for _, g := range om.failures {
		r.Failures = append(r.Failures, *g)
	}
	slices.SortFunc(r.Failures, func(x, y FailureGroup) int {
		return cmp.Or(cmp.Compare(x.Bucket, y.Bucket), strings.Compare(x.key().String(), y.key().String()))
	})
	a.Rotation = r
	return a
}

// aggregates is the engine's side of the aggregates: the folding of its own
// events, and the closing and merging of every source's partials for the
// dests it owns.
type aggregates struct {
	fold folding
	// closers, per dest this member owns: one process has one, dest 0.
	closers map[int32]*aggregate.Closer[Aggregates]
	owned   map[int32]bool
	// publish, in a fleet, sends this member's partials to their owners;
	// nil in one process, where they go straight to the closer.
	publish func([]Partial)
	cfg     AggregateConfig
	// of closers this member dropped, so the stats only grow
	dropped AggregateStats
}

// AggregateConfig makes the engine one member of a fleet's aggregates.
type AggregateConfig struct {
	// Sources is the keyed topic's partition count: every partition is a
	// source and a dest.
	Sources int
	// Global is the dest whose owner judges the per-service state (clock
	// skew, key rotation break).
	Global int32
	// DestOf is the dest of a client's or subject's refresh rate.
	DestOf func(scope, id string) int32
	// Wait is how long (wall clock) an owner waits for a source's partial
	// of a slice before closing it without.
	Wait time.Duration
	// Retain: copies of closed slices' partials are recognised this long.
	Retain time.Duration
	// Publish sends a batch of this member's partials to their owners (in
	// order: one source's partials to one dest must arrive in slice order).
	Publish func([]Partial)
}

// AggregateStats say how the owner's merge goes.
type AggregateStats struct {
	Duplicates, Late, Incomplete uint64
	Pending                      int
}

func (a *aggregates) closer(dest int32) *aggregate.Closer[Aggregates] {
	c := a.closers[dest]
	if c == nil {
		c = aggregate.NewCloser[Aggregates](a.cfg.Sources, a.cfg.Wait, int64(a.cfg.Retain/(sliceMS*time.Millisecond)))
		a.closers[dest] = c
	}
	return c
}

// mutable is the book's sink, muted while replayed slices are judged.
type mutable struct {
	Sink
	muted *bool
}

func (m mutable) Finding(f finding.Finding) {
	if !*m.muted {
		m.Sink.Finding(f)
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// source is the keyed partition an event came from in a fleet (its
// aggregates are per partition), 0 in one process.
func (en *Engine) source(e *event.Event) int32 {
	if en.agg.publish == nil {
		return 0
	}
	return e.Src.Partition
}

// closeSlices ends this member's slices before until: in one process
// they are merged and judged at once; in a fleet they go to their owners.
// Then the slices complete at the dests this member owns are judged.
func (en *Engine) closeSlices(until int64) {
	if en.agg.publish != nil {
		en.agg.fold.closeUpTo(until, en.agg.publish)
	} else {
		en.agg.fold.closeUpTo(until, func(ps []Partial) {
			for _, p := range ps {
				en.agg.closer(p.Dest).Add(p, time.Now())
			}
		})
	}
	en.judgeReady()
}

func (en *Engine) judgeReady() {
	if len(en.agg.closers) == 0 {
		return
	}
	now := time.Now()
	dests := make([]int32, 0, len(en.agg.closers))
	for d := range en.agg.closers {
		dests = append(dests, d)
	}
	slices.Sort(dests)
	for _, d := range dests {
		en.judge(d, en.agg.closers[d].Ready(now))
	}
}

// flushSlices ends the input. In one process every open slice is
// closed and judged. A fleet member publishes no slice still open (the
// new owner of its partitions folds those slices whole from their
// history, which a partial of part of a slice would contradict) and
// judges only the complete ones (the others' partials are read again by
// the next owner).
func (en *Engine) flushSlices() {
	if en.agg.publish != nil {
		return
	}
	last := int64(0)
	for k := range en.agg.fold.open {
		last = max(last, k.slice)
	}
	if last != 0 {
		en.closeSlices(last + 1)
	}
	for d, c := range en.agg.closers {
		en.judge(d, c.Flush())
	}
}

// judge hands a dest's closed slices to the detectors, oldest first.
func (en *Engine) judge(dest int32, closed []aggregate.Closed[Aggregates]) {
	for _, c := range closed {
		en.muted = c.Replayed
		if dest == en.agg.fold.global {
			en.skew.apply(minuteOf(c.Slice), c.Parts)
			en.rotation.apply(c.Parts)
		}
		en.rate.apply(minuteOf(c.Slice), c.Parts)
		en.muted = false
	}
}

// SetAggregates makes the engine a member of a fleet's aggregates (one
// process needs no call): its own partials go to cfg.Publish, one per
// source it folds and dest per slice.
func (en *Engine) SetAggregates(cfg AggregateConfig) {
	en.mu.Lock()
	defer en.mu.Unlock()
	en.agg.cfg = cfg
	en.agg.publish = cfg.Publish
	en.agg.closers = map[int32]*aggregate.Closer[Aggregates]{}
	en.agg.fold.sources = []int32{} // none until assigned
	en.agg.fold.dests, en.agg.fold.global, en.agg.fold.destOf = cfg.Sources, cfg.Global, cfg.DestOf
}

// SetSources names the keyed partitions this member owns: it folds their
// events, and merges the partials sent to them. An owner that loses a dest
// forgets its open slices: the new owner reads their partials again.
func (en *Engine) SetSources(sources []int32) {
	en.mu.Lock()
	defer en.mu.Unlock()
	en.agg.fold.sources = append([]int32{}, sources...)
	en.agg.owned = map[int32]bool{}
	for _, s := range sources {
		en.agg.owned[s] = true
	}
	for d, c := range en.agg.closers {
		if !en.agg.owned[d] {
			en.agg.dropped.Duplicates += c.Duplicates
			en.agg.dropped.Late += c.LateParts
			en.agg.dropped.Incomplete += c.Incomplete
			delete(en.agg.closers, d)
		}
	}
}

// MergeAggregate takes one source's partial, read by its dest's owner
// (Replayed: read again while rebuilding).
func (en *Engine) MergeAggregate(p Partial) aggregate.Outcome {
	en.mu.Lock()
	defer en.mu.Unlock()
	c := en.agg.closer(p.Dest)
	o := c.Add(p, time.Now())
	en.judge(p.Dest, c.Ready(time.Now()))
	return o
}

// AggregateStats says how the owner's merge goes.
func (en *Engine) AggregateStats() AggregateStats {
	en.mu.Lock()
	defer en.mu.Unlock()
	st := en.agg.dropped
	for _, c := range en.agg.closers {
		st.Duplicates += c.Duplicates
		st.Late += c.LateParts
		st.Incomplete += c.Incomplete
		st.Pending += c.Pending()
	}
	return st
}
