package gen

import (
	"net/netip"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// audience is the aud every access token carries and every validator wants;
// a bad_audience rejection presents otherAudience.
const (
	audience      = "https://api.example.com"
	otherAudience = "https://admin.example.com"
)

// pool keeps a number of sessions of a client (or of the weighted ordinary
// clients when client is nil) alive: a session that ends is replaced.
type pool struct {
	client *client
	target int
}

type token struct {
	id       string
	iat, exp time.Time
	kid      string
	bytes    int32
}

// actor is whoever presents a session's tokens: the session's own device,
// or an attacker holding a stolen token.
type actor struct {
	device   string
	net      *network
	ip       netip.Addr
	popFails bool        // presents a DPoP-bound token without its key
	mark     *truthEntry // marked by this actor's next event
}

type session struct {
	id       string
	c        *client
	u        *user
	a        *actor
	ttl      time.Duration
	family   string
	access   token
	refresh  token
	reactive bool // refreshes only after a request is rejected as expired
	pending  bool // a refresh is already scheduled after a rejection
	ends     time.Time
	done     bool
	pool     *pool
	gen      int // bumped on every token change; stale refresh actions check it
	rev      *revocation
	// onRefresh runs once after the session's own next refresh, with the
	// refresh token it presented: how scripts hook a family's rotation.
	onRefresh func(parent token)
}

// revocation is a revoke and how each service learns about it.
type revocation struct {
	at      time.Time
	target  string // session, token, family
	tokenID string // for target token
	// fast: every service rejects at once (no cache delay).
	fast bool
	// slow is the one service that learns late (slowDelay), or never
	// (slowDelay < 0).
	slow      *service
	slowDelay time.Duration
	delays    map[*service]time.Duration
	truth     *truthEntry
}

// covers reports whether tok falls under the revoke: tokens issued after it
// belong to a later login, and a token revoke covers only that token.
func (rv *revocation) covers(tok *token) bool {
	if tok.iat.After(rv.at) {
		return false
	}
	return rv.target != "token" || tok.id == rv.tokenID
}

// delay is how long svc keeps accepting tokens rv covers: a random part of
// its revocation-cache TTL, unless the scenario says otherwise.
func (g *Generator) delay(rv *revocation, svc *service) time.Duration {
	switch {
	case rv.fast:
		return 0
	case svc == rv.slow && rv.slowDelay < 0:
		return 1 << 62
	case svc == rv.slow:
		return rv.slowDelay
	}
	d, ok := rv.delays[svc]
	if !ok {
		d = time.Duration(g.r.Float64() * float64(time.Duration(svc.cacheTTL)*time.Second))
		if rv.delays == nil {
			rv.delays = map[*service]time.Duration{}
		}
		rv.delays[svc] = d
	}
	return d
}

// usersWanted is how many distinct users a client needs so that users come
// back for several sessions without one user holding dozens at once.
func (g *Generator) usersWanted(p *pool, c *client) int {
	if p == nil || p.client != nil {
		n := 10
		if p != nil {
			n = p.target * 3 / 2
		}
		return n
	}
	return int(c.weight/g.w.total*float64(g.spec.Sessions)*1.5) + 1
}

func (g *Generator) newSession(p *pool, c *client, u *user) *session {
	if u == nil {
		u = g.w.userOf(g.r, c, g.usersWanted(p, c))
	}
	a := &actor{device: u.device, net: u.net}
	a.ip = u.net.host(g.r)
	return &session{
		id:       b64ID(g.r, 16),
		c:        c,
		u:        u,
		a:        a,
		ttl:      c.accessTTL,
		family:   hexID(g.r, 12),
		reactive: g.r.IntN(10) < 3,
		pool:     p,
	}
}

func (g *Generator) lifetime() time.Duration {
	return max(time.Minute, g.exp(meanSession))
}

// resumeSession adds a session that was already going when the stream
// starts: its tokens were issued before now, so no issue event is seen.
func (g *Generator) resumeSession(p *pool, c *client, now time.Time) *session {
	s := g.newSession(p, c, nil)
	age := time.Duration(g.r.Float64() * 0.7 * float64(s.ttl))
	if s.reactive {
		age = time.Duration(g.r.Float64() * float64(s.ttl))
	}
	s.access = g.newAccess(s, now.Add(-age))
	s.refresh = g.newRefresh(s, now.Add(-age))
	s.ends = now.Add(g.lifetime())
	g.q.push(action{at: now.Add(g.nextRequestGap()), op: opRequest, s: s})
	g.scheduleRefresh(s)
	return s
}

// startSession schedules a new login for the pool.
func (g *Generator) startSession(p *pool, at time.Time) {
	s := g.newSession(p, g.pickClient(p), nil)
	s.ends = at.Add(g.lifetime())
	g.q.push(action{at: at, op: opStart, s: s})
}

func (g *Generator) newAccess(s *session, iat time.Time) token {
	return token{id: hexID(g.r, 16), iat: iat, exp: iat.Add(s.ttl), kid: s.c.issuer.kid, bytes: g.accessBytes(s.c)}
}

func (g *Generator) newRefresh(s *session, iat time.Time) token {
	return token{id: hexID(g.r, 16), iat: iat, exp: iat.Add(g.spec.RefreshTTL), kid: s.c.issuer.kid, bytes: int32(560 + g.r.IntN(200))}
}

// base is an event of kind at svc for session s presented by a, stamped now.
func (g *Generator) base(kind event.Kind, svc *service, s *session, a *actor, req, trace string) event.Event {
	if a.mark != nil {
		g.mark(a.mark)
		a.mark = nil
	}
	return event.Event{
		TS: g.clockOf(svc), Kind: kind, Outcome: event.OK, Service: svc.name,
		SessionID: s.id, Subject: s.u.subject, ClientID: s.c.id,
		Issuer: s.c.issuer.url, Region: s.c.region,
		IP: a.ip, ASN: a.net.asn, Country: a.net.country.code, Device: a.device,
		RequestID: req, TraceID: trace,
	}
}

func setToken(e *event.Event, tok *token, tokenType string) {
	e.TokenID, e.TokenType, e.Kid, e.IAT, e.EXP, e.TokenBytes = tok.id, tokenType, tok.kid, tok.iat, tok.exp, tok.bytes
}

func (g *Generator) emit(e event.Event) { g.out = append(g.out, e) }

func (g *Generator) ids() (req, trace string) { return hexID(g.r, 8), hexID(g.r, 16) }

// login issues the session's first access and refresh tokens at the IdP.
func (g *Generator) login(s *session) {
	s.access = g.newAccess(s, g.now)
	s.refresh = g.newRefresh(s, g.now)
	req, trace := g.ids()
	for _, tok := range []struct {
		t   *token
		typ string
	}{{&s.access, "access"}, {&s.refresh, "refresh"}} {
		e := g.base(event.KindIssue, g.w.idp, s, s.a, req, trace)
		setToken(&e, tok.t, tok.typ)
		e.Audience = audience
		if tok.typ == "refresh" {
			e.FamilyID = s.family
		}
		e.LatencyMS, e.HasLatency, e.HTTPStatus = g.latency(g.w.idp.latencyMedian), true, 200
		g.emit(e)
	}
	g.q.push(action{at: g.now.Add(g.uniform(300*time.Millisecond, 3*time.Second)), op: opRequest, s: s})
	g.scheduleRefresh(s)
}

// scheduleRefresh plans a proactive client's next refresh at 75-90 % of its
// access token's lifetime; lazy (reactive) clients wait for a 401.
func (g *Generator) scheduleRefresh(s *session) {
	if s.reactive {
		return
	}
	at := s.access.iat.Add(time.Duration((0.75 + 0.15*g.r.Float64()) * float64(s.ttl)))
	if at.Before(g.now) {
		at = g.now.Add(g.uniform(0, 30*time.Second))
	}
	g.q.push(action{at: at, op: opRefresh, s: s, gen: s.gen})
}

// request is one client request: through the gateway to a backend, or
// straight to a backend.
func (g *Generator) request(s *session) {
	if s.done {
		return
	}
	if !g.now.Before(s.ends) {
		g.endSession(s)
		return
	}
	o := g.send(s, s.a, s.access)
	switch o {
	case event.Expired:
		// A client refreshes when told its token expired, unless the token
		// is young by its own reckoning: then it blames the validator and
		// does not hammer the IdP (a skewed validator would otherwise set
		// off a refresh storm in every family it sees).
		if !s.pending && g.now.Sub(s.access.iat) >= s.ttl/2 {
			s.pending = true
			g.q.push(action{at: g.now.Add(g.uniform(50*time.Millisecond, 400*time.Millisecond)), op: opRefresh, s: s, gen: s.gen})
		}
	case event.Revoked:
		// The app drops a session whose token was revoked under it.
		g.finish(s)
		return
	}
	g.q.push(action{at: g.now.Add(g.nextRequestGap()), op: opRequest, s: s})
}

// send presents tok on behalf of a on a random path and returns the first
// validator's outcome; a gateway that accepts forwards to the backend.
func (g *Generator) send(s *session, a *actor, tok token) event.Outcome {
	req, trace := g.ids()
	backend := g.w.backend(g.r)
	if g.r.IntN(10) < 3 {
		return g.validate(backend, s, a, &tok, req, trace)
	}
	o := g.validate(g.w.gateway, s, a, &tok, req, trace)
	if o == event.OK {
		hopAt := g.now.Add(time.Duration(g.latencyDur(g.w.gateway.latencyMedian)) + g.uniform(300*time.Microsecond, 2*time.Millisecond))
		g.q.push(action{at: hopAt, op: opHop, s: s, a: a, tok: tok, svc: backend, req: req, trace: trace})
	}
	return o
}

// sendTo presents tok straight to svc.
func (g *Generator) sendTo(s *session, a *actor, tok token, svc *service) event.Outcome {
	req, trace := g.ids()
	return g.validate(svc, s, a, &tok, req, trace)
}

func (g *Generator) latencyDur(median float64) time.Duration {
	return time.Duration(median * float64(time.Millisecond))
}

// hop is the backend's validation of a forwarded request, sometimes
// followed by an introspection.
func (g *Generator) hop(s *session, a *actor, tok token, svc *service, req, trace string) {
	o := g.validate(svc, s, a, &tok, req, trace)
	if o == event.OK && svc.introspects && g.r.IntN(5) == 0 {
		g.introspect(svc, s, a, &tok, req, trace)
	}
}

// validate emits svc's validate event for tok and returns its outcome.
func (g *Generator) validate(svc *service, s *session, a *actor, tok *token, req, trace string) event.Outcome {
	e := g.base(event.KindValidate, svc, s, a, req, trace)
	setToken(&e, tok, "access")
	e.Audience, e.ExpectedAudience, e.CacheTTLS = audience, audience, svc.cacheTTL
	o := g.decide(svc, s, tok)
	if s.c.binding != "" {
		e.Binding, e.BindingOK = s.c.binding, event.True
		if a.popFails {
			e.BindingOK = event.False
			if o == event.OK {
				o = event.Denied
			}
		}
	}
	median := svc.latencyMedian
	if o == event.OK {
		switch x := g.r.IntN(10000); {
		case x < 8:
			o, median = event.Error, median*20
		case x < 11:
			o, e.Audience = event.BadAudience, otherAudience
		case x < 12:
			o = event.Malformed
		}
	}
	e.Outcome, e.HTTPStatus = o, httpStatus(o, event.KindValidate)
	e.LatencyMS, e.HasLatency = g.latency(median), true
	g.emit(e)
	return o
}

// decide is the validator's verdict on tok: signature key first, then the
// token's times by the validator's own clock, then revocation.
func (g *Generator) decide(svc *service, s *session, tok *token) event.Outcome {
	if !s.c.issuer.known[tok.kid] {
		return event.UnknownKid
	}
	if b := svc.broken[tok.kid]; b != nil && (g.now.Before(b.until) || b.hits < b.minHits) {
		b.hits++
		g.mark(b.truth)
		return b.outcome
	}
	clock := g.clockOf(svc)
	skewed := !clock.Equal(g.now)
	if tok.iat.After(clock.Add(nbfLeeway)) {
		if skewed && !tok.iat.After(g.now.Add(nbfLeeway)) {
			g.markAt(svc.skew.truth, clock)
		}
		return event.NotYetValid
	}
	if clock.After(tok.exp) {
		if skewed && !g.now.After(tok.exp) {
			g.markAt(svc.skew.truth, clock)
		}
		return event.Expired
	}
	if rv := s.rev; rv != nil && rv.covers(tok) {
		if !g.now.Before(rv.at.Add(g.delay(rv, svc))) {
			return event.Revoked
		}
		if svc == rv.slow && g.now.Sub(rv.at) >= time.Minute {
			g.mark(rv.truth)
		}
	}
	return event.OK
}

// clockOf is what svc's clock says now: true time, unless its clock is
// skewed. A service stamps its events with its own clock, so a skewed
// service's events carry skewed timestamps (EVENTS.md: ts is when the
// emitter saw it).
func (g *Generator) clockOf(svc *service) time.Time {
	if sk := svc.skew; sk != nil && !g.now.Before(sk.from) {
		return g.now.Add(sk.offset)
	}
	return g.now
}

// introspect is a backend asking the IdP about tok: the IdP knows at once
// whether it is revoked or expired.
func (g *Generator) introspect(svc *service, s *session, a *actor, tok *token, req, trace string) {
	e := g.base(event.KindIntrospect, svc, s, a, req, trace)
	setToken(&e, tok, "access")
	e.Audience, e.ExpectedAudience = audience, audience
	o := event.OK
	switch {
	case s.rev != nil && s.rev.covers(tok):
		o = event.Revoked
	case g.now.After(tok.exp):
		o = event.Expired
	case g.r.IntN(200) == 0:
		o = event.Error
	}
	e.Outcome, e.HTTPStatus = o, httpStatus(o, event.KindIntrospect)
	e.LatencyMS, e.HasLatency = g.latency(8), true
	g.emit(e)
}

// sessionRefresh is the session's own refresh with rotation.
func (g *Generator) sessionRefresh(s *session) {
	s.pending = false
	if rv := s.rev; rv != nil && rv.target != "token" {
		g.exchange(s, s.a, s.refresh, event.Revoked)
		g.finish(s)
		return
	}
	parent := s.refresh
	s.access, s.refresh = g.exchange(s, s.a, parent, event.OK)
	s.gen++
	g.scheduleRefresh(s)
	if hook := s.onRefresh; hook != nil {
		s.onRefresh = nil
		hook(parent)
	}
}

// exchange emits the IdP's refresh event for parent presented by a and, on
// ok, returns the new access and refresh tokens.
func (g *Generator) exchange(s *session, a *actor, parent token, o event.Outcome) (access, refresh token) {
	req, trace := g.ids()
	e := g.base(event.KindRefresh, g.w.idp, s, a, req, trace)
	if o == event.OK {
		access, refresh = g.newAccess(s, g.now), g.newRefresh(s, g.now)
		setToken(&e, &access, "access")
	} else {
		setToken(&e, &parent, "refresh")
	}
	e.TokenBytes = parent.bytes
	e.ParentTokenID, e.FamilyID, e.Audience = parent.id, s.family, audience
	e.Outcome, e.HTTPStatus = o, httpStatus(o, event.KindRefresh)
	e.LatencyMS, e.HasLatency = g.latency(28), true
	g.emit(e)
	return access, refresh
}

// revoke emits the IdP's revoke of s's tokens and applies rv to s.
func (g *Generator) revoke(s *session, rv *revocation, reason string) {
	rv.at = g.now
	rv.tokenID = s.access.id
	req, trace := g.ids()
	e := g.base(event.KindRevoke, g.w.idp, s, s.a, req, trace)
	setToken(&e, &s.access, "access")
	e.FamilyID, e.Target, e.Reason = s.family, rv.target, reason
	e.HTTPStatus, e.LatencyMS, e.HasLatency = 200, g.latency(12), true
	g.emit(e)
	s.rev = rv
}

// endSession ends an ordinary session: four in ten log out (a revoke), and
// some of those have a request still in flight that meets the revoke.
func (g *Generator) endSession(s *session) {
	if g.r.IntN(10) < 4 {
		g.revoke(s, &revocation{target: "session"}, "logout")
		if g.r.IntN(7) == 0 {
			tok := s.access
			g.at(g.now.Add(g.uniform(200*time.Millisecond, 8*time.Second)), func() { g.send(s, s.a, tok) })
		}
	}
	g.finish(s)
}

// finish stops the session and, for a pooled one, starts its replacement.
func (g *Generator) finish(s *session) {
	if s.done {
		return
	}
	s.done = true
	if s.pool != nil {
		g.startSession(s.pool, g.now.Add(g.uniform(0, 5*time.Second)))
	}
}

// rotate makes the issuer sign with a new kid and emits key_rotate.
func (g *Generator) rotate(iss *issuer) {
	prev := iss.kid
	iss.kid = newKid(g.r, iss)
	iss.known[iss.kid] = true
	g.emit(event.Event{
		TS: g.now, Kind: event.KindKeyRotate, Outcome: event.OK, Service: g.w.idp.name,
		Issuer: iss.url, Region: iss.region, Kid: iss.kid, PrevKid: prev,
	})
}
