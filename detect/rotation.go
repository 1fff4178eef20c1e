package detect

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// rotationDetector finds key rotations that broke validation: bad_signature
// or unknown_kid failures at a service jumping after a key_rotate, compared
// with the same length of time before it; and, with no rotation, a kid never
// announced (by an issue, a key_rotate or a successful validation) failing
// repeatedly with unknown_kid.
type rotationDetector struct {
	cfg       *Config
	book      *book
	services  *interner
	kids      *table[kidState]
	failures  map[uint16]*failureBuckets // per validating service
	fleet     *failureBuckets            // all services together
	rotations []rotation                 // recent key_rotate events, oldest first
}

// kidState: whether a kid is known to be real, and how often an unknown one failed.
type kidState struct {
	known    bool
	failures uint32
}

type rotation struct {
	ms      int64
	kid     string
	prevKid string
	issuer  string
	service string
}

const (
	maxRotations   = 8
	failureBucketS = 10
	kidTTLms       = 30 * 24 * 3600 * 1000 // keys live for weeks
)

// failureBuckets counts a service's signature failures in 10-second buckets,
// enough to sum any window around a rotation.
type failureBuckets struct {
	idx []int64
	n   []uint32
}

func newFailureBuckets(window int64) *failureBuckets {
	size := int(2*window/(failureBucketS*1000)) + 4
	return &failureBuckets{idx: make([]int64, size), n: make([]uint32, size)}
}

func (b *failureBuckets) addN(ms int64, n uint32) {
	i := ms / (failureBucketS * 1000)
	j := int(i % int64(len(b.idx)))
	if b.idx[j] != i {
		if b.idx[j] > i {
			return // older than the ring
		}
		b.idx[j], b.n[j] = i, 0
	}
	b.n[j] += n
}

// baseline is the failures per bucket in [from, to) with the busiest tenth
// of the buckets left out: the tail of an earlier break (its own incident)
// must not hide the next one, while steady noise still counts in full.
func (b *failureBuckets) baseline(from, to int64) float64 {
	lo, hi := from/(failureBucketS*1000), (to-1)/(failureBucketS*1000)
	n := int(hi - lo + 1)
	if n <= 0 {
		return 0
	}
	counts := make([]int, 0, n)
	for j, i := range b.idx {
		if i >= lo && i <= hi && b.n[j] > 0 {
			counts = append(counts, int(b.n[j]))
		}
	}
	slices.Sort(counts)
	drop := n / 10
	kept := counts[:max(0, len(counts)-drop)]
	total := 0
	for _, c := range kept {
		total += c
	}
	return float64(total) / float64(n-drop)
}

// sum counts failures in [from, to).
func (b *failureBuckets) sum(from, to int64) int {
	lo, hi := from/(failureBucketS*1000), (to-1)/(failureBucketS*1000)
	total := 0
	for j, i := range b.idx {
		if i >= lo && i <= hi {
			total += int(b.n[j])
		}
	}
	return total
}

func signatureFailure(o event.Outcome) bool { return o == event.BadSignature || o == event.UnknownKid }

// announce marks kids as real keys.
func (d *rotationDetector) announce(kid string) {
	if kid == "" {
		return
	}
	k := hashID(kid)
	s, _, ok := d.kids.get(k)
	if ok && s.known {
		return
	}
	d.kids.put(k, kidState{known: true}, d.nowPlusKidTTL())
}

func (d *rotationDetector) nowPlusKidTTL() int64 { return d.book.now() + kidTTLms }

// observeIssue, observeRotate and observeValidation fold an event into the
// aggregates of the engine clock's minute; the minute is judged when it
// closes (apply), in the order of the events' ts.
func (d *rotationDetector) observeIssue(e *event.Event, ms, minute int64, src int32, f *folding) {
	f.foldAnnounce(src, minute, e.Kid, ms)
}

func (d *rotationDetector) observeRotate(e *event.Event, ms, minute int64, src int32, f *folding) {
	f.foldRotation(src, minute, RotationSeen{TS: ms, Kid: e.Kid, PrevKid: e.PrevKid, Issuer: e.Issuer, Service: e.Service})
}

func (d *rotationDetector) observeValidation(e *event.Event, ms, minute int64, src int32, f *folding) {
	if e.Outcome == event.OK {
		f.foldAnnounce(src, minute, e.Kid, ms) // a kid that validates is a real key
		return
	}
	if signatureFailure(e.Outcome) {
		f.foldFailure(src, minute, e, ms)
	}
}

// apply judges one closed minute, merged over every source: its
// announcements, rotations and failure groups in ts order.
func (d *rotationDetector) apply(parts []Partial) {
	type step struct {
		ts    int64
		order int // at one ts: rotations, then announcements, then failures
		key   string
		run   func()
	}
	var steps []step
	failures := map[failureKey]*FailureGroup{}
	for i := range parts {
		r := parts[i].Body.Rotation
		if r == nil {
			continue
		}
		for _, a := range r.Announced {
			steps = append(steps, step{a.TS, 1, a.Kid, func() { d.announce(a.Kid) }})
		}
		for _, x := range r.Rotations {
			steps = append(steps, step{x.TS, 0, x.Kid, func() { d.addRotation(x) }})
		}
		for _, g := range r.Failures {
			k := g.key()
			if m := failures[k]; m != nil {
				m.Count += g.Count
				m.First, m.Last = min(m.First, g.First), max(m.Last, g.Last)
				continue
			}
			cp := g
			failures[k] = &cp
		}
	}
	for k, g := range failures {
		steps = append(steps, step{g.First, 2, k.String(), func() { d.failure(g) }})
	}
	slices.SortStableFunc(steps, func(a, b step) int {
		return cmp.Or(cmp.Compare(a.ts, b.ts), cmp.Compare(a.order, b.order), strings.Compare(a.key, b.key))
	})
	for _, s := range steps {
		s.run()
	}
}

func (d *rotationDetector) addRotation(x RotationSeen) {
	d.announce(x.Kid)
	d.announce(x.PrevKid)
	if x.Kid == "" {
		return
	}
	for _, r := range d.rotations {
		if r.kid == x.Kid {
			return // the same rotation reported again (a key_rotate reaches every keyed partition)
		}
	}
	d.rotations = append(d.rotations, rotation{ms: x.TS, kid: x.Kid, prevKid: x.PrevKid, issuer: x.Issuer, service: x.Service})
	slices.SortFunc(d.rotations, func(a, b rotation) int { return int(a.ms - b.ms) })
	if len(d.rotations) > maxRotations {
		d.rotations = d.rotations[len(d.rotations)-maxRotations:]
	}
}

// failure takes one group of signature failures (one service, kid, issuer
// and outcome in one 10-second bucket).
func (d *rotationDetector) failure(g *FailureGroup) {
	svc := d.services.id(g.Service)
	fb := d.failures[svc]
	if fb == nil {
		fb = newFailureBuckets(d.cfg.RotationWindow.Milliseconds())
		d.failures[svc] = fb
	}
	fb.addN(g.First, g.Count)
	if d.fleet == nil {
		d.fleet = newFailureBuckets(d.cfg.RotationWindow.Milliseconds())
	}
	d.fleet.addN(g.First, g.Count)
	if r := d.rotationOf(g.Kid, g.Issuer, g.Last); r != nil {
		d.checkJump(g, r, fb)
		return
	}
	d.checkUnknownKid(g)
}

// rotationOf is the rotation a failure belongs to: the recent rotation to
// the kid it carries; else, for a failure of the latest rotation's
// predecessor kid (a key dropped too early) or one without a kid, the latest
// rotation. An unannounced kid failing meanwhile is its own incident, and a
// kid whose own rotation broke earlier stays with that rotation when the
// next one comes.
func (d *rotationDetector) rotationOf(kid, issuer string, ms int64) *rotation {
	w := d.cfg.RotationWindow.Milliseconds()
	if kid != "" {
		for i := len(d.rotations) - 1; i >= 0; i-- {
			r := &d.rotations[i]
			if r.kid == kid && r.ms <= ms && ms-r.ms <= w {
				return r
			}
		}
	}
	r := d.rotationBefore(issuer, ms)
	if r == nil || (kid != "" && kid != r.prevKid) {
		return nil
	}
	return r
}

// rotationBefore is the latest rotation of the event's issuer at most one
// window before it.
func (d *rotationDetector) rotationBefore(issuer string, ms int64) *rotation {
	w := d.cfg.RotationWindow.Milliseconds()
	for i := len(d.rotations) - 1; i >= 0; i-- {
		r := &d.rotations[i]
		if r.ms > ms || ms-r.ms > w {
			continue
		}
		if r.issuer != "" && issuer != "" && r.issuer != issuer {
			continue
		}
		return r
	}
	return nil
}

// checkJump compares failures in the window after the rotation with the
// same length before it, at the event's service and across all services (a
// break spread thinly over many services is still a break).
//
// The comparison is by rate: failures since the rotation against what the
// window before it (busiest tenth left out, see baseline) would give over
// the same time.
func (d *rotationDetector) checkJump(g *FailureGroup, r *rotation, fb *failureBuckets) {
	ms := g.Last
	w := d.cfg.RotationWindow.Milliseconds()
	elapsed := float64(max(ms-r.ms, 1)) / (failureBucketS * 1000)
	jumped := func(b *failureBuckets) (int, int, bool) {
		before, after := b.sum(r.ms-w, r.ms), b.sum(r.ms, r.ms+w)
		expected := b.baseline(r.ms-w, r.ms) * max(elapsed, 1)
		return before, after, after >= d.cfg.RotationMinFailures && float64(after) >= d.cfg.RotationJumpFactor*max(expected, 1)
	}
	before, after, svcJumped := jumped(fb)
	if _, _, fleetJumped := jumped(d.fleet); !svcJumped && !fleetJumped {
		if d.book.lookup(finding.KeyRotationBreak, "kid:"+r.kid) == nil {
			d.checkUnknownKid(g)
		}
		return
	}
	d.raise(g, r.kid, "after_rotation", r, before, after)
}

// checkUnknownKid counts unknown_kid failures of a kid nobody announced. A
// bad_signature means the validator knew the kid, so it does not count.
func (d *rotationDetector) checkUnknownKid(g *FailureGroup) {
	if g.Kid == "" || g.Outcome != event.UnknownKid {
		return
	}
	k := hashID(g.Kid)
	s, _, _ := d.kids.get(k)
	if s.known {
		return
	}
	s.failures += g.Count
	d.kids.put(k, s, g.Last+kidTTLms)
	if int(s.failures) >= d.cfg.UnknownKidMinFailures {
		d.raise(g, g.Kid, "unknown_kid", nil, 0, int(s.failures))
	}
}

// rotationEvidence: the kid, failures before and after, and each service.
type rotationEvidence struct {
	flavor    string
	kid       string
	prevKid   string
	rotatedAt int64
	services  map[string]*[2]int // service → failures before, after
}

func (ev *rotationEvidence) render(m map[string]any) {
	m["signals"] = []string{ev.flavor}
	m["kid"] = ev.kid
	if ev.prevKid != "" {
		m["prev_kid"] = ev.prevKid
	}
	if ev.rotatedAt != 0 {
		m["rotated_at"] = msTime(ev.rotatedAt)
	}
	names := make([]string, 0, len(ev.services))
	for s := range ev.services {
		names = append(names, s)
	}
	slices.Sort(names)
	before, after := 0, 0
	list := make([]map[string]any, 0, len(names))
	for _, s := range names {
		c := ev.services[s]
		before += c[0]
		after += c[1]
		list = append(list, map[string]any{"service": s, "failures_before": c[0], "failures_after": c[1]})
	}
	m["failures_before"] = before
	m["failures_after"] = after
	m["services"] = list
}

func (d *rotationDetector) raise(g *FailureGroup, kid, flavor string, r *rotation, before, after int) {
	rec, _ := d.book.raise(signal{kind: finding.KeyRotationBreak, key: "kid:" + kid, ts: g.Last,
		ids:    ids{service: g.Service, issuer: g.Issuer, region: g.Region, kid: kid},
		detail: flavor})
	ev, _ := rec.ev.(*rotationEvidence)
	if ev == nil {
		ev = &rotationEvidence{kid: strings.Clone(kid), services: map[string]*[2]int{}}
		rec.ev = ev
	}
	ev.flavor = flavor
	if r != nil {
		ev.flavor, ev.prevKid, ev.rotatedAt = flavor, r.prevKid, r.ms
	}
	c := ev.services[g.Service]
	if c == nil {
		c = &[2]int{}
		ev.services[g.Service] = c
	}
	c[0], c[1] = before, after
	rec.f.Action = rotationAction(ev)
	d.book.touch(rec)
}

func rotationAction(ev *rotationEvidence) string {
	names := make([]string, 0, len(ev.services))
	for s := range ev.services {
		names = append(names, s)
	}
	slices.Sort(names)
	svcs := strings.Join(names, ", ")
	if ev.rotatedAt != 0 {
		return fmt.Sprintf("Validation broke after rotating to kid %s at %s: publish kid %s in the JWKS and purge the JWKS cache of %s, or roll the signer back to %s until they pick it up.",
			ev.kid, svcs, ev.kid, svcs, orUnknown(ev.prevKid))
	}
	return fmt.Sprintf("Tokens signed with kid %s, which no issuer announced, are failing at %s: if it is a new key, publish it in the JWKS and purge those services' JWKS cache; if not, someone is forging tokens: find the clients sending them.", ev.kid, svcs)
}

func orUnknown(s string) string {
	if s == "" {
		return "the previous key"
	}
	return s
}
