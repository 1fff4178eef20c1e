package detect

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// baselineMinutes is the rolling window of per-minute refresh counts a
// client's or subject's baseline is taken from. A fixed array keeps a series
// at 72 bytes and allocation-free.
const baselineMinutes = 30

// rateSeries is one client's or subject's refreshes per minute over the last
// baselineMinutes minutes, with the anomaly threshold of the current minute
// cached (computed once per minute, not per event).
type rateSeries struct {
	counts    [baselineMinutes]uint16
	startMin  int32 // first minute seen: the baseline needs history
	curMin    int32
	thrMin    int32
	threshold uint16
	median    uint16
	mad       uint16
}

// quietRate is all an idle client or subject costs (12 bytes): its first
// minute and the current minute's count. Almost every subject refreshes a few
// times an hour, and for them "no minute reached promoteAt" is all a full
// series would say. The first minute that reaches promoteAt promotes it to a
// rateSeries whose earlier minutes are taken as zero: they were all below
// promoteAt, far under RateMinCount, so the threshold barely moves.
type quietRate struct {
	startMin int32
	curMin   int32
	cur      uint16
}

// rateDetector flags a client or subject refreshing far above its own
// baseline: robust z-score (median and MAD of the per-minute counts) over the
// rolling window, with a minimum count so a handful of refreshes is never a
// rate.
type rateDetector struct {
	cfg      *Config
	book     *book
	clients  rateTables
	subjects rateTables
}

// rateTables: the quiet many and the busy few.
type rateTables struct {
	quiet *table[quietRate]
	busy  *table[rateSeries]
}

func (d *rateDetector) promoteAt() int { return max(2, d.cfg.RateMinCount/4) }

// observe folds one refresh into its client's and subject's counts of the
// engine clock's minute; the minute is judged when it closes (apply).
func (d *rateDetector) observe(e *event.Event, ms, minute int64, src int32, f *folding) {
	if e.Outcome == event.Error {
		return // an IdP failing makes every client retry: that is M3, not theft
	}
	if e.ClientID != "" {
		f.foldRate(src, minute, "client", e.ClientID, e, ms)
	}
	if e.Subject != "" {
		f.foldRate(src, minute, "subject", e.Subject, e, ms)
	}
}

// apply judges one closed minute's refresh counts, merged over every
// source, per client and subject.
func (d *rateDetector) apply(minute int32, parts []Partial) {
	merged := map[rateKey]*RateCount{}
	var keys []rateKey
	for i := range parts {
		for _, c := range parts[i].Body.Rate {
			k := rateKey{c.Scope, c.ID}
			m := merged[k]
			if m == nil {
				cp := c
				merged[k] = &cp
				keys = append(keys, k)
				continue
			}
			m.Count += c.Count
			if c.Last > m.Last {
				m.Last, m.Service, m.Issuer, m.Region = c.Last, c.Service, c.Issuer, c.Region
			}
		}
	}
	slices.SortFunc(keys, func(a, b rateKey) int { return cmp.Or(strings.Compare(a.scope, b.scope), strings.Compare(a.id, b.id)) })
	ttl := int64(2*baselineMinutes)*60000 + d.cfg.AllowedLateness.Milliseconds()
	for _, k := range keys {
		c := merged[k]
		t := d.subjects
		if c.Scope == "client" {
			t = d.clients
		}
		d.count(t, c, minute, ttl)
	}
}

// count adds one minute's refreshes of one client or subject to its series
// and judges the minute against the baseline before it.
func (d *rateDetector) count(t rateTables, c *RateCount, minute int32, ttl int64) {
	k := hashID(c.ID)
	n := uint16(min(c.Count, math.MaxUint16))
	s, exp, ok := t.busy.get(k)
	if !ok {
		q, qexp, ok := t.quiet.get(k)
		if !ok {
			q = quietRate{startMin: minute, curMin: minute}
		}
		if minute > q.curMin {
			q.curMin, q.cur = minute, 0
		}
		if minute < q.startMin {
			q.startMin = minute
		}
		if minute != q.curMin {
			return // older than what it holds
		}
		q.cur = satAdd(q.cur, n)
		if int(q.cur) < d.promoteAt() {
			t.quiet.put(k, q, max(qexp, c.Last+ttl))
			return
		}
		t.quiet.del(k)
		s = rateSeries{startMin: q.startMin, curMin: q.curMin, thrMin: -1}
		s.counts[q.curMin%baselineMinutes] = q.cur - n // this minute's are counted below
	}
	if minute > s.curMin {
		gap := minute - s.curMin
		for i := int32(1); i <= gap && i <= baselineMinutes; i++ {
			s.counts[(s.curMin+i)%baselineMinutes] = 0
		}
		s.curMin = minute
	}
	if s.curMin-minute >= baselineMinutes {
		return // older than the window
	}
	if minute < s.startMin {
		s.startMin = minute
	}
	slot := &s.counts[minute%baselineMinutes]
	*slot = satAdd(*slot, n)
	x := int(*slot)
	anomalous := false
	if minute == s.curMin && x >= d.cfg.RateMinCount && int64(minute-s.startMin)*60000 >= d.cfg.RateMinBaseline.Milliseconds() {
		if s.thrMin != minute {
			d.threshold(&s)
		}
		anomalous = x >= int(s.threshold)
	}
	t.busy.put(k, s, max(exp, c.Last+ttl))
	if anomalous {
		d.raise(c, x, s)
	}
}

func satAdd(a, b uint16) uint16 { return uint16(min(uint32(a)+uint32(b), math.MaxUint16)) }

// threshold sets the count that is anomalous for the current minute:
// median + z·1.4826·MAD of the earlier minutes. The MAD is floored at what
// Poisson noise alone gives (0.6745·√median, at least 1), so a perfectly
// steady synthetic baseline does not make every wobble an anomaly.
func (d *rateDetector) threshold(s *rateSeries) {
	var buf [baselineMinutes]float64
	vals := buf[:0]
	for m := s.curMin - baselineMinutes + 1; m < s.curMin; m++ {
		if m >= s.startMin {
			vals = append(vals, float64(s.counts[((m%baselineMinutes)+baselineMinutes)%baselineMinutes]))
		}
	}
	med, mad := medianMAD(vals)
	floor := max(1, 0.6745*math.Sqrt(med))
	thr := med + d.cfg.RateZScore*1.4826*max(mad, floor)
	s.threshold = uint16(min(math.Ceil(thr), math.MaxUint16))
	s.median = uint16(min(med, math.MaxUint16))
	s.mad = uint16(min(mad, math.MaxUint16))
	s.thrMin = s.curMin
}

// medianMAD returns the median and the median absolute deviation; vals is
// reordered.
func medianMAD(vals []float64) (float64, float64) {
	if len(vals) == 0 {
		return 0, 0
	}
	med := median(vals)
	for i, v := range vals {
		vals[i] = math.Abs(v - med)
	}
	return med, median(vals)
}

func median(vals []float64) float64 {
	slices.Sort(vals)
	n := len(vals)
	if n%2 == 1 {
		return vals[n/2]
	}
	return (vals[n/2-1] + vals[n/2]) / 2
}

// rateEvidence shows the rate against the baseline it broke.
type rateEvidence struct {
	scope     string
	perMinute int
	median    float64
	mad       float64
	threshold int
	z         float64
}

func (ev *rateEvidence) render(m map[string]any) {
	m["signals"] = []string{flavorRate}
	m["scope"] = ev.scope
	m["refreshes_per_minute"] = ev.perMinute
	m["baseline_median_per_minute"] = ev.median
	m["baseline_mad"] = ev.mad
	m["threshold_per_minute"] = ev.threshold
	m["z_score"] = math.Round(ev.z*10) / 10
	m["baseline_minutes"] = baselineMinutes
}

func (d *rateDetector) raise(c *RateCount, x int, s rateSeries) {
	scope, id := c.Scope, c.ID
	sig := signal{kind: finding.RefreshAnomaly, key: scope + ":" + id, ts: c.Last,
		ids:    ids{service: c.Service, issuer: c.Issuer, region: c.Region},
		detail: fmt.Sprintf("%s refresh rate %d/min above its baseline", scope, x)}
	if scope == "client" {
		sig.ids.clientID = id
	} else {
		sig.ids.subject = id
	}
	r, _ := d.book.raise(sig)
	ev, _ := r.ev.(*rateEvidence)
	if ev == nil {
		ev = &rateEvidence{scope: scope}
		r.ev = ev
	}
	if x >= ev.perMinute {
		ev.perMinute = x
		ev.median, ev.mad, ev.threshold = float64(s.median), float64(s.mad), int(s.threshold)
		ev.z = (float64(x) - ev.median) / (1.4826 * max(ev.mad, max(1, 0.6745*math.Sqrt(ev.median))))
	}
	r.f.Action = fmt.Sprintf("The %s %s refreshes %d times a minute against a usual %g: look for a leaked refresh token or client credential driven by a script; rate-limit it, and revoke its sessions if the owner does not recognise the traffic.", scope, id, ev.perMinute, ev.median)
	d.book.touch(r)
}
