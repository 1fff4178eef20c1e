package detect

import (
	"fmt"
	"math"
	"slices"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// skewDetector finds a validator whose clock is off: expired or
// not_yet_valid rejections of tokens whose exp or iat sits within minutes of
// the validator's clock, concentrated in one service (its share of such
// rejections far above the other services'). Each such rejection is a sample
// of the offset: ts-exp for expired (the validator ran ahead), ts-iat for
// not_yet_valid (it ran behind); the skew is a quantile estimate a few
// ordinary late or early clients cannot move (see estimate). Rejections further from the
// boundary than ClockSkewMaxOffset are ordinary expiry and ignored.
type skewDetector struct {
	cfg      *Config
	book     *book
	services *interner
	perSvc   map[uint16]*skewState
	fleet    minuteCounts
}

const (
	skewWindowMinutes = 60
	skewSamples       = 64
)

// minuteCounts holds validations and near-boundary rejections per minute.
type minuteCounts struct {
	minute [skewWindowMinutes]int32
	total  [skewWindowMinutes]uint32
	near   [skewWindowMinutes]uint32
}

func (c *minuteCounts) addN(minute int32, total, near uint32) {
	i := minute % skewWindowMinutes
	if c.minute[i] != minute {
		if c.minute[i] > minute {
			return
		}
		c.minute[i], c.total[i], c.near[i] = minute, 0, 0
	}
	c.total[i] += total
	c.near[i] += near
}

func (c *minuteCounts) sum(from, to int32) (total, near int) {
	for i := range c.minute {
		if m := c.minute[i]; m >= from && m <= to {
			total += int(c.total[i])
			near += int(c.near[i])
		}
	}
	return
}

type skewState struct {
	counts  minuteCounts
	samples [skewSamples]float32 // offsets in seconds, a ring of the latest
	n       int
	expired int
	notYet  int
	region  string
}

// observe folds one validation into the aggregates of the engine clock's
// slice (not the event's: a validator whose clock is off, the very thing
// this detector looks for, stamps its events minutes early or late); the
// slice is judged when it closes (apply).
func (d *skewDetector) observe(e *event.Event, ms, clockSlice int64, src int32, f *folding) {
	offset, near := d.offset(e, ms)
	f.foldSkew(src, clockSlice, e, ms, offset, near)
}

// apply takes one closed minute, merged over every source: each service's
// counts and samples join its state (samples in ts order, so the ring keeps
// the latest whatever order the sources came in), then each service with
// near-boundary rejections in the minute is judged.
func (d *skewDetector) apply(minute int32, parts []Partial) {
	merged := map[string]*SkewService{}
	for i := range parts {
		for _, s := range parts[i].Body.Skew {
			m := merged[s.Service]
			if m == nil {
				m = &SkewService{Service: s.Service}
				merged[s.Service] = m
			}
			m.Validations += s.Validations
			m.Near += s.Near
			m.Expired += s.Expired
			m.NotYetValid += s.NotYetValid
			m.Samples = append(m.Samples, s.Samples...)
		}
	}
	names := make([]string, 0, len(merged))
	for n := range merged {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		s := merged[n]
		s.trim()
		st := d.state(n)
		st.counts.addN(minute, s.Validations, s.Near)
		d.fleet.addN(minute, s.Validations, s.Near)
		st.expired += int(s.Expired)
		st.notYet += int(s.NotYetValid)
		for _, x := range s.Samples {
			st.samples[st.n%skewSamples] = x.Offset
			st.n++
			if x.Region != "" && st.region != x.Region {
				st.region = x.Region
			}
		}
	}
	for _, n := range names {
		if s := merged[n]; s.Near > 0 {
			last := s.Samples[len(s.Samples)-1]
			d.check(n, last, minute, d.state(n))
		}
	}
}

func (d *skewDetector) state(service string) *skewState {
	svc := d.services.id(service)
	st := d.perSvc[svc]
	if st == nil {
		st = &skewState{}
		d.perSvc[svc] = st
	}
	return st
}

// offset is the validator's apparent clock offset a rejection implies, and
// whether the rejection sits near enough to the token's boundary to be one.
func (d *skewDetector) offset(e *event.Event, ms int64) (float64, bool) {
	maxOff := d.cfg.ClockSkewMaxOffset.Milliseconds()
	switch e.Outcome {
	case event.Expired:
		if e.EXP.IsZero() {
			return 0, false
		}
		o := ms - e.EXP.UnixMilli()
		return float64(o) / 1000, o > 0 && o <= maxOff
	case event.NotYetValid:
		if e.IAT.IsZero() {
			return 0, false
		}
		o := ms - e.IAT.UnixMilli()
		return float64(o) / 1000, o < 0 && -o <= maxOff
	}
	return 0, false
}

// check decides whether the service's near-boundary rejections are
// concentrated enough, and its estimated skew large enough, to be a finding.
func (d *skewDetector) check(service string, last SkewSample, minute int32, st *skewState) {
	win := int32(d.cfg.ClockSkewWindow.Minutes())
	total, near := st.counts.sum(minute-win+1, minute)
	if near < d.cfg.ClockSkewMinSamples || total == 0 {
		return
	}
	ratio := float64(near) / float64(total)
	fTotal, fNear := d.fleet.sum(minute-win+1, minute)
	restTotal, restNear := fTotal-total, fNear-near
	var restRatio float64
	if restTotal > 0 {
		restRatio = float64(restNear) / float64(restTotal)
		if ratio < d.cfg.ClockSkewConcentration*restRatio || ratio < d.cfg.ClockSkewMinShare/10 {
			return
		}
	} else if ratio < d.cfg.ClockSkewMinShare {
		return
	}
	skew, used, shape := st.estimate()
	if math.Abs(skew) < d.cfg.ClockSkewMinOffset.Seconds() || shape < skewMinShape {
		return
	}
	d.raise(service, last, st, skew, used, near, total, ratio, restRatio)
}

// estimate turns the latest samples into one offset. When they cluster (a
// fixed offset: every rejection sits the skew away from the boundary) their
// median is the skew. When they spread, tokens were used evenly through
// the skew window, so the samples run from 0 to the skew: the window's far
// edge, estimated robustly as p75 + IQR/2 (exactly the edge for an even
// spread), is the skew. Negative samples (behind) mirror this.
//
// shape is median/p90 of the offsets' magnitudes: about 1 for a cluster, 0.56
// for an even spread, 0.3 for the exponential decay of ordinary expiry
// (clients' requests land on an expired token after a memoryless gap, most
// soon after exp, a few long after). Only a skewed clock gives the first two.
func (st *skewState) estimate() (skew float64, used int, shape float64) {
	n := min(st.n, skewSamples)
	var buf [skewSamples]float64
	vals := buf[:n]
	for i := range vals {
		vals[i] = float64(st.samples[i])
	}
	slices.Sort(vals)
	med := quantile(vals, 0.5)
	q1, q3 := quantile(vals, 0.25), quantile(vals, 0.75)
	shape = math.Abs(med) / max(math.Abs(quantile(vals, 0.9)), math.Abs(quantile(vals, 0.1)), 1e-9)
	iqr := q3 - q1
	if iqr <= 0.2*math.Abs(med) {
		return med, n, shape
	}
	if med < 0 {
		return max(q1-iqr/2, vals[0]), n, shape
	}
	return min(q3+iqr/2, vals[n-1]), n, shape
}

// skewMinShape separates a skewed clock's offsets (flat or clustered) from
// ordinary expiry's (decaying); see estimate.
const skewMinShape = 0.45

// quantile of sorted values, interpolated.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := q * float64(len(sorted)-1)
	i := int(pos)
	if i+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	return sorted[i] + (pos-float64(i))*(sorted[i+1]-sorted[i])
}

type skewEvidence struct {
	skew             float64
	samples          int
	near, total      int
	ratio, restRatio float64
	expired, notYet  int
	windowMinutes    int
	maxOffsetSeconds float64
}

func (ev *skewEvidence) render(m map[string]any) {
	m["skew_s"] = math.Round(ev.skew*10) / 10
	m["samples"] = ev.samples
	m["direction"] = "ahead"
	if ev.skew < 0 {
		m["direction"] = "behind"
	}
	m["near_boundary_rejections"] = ev.near
	m["validations"] = ev.total
	m["rejection_ratio"] = round4(ev.ratio)
	m["other_services_ratio"] = round4(ev.restRatio)
	m["expired"] = ev.expired
	m["not_yet_valid"] = ev.notYet
	m["window_minutes"] = ev.windowMinutes
}

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }

func (d *skewDetector) raise(service string, last SkewSample, st *skewState, skew float64, used, near, total int, ratio, restRatio float64) {
	r, _ := d.book.raise(signal{kind: finding.ClockSkew, key: "service:" + service, ts: last.TS,
		ids:    ids{service: service, region: st.region, issuer: last.Issuer},
		detail: "near-boundary expiry rejections"})
	ev, _ := r.ev.(*skewEvidence)
	if ev == nil {
		ev = &skewEvidence{}
		r.ev = ev
	}
	// The largest offset of the skew's sign: every sample is a use before
	// exp (after iat) in true time, so none exceeds the clock's offset and
	// the largest is its tightest lower bound (the estimate can fall short
	// of it when the uses crowd one end of the window).
	var largest float64
	for _, x := range st.samples[:min(st.n, skewSamples)] {
		if v := float64(x); v*skew > 0 && math.Abs(v) > math.Abs(largest) {
			largest = v
		}
	}
	*ev = skewEvidence{skew: skew, samples: used, near: near, total: total, ratio: ratio, restRatio: restRatio,
		expired: st.expired, notYet: st.notYet, windowMinutes: int(d.cfg.ClockSkewWindow.Minutes()), maxOffsetSeconds: largest}
	dir := "ahead of"
	if skew < 0 {
		dir = "behind"
	}
	r.f.Action = fmt.Sprintf("The clock of %s looks about %.0f s %s the issuer's: check NTP/chrony on its hosts%s; until then widen its clock leeway or take it out of rotation.",
		service, math.Abs(skew), dir, inRegion(st.region))
	d.book.touch(r)
}

func inRegion(r string) string {
	if r == "" {
		return ""
	}
	return " in " + r
}
