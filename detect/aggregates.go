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

// Aggregates is one minute of one source's events, as the detectors whose
// state no key owns read them (per service: the clock-skew detector). In one
// process the engine folds every event into one source's partials and
// merges them itself; in a fleet each analyze member folds the keyed
// partitions it owns, and the member owning the aggregates merges every
// partition's partials (docs/fleet.md, "Aggregates"). Either way the
// detectors judge closed minutes, so a fleet finds what one process finds.
type Aggregates struct {
	Skew     []SkewService   `json:"skew,omitempty"`
	Rotation *RotationMinute `json:"rotation,omitempty"`
}

// RotationMinute is one minute of what the key-rotation detector reads:
// the kids announced (by an issue, a key_rotate or a successful
// validation: real keys), the rotations, and the signature failures
// grouped by service, kid, issuer, region, outcome and 10-second bucket.
type RotationMinute struct {
	Announced []KidSeen      `json:"announced,omitempty"`
	Rotations []RotationSeen `json:"rotations,omitempty"`
	Failures  []FailureGroup `json:"failures,omitempty"`
}

// KidSeen is a kid announced, first at TS (Unix ms) in its minute.
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

// Partial is one source's Aggregates for one minute.
type Partial = aggregate.Partial[Aggregates]

// SkewService is one service's validations in one minute, for the clock-skew
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

// folding builds the partials of the minutes not yet closed at this member,
// per source.
type folding struct {
	open map[srcMinute]*openMinute
	// next is the first minute not yet closed here (0: none seen yet).
	next int64
	// sources this member folds: the keyed partitions it owns in a fleet
	// (none until assigned); nil in one process, whose only source is 0.
	sources []int32
}

type srcMinute struct {
	src    int32
	minute int64
}

type openMinute struct {
	seq       uint64
	skew      map[string]*SkewService
	announced map[string]int64
	rotations []RotationSeen
	failures  map[failureKey]*FailureGroup
}

func (f *folding) minute(src int32, m int64) *openMinute {
	k := srcMinute{src, m}
	om := f.open[k]
	if om == nil {
		om = &openMinute{skew: map[string]*SkewService{}}
		f.open[k] = om
	}
	return om
}

// closed says whether minute m has closed here (a late event's).
func (f *folding) closed(m int64) bool { return f.next != 0 && m < f.next }

// foldAnnounce notes a kid shown to be a real key.
func (f *folding) foldAnnounce(src int32, m int64, kid string, ms int64) {
	if kid == "" || f.closed(m) {
		return
	}
	om := f.minute(src, m)
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
	om := f.minute(src, m)
	om.seq++
	r.Kid, r.PrevKid, r.Issuer, r.Service = strings.Clone(r.Kid), strings.Clone(r.PrevKid), strings.Clone(r.Issuer), strings.Clone(r.Service)
	om.rotations = append(om.rotations, r)
}

func (f *folding) foldFailure(src int32, m int64, e *event.Event, ms int64) {
	if f.closed(m) {
		return
	}
	om := f.minute(src, m)
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
func (f *folding) foldSkew(src int32, m int64, e *event.Event, ms int64, offset float64, near bool) bool {
	if f.closed(m) {
		return false // its minute closed here: late (counted by the engine)
	}
	om := f.minute(src, m)
	om.seq++
	s := om.skew[e.Service]
	if s == nil {
		s = &SkewService{Service: strings.Clone(e.Service)}
		om.skew[s.Service] = s
	}
	s.Validations++
	if !near {
		return true
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
	return true
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

// closeUpTo ends every minute before until at this member: each source's
// partial, an empty one for a source that had nothing to say in a minute
// since the first one seen here.
func (f *folding) closeUpTo(until int64, out func(Partial)) {
	if f.next == 0 {
		first := int64(0)
		for k := range f.open {
			if first == 0 || k.minute < first {
				first = k.minute
			}
		}
		if first == 0 {
			// Nothing seen yet: report from the clock's minute on, so
			// the owner learns that this member's sources have nothing
			// to say about the minutes before it.
			first = until - 1
		}
		if first >= until {
			return
		}
		f.next = first
	}
	sources := f.sources
	if sources == nil {
		sources = []int32{0}
	}
	for ; f.next < until; f.next++ {
		for _, src := range sources {
			k := srcMinute{src, f.next}
			p := Partial{Source: src, Minute: f.next}
			if om := f.open[k]; om != nil {
				p.Seq = om.seq
				p.Body = om.body()
				delete(f.open, k)
			}
			out(p)
		}
	}
	// Minutes of sources this member no longer folds.
	for k := range f.open {
		if k.minute < until {
			delete(f.open, k)
		}
	}
}

func (om *openMinute) body() Aggregates {
	var a Aggregates
	for _, s := range om.skew {
		s.trim()
		a.Skew = append(a.Skew, *s)
	}
	slices.SortFunc(a.Skew, func(x, y SkewService) int { return strings.Compare(x.Service, y.Service) })
	if len(om.announced)+len(om.rotations)+len(om.failures) == 0 {
		return a
	}
	r := &RotationMinute{Rotations: om.rotations}
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
// events, and (where it owns them) the closing and merging of every
// source's partials.
type aggregates struct {
	fold   folding
	closer *aggregate.Closer[Aggregates]
	// publish, in a fleet, sends this member's partials to the owner;
	// nil in one process, where they go straight to closer.
	publish func(Partial)
	owner   bool
}

// AggregateConfig makes the engine one member of a fleet's aggregates.
type AggregateConfig struct {
	// Sources is the keyed topic's partition count.
	Sources int
	// Wait is how long (wall clock) the owner waits for a source's partial
	// of a minute before closing it without.
	Wait time.Duration
	// Retain: copies of closed minutes' partials are recognised this long.
	Retain time.Duration
	// Publish sends one of this member's partials to the aggregates' owner.
	Publish func(Partial)
}

// AggregateStats count the owner's partials that changed nothing.
type AggregateStats struct {
	Duplicates, Late, Incomplete uint64
	Pending                      int
}

// mutable is the book's sink, muted while replayed minutes are judged.
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

// closeMinutes ends this member's minutes before until: in one process
// they are merged and judged at once; in a fleet they go to the owner.
func (en *Engine) closeMinutes(until int64) {
	if en.agg.publish != nil {
		en.agg.fold.closeUpTo(until, en.agg.publish)
	} else {
		en.agg.fold.closeUpTo(until, func(p Partial) { en.agg.closer.Add(p, time.Now()) })
	}
	if en.agg.owner || en.agg.publish == nil {
		en.judge(en.agg.closer.Ready(time.Now()))
	}
}

// flushMinutes ends the input: every minute folded here is closed; in one
// process every open minute is judged, in a fleet only those complete
// (the others' partials are read again by the next owner).
func (en *Engine) flushMinutes() {
	last := int64(0)
	for k := range en.agg.fold.open {
		last = max(last, k.minute)
	}
	if last != 0 {
		en.closeMinutes(last + 1)
	}
	if en.agg.publish == nil {
		en.judge(en.agg.closer.Flush())
	}
}

// judge hands closed minutes to the detectors, oldest first.
func (en *Engine) judge(closed []aggregate.Closed[Aggregates]) {
	for _, c := range closed {
		en.muted = c.Replayed
		en.skew.apply(int32(c.Minute), c.Parts)
		en.rotation.apply(c.Parts)
		en.muted = false
	}
}

// SetAggregates makes the engine a member of a fleet's aggregates (one
// process needs no call): its own partials go to cfg.Publish, one per
// source it folds per minute.
func (en *Engine) SetAggregates(cfg AggregateConfig) {
	en.mu.Lock()
	defer en.mu.Unlock()
	en.agg.publish = cfg.Publish
	en.agg.fold.sources = []int32{} // none until assigned
	en.agg.closer = aggregate.NewCloser[Aggregates](cfg.Sources, cfg.Wait, cfg.Retain)
}

// SetSources names the keyed partitions this member folds (the ones it
// owns), and whether it owns the aggregates (merges every source's
// partials). An owner that loses them forgets its open minutes: the new
// owner reads their partials again.
func (en *Engine) SetSources(sources []int32, owner bool) {
	en.mu.Lock()
	defer en.mu.Unlock()
	en.agg.fold.sources = append([]int32{}, sources...)
	if en.agg.owner && !owner {
		en.agg.closer.Drop()
	}
	en.agg.owner = owner
}

// MergeAggregate takes one source's partial, read by the aggregates' owner
// (replayed: read again while rebuilding).
func (en *Engine) MergeAggregate(p Partial) aggregate.Outcome {
	en.mu.Lock()
	defer en.mu.Unlock()
	o := en.agg.closer.Add(p, time.Now())
	en.judge(en.agg.closer.Ready(time.Now()))
	return o
}

// AggregateStats says how the owner's merge goes.
func (en *Engine) AggregateStats() AggregateStats {
	en.mu.Lock()
	defer en.mu.Unlock()
	c := en.agg.closer
	return AggregateStats{Duplicates: c.Duplicates, Late: c.LateParts, Incomplete: c.Incomplete, Pending: c.Pending()}
}
