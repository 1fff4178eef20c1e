// Package gen generates realistic, deterministic auth traffic as event.Event
// values, with attacks and look-alikes injected on request and the ground
// truth recorded for eval.
//
// The generator is a discrete-event simulation: sessions log in at the IdP,
// present their access token at the gateway and at backend services, refresh
// with rotation before (or, for lazy clients, just after) expiry, introspect
// now and then, and end quietly or with a logout that revokes. Each action
// runs at its simulated instant and emits events stamped with it, so events
// come out in timestamp order. Everything random comes from one source seeded
// by Spec.Seed and is drawn in a fixed order, so a spec always produces the
// same events.
//
// Events come out in the order things happen, which is timestamp order with
// one deliberate exception: a service whose clock is skewed (clock_skew)
// stamps its events with its own wrong clock, as a real emitter would, so
// its events carry timestamps minutes off their neighbours' — the way a
// Kafka topic would carry them.
//
// Attacks use the same event shapes and statistics as ordinary traffic;
// nothing in an event says it is malicious. What was injected is known only
// to Truth.
//
// Shapes the detectors rely on:
//   - issue: one event per token at login (token_type access, then refresh
//     with family_id).
//   - refresh: token_id is the access token the exchange issued (iat/exp are
//     its), parent_token_id the refresh token presented, family_id the
//     rotation family. The rotated refresh token is the next exchange's
//     parent_token_id. A refused exchange (outcome reused or revoked) carries
//     the presented refresh token as both token_id and parent_token_id.
//   - revoke: emitted by the IdP with target session, token or family and
//     the session's ids; validators then reject the covered tokens within
//     their revocation-cache TTL (cache_ttl_s on their validate events).
//   - key_rotate: the IdP's new kid and prev_kid, per issuer; tokens signed
//     with the previous kid stay valid until they expire.
//   - ts is the emitter's clock. A validator with a skewed clock decides and
//     stamps with it, so it rejects tokens whose exp (ahead) or iat (behind)
//     sits within minutes of its ts, far more often than other services.
package gen

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/tokenwatch/tokenwatch/eval"
	"github.com/tokenwatch/tokenwatch/event"
)

// meanSession is how long an ordinary session lasts on average.
const meanSession = 25 * time.Minute

// eventsPerRequest is the average number of validate/introspect events one
// client request makes (via the gateway, 70 %, it is validated twice).
const eventsPerRequest = 1.75

// nbfLeeway is the clock leeway validators allow on iat; exp has none.
const nbfLeeway = 30 * time.Second

// Generator produces the events of one Spec. It is not safe for concurrent
// use.
type Generator struct {
	spec    Spec
	r       *rand.Rand
	w       *world
	now     time.Time
	end     time.Time
	q       queue
	out     []event.Event
	truth   []*truthEntry
	reqRate float64 // client requests per second per session
	planned int
	// skewed counts clock-skew instances per service, so each instance goes
	// to a service that has had the fewest: two skews of one service
	// close together would read as one flapping clock, one incident.
	skewed map[*service]int
	// audienceUsed: backends an audience scenario took (one each).
	audienceUsed map[*service]bool
	// own is the random stream of the scenarios added after the first
	// set (ownRand): drawing from it leaves a seed's other events
	// as they were.
	own *rand.Rand
}

// truthEntry is a ground-truth record that becomes visible (and gets its
// Start) when its first malicious event is emitted.
type truthEntry struct {
	eval.Truth
	started bool
}

// New returns a generator for spec, or the error Validate finds.
func New(spec Spec) (*Generator, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	spec = spec.withDefaults()
	r := rand.New(rand.NewPCG(spec.Seed, spec.Seed^0x9e3779b97f4a7c15))
	g := &Generator{
		spec: spec,
		r:    r,
		w:    newWorld(spec, r),
		now:  spec.Start,
		end:  spec.Start.Add(spec.Duration),
		own:  rand.New(rand.NewPCG(spec.Seed^0x6a09e667f3bcc909, spec.Seed)),
	}
	g.init()
	return g, nil
}

// Spec returns the spec with its defaults filled in.
func (g *Generator) Spec() Spec { return g.spec }

// All generates the whole spec's traffic at once (tests and small runs;
// Next streams it in bounded memory).
func All(spec Spec) ([]event.Event, error) {
	g, err := New(spec)
	if err != nil {
		return nil, err
	}
	var out []event.Event
	for b := g.Next(nil); b != nil; b = g.Next(nil) {
		out = append(out, b...)
	}
	return out, nil
}

// Next appends the next events (in the order they happen, see the package
// doc) to dst, as many as fit in
// dst's capacity (at least one batch of 512 when it has no room), and
// returns it. It returns nil once the simulated Duration is over.
func (g *Generator) Next(dst []event.Event) []event.Event {
	want := cap(dst) - len(dst)
	if want <= 0 {
		want = 512
	}
	n0 := len(dst)
	g.out = dst
	for len(g.out)-n0 < want && g.q.len() > 0 {
		if !g.q.peek().at.Before(g.end) {
			g.q = queue{}
			break
		}
		a := g.q.pop()
		g.now = a.at
		g.run(a)
	}
	out := g.out
	g.out = nil
	if len(out) == n0 {
		return nil
	}
	return out
}

// Done reports whether the simulated Duration is over.
func (g *Generator) Done() bool { return g.q.len() == 0 || !g.q.peek().at.Before(g.end) }

// Truth returns what was injected so far, ordered by Start: every scenario
// instance whose first malicious (or look-alike) event has been emitted.
// Call it after Next returned nil for the whole run's truth.
func (g *Generator) Truth() []eval.Truth {
	var out []eval.Truth
	for _, t := range g.truth {
		if t.started {
			out = append(out, t.Truth)
		}
	}
	slices.SortStableFunc(out, func(a, b eval.Truth) int {
		return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.Scenario, b.Scenario))
	})
	return out
}

// Planned is how many scenario instances the spec asked for; Truth has as
// many entries once all of them played out.
func (g *Generator) Planned() int { return g.planned }

// newTruth registers a truth entry for scenario; it is reported once marked.
func (g *Generator) newTruth(scenario string, fill func(*eval.Truth)) *truthEntry {
	sc, _ := scenarioByName(scenario)
	t := &truthEntry{Truth: eval.Truth{Kind: sc.Kind, Scenario: scenario, Attack: sc.Attack}}
	if fill != nil {
		fill(&t.Truth)
	}
	g.truth = append(g.truth, t)
	return t
}

// mark stamps t with the current instant the first time its incident shows.
func (g *Generator) mark(t *truthEntry) { g.markAt(t, g.now) }

// markAt stamps t with ts, the timestamp of the event that shows it (which
// a skewed emitter puts off the true instant).
func (g *Generator) markAt(t *truthEntry, ts time.Time) {
	if t != nil && !t.started {
		t.started = true
		t.Start = ts
	}
}

// identify fills a truth entry's session-level ids.
func identify(t *eval.Truth, s *session) {
	t.SessionID, t.FamilyID, t.Subject, t.ClientID = s.id, s.family, s.u.subject, s.c.id
}

func (g *Generator) init() {
	total := g.spec.Sessions
	main := &pool{target: g.spec.Sessions}
	pools := []*pool{main}
	for i := 0; i < g.spec.Inject[ScenarioBusyClient]; i++ {
		c := g.w.newClientOfKind(g.spec, g.r, pick(g.r, []string{"web", "android", "ios"}), "", 0)
		p := &pool{client: c, target: max(30, g.spec.Sessions/6)}
		pools = append(pools, p)
		total += p.target
		g.planned++
		g.mark(g.newTruth(ScenarioBusyClient, func(t *eval.Truth) { t.ClientID = c.id }))
	}
	for i := 0; i < g.spec.Inject[ScenarioRefreshRateClient]; i++ {
		c := g.w.newClientOfKind(g.spec, g.r, "web", "", 0)
		p := &pool{client: c, target: 3}
		pools = append(pools, p)
		total += p.target
	}
	g.reqRate = g.spec.Rate / (float64(total) * eventsPerRequest)
	for _, p := range pools {
		for i := 0; i < p.target; i++ {
			g.resumeSession(p, g.pickClient(p), g.now)
		}
	}
	if every := g.spec.KeyRotateEvery; every > 0 {
		for _, iss := range g.w.issuers {
			g.at(g.now.Add(time.Duration(g.r.Float64()*float64(every))), func() { g.scheduledRotation(iss) })
		}
	}
	g.placeScenarios(pools)
}

func (g *Generator) pickClient(p *pool) *client {
	if p.client != nil {
		return p.client
	}
	return g.w.pickClient(g.r, nil)
}

func (g *Generator) scheduledRotation(iss *issuer) {
	g.rotate(iss)
	g.at(g.now.Add(g.spec.KeyRotateEvery), func() { g.scheduledRotation(iss) })
}

// placeScenarios spreads each scenario's instances evenly over the part of
// the run where they fit, with jitter.
func (g *Generator) placeScenarios(pools []*pool) {
	clientPools := pools[1+g.spec.Inject[ScenarioBusyClient]:]
	for _, name := range scenarioOrder(g.spec.Inject) {
		if name == ScenarioBusyClient {
			continue
		}
		sc, _ := scenarioByName(name)
		n := g.spec.Inject[name]
		lo := g.spec.Start.Add(time.Minute)
		if name == ScenarioRefreshRateClient {
			lo = g.spec.Start.Add(max(5*time.Minute, g.spec.Duration*45/100))
		}
		hi := g.end.Add(-sc.span(g.spec))
		if hi.Before(lo) {
			hi = lo
		}
		rnd := g.r
		if ownRand[name] {
			rnd = g.own
		}
		for i := 0; i < n; i++ {
			frac := (float64(i) + 0.1 + 0.8*rnd.Float64()) / float64(n)
			t := lo.Add(time.Duration(frac * float64(hi.Sub(lo))))
			i := i
			g.planned++
			switch name {
			case ScenarioRefreshRateClient:
				p := clientPools[i]
				g.at(t, func() { g.clientSurge(p.client) })
			default:
				launch := launchers[name]
				g.at(t, func() { launch(g, i) })
			}
		}
	}
}

// at schedules fn at t.
func (g *Generator) at(t time.Time, fn func()) { g.q.push(action{at: t, op: opFunc, fn: fn}) }

func (g *Generator) run(a action) {
	switch a.op {
	case opFunc:
		a.fn()
	case opRequest:
		g.request(a.s)
	case opHop:
		g.hop(a.s, a.a, a.tok, a.svc, a.req, a.trace)
	case opRefresh:
		if a.s.gen == a.gen && !a.s.done {
			g.sessionRefresh(a.s)
		}
	case opStart:
		g.login(a.s)
	}
}

// --- random helpers ---

func (g *Generator) uniform(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(g.r.Float64()*float64(hi-lo))
}

func (g *Generator) exp(mean time.Duration) time.Duration {
	return time.Duration(g.r.ExpFloat64() * float64(mean))
}

// latency is log-normal around median ms with a 1 % slow tail, in µs steps.
func (g *Generator) latency(median float64) float64 {
	v := median * math.Exp(0.5*g.r.NormFloat64())
	if g.r.IntN(100) == 0 {
		v *= 4 + 16*g.r.Float64()
	}
	return math.Round(v*1000) / 1000
}

func (g *Generator) accessBytes(c *client) int32 {
	v := 980 + float64(c.extra) + 90*g.r.NormFloat64()
	return int32(min(1400, max(700, v)))
}

func (g *Generator) nextRequestGap() time.Duration {
	return time.Duration(g.r.ExpFloat64() / g.reqRate * float64(time.Second))
}

func httpStatus(o event.Outcome, k event.Kind) int32 {
	switch {
	case o == event.OK:
		return 200
	case o == event.Error:
		return 503
	case o == event.Denied:
		return 403
	case k == event.KindRefresh:
		return 400 // invalid_grant
	default:
		return 401
	}
}

// addrIn returns an address in n other than avoid.
func (g *Generator) addrIn(n *network, avoid netip.Addr) netip.Addr {
	for {
		if a := n.host(g.r); a != avoid {
			return a
		}
	}
}

func (g *Generator) String() string {
	return fmt.Sprintf("gen(seed=%d, %v from %s, %.0f ev/s, %d sessions)", g.spec.Seed, g.spec.Duration, g.spec.Start.Format(time.RFC3339), g.spec.Rate, g.spec.Sessions)
}
