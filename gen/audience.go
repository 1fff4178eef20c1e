package gen

import (
	"time"

	"github.com/tokenwatch/tokenwatch/eval"
	"github.com/tokenwatch/tokenwatch/event"
)

// The audience_misuse scenarios (SIGNALS.md, "More detections"): two
// attacks, one per shape, and the two look-alikes SIGNALS.md names. They
// draw from the generator's own stream (ownStream), placement included, so
// adding them left every other event of a seed as it was.

// ownStream makes the scenarios added after the first set draw from a
// random stream of their own until the returned func restores the main one.
func (g *Generator) ownStream() func() {
	saved := g.r
	g.r = g.own
	return func() { g.r = saved }
}

// audienceSession is an ordinary client's session with its own device,
// for the audience scenarios; it is not scheduled (it does nothing but
// what the scenario makes it do).
func (g *Generator) audienceSession() (*session, *actor) {
	c := g.w.pickClient(g.r, nil)
	u := g.w.newUser(g.r, c) // not added to the client's users: the world stays as it was
	s := &session{id: hexID(g.r, 16), c: c, u: u, ttl: c.accessTTL, family: hexID(g.r, 16)}
	a := &actor{device: u.device, net: u.net, ip: u.net.host(g.r)}
	s.a = a
	return s, a
}

// audienceToken is an access token of s's issuer minted now.
func (g *Generator) audienceToken(s *session) token {
	return token{id: hexID(g.r, 16), iat: g.now, exp: g.now.Add(s.ttl), kid: s.c.issuer.kid, bytes: g.accessBytes(s.c)}
}

// audienceValidation emits svc's validation of tok with the audience it
// carries (got), the one svc wants, and svc's verdict.
func (g *Generator) audienceValidation(svc *service, s *session, a *actor, tok token, got, want string, o event.Outcome) {
	req, trace := g.ids()
	e := g.base(event.KindValidate, svc, s, a, req, trace)
	setToken(&e, &tok, "access")
	e.Audience, e.ExpectedAudience, e.CacheTTLS = got, want, svc.cacheTTL
	e.Outcome, e.HTTPStatus = o, httpStatus(o, event.KindValidate)
	e.LatencyMS, e.HasLatency = g.latency(svc.latencyMedian), true
	g.emit(e)
}

// audienceBackend picks a backend no other audience scenario used: two
// incidents at one service within the quiet period would be one finding.
func (g *Generator) audienceBackend() *service {
	if g.audienceUsed == nil {
		g.audienceUsed = map[*service]bool{}
	}
	for range 4 * len(g.w.backends) {
		if b := g.w.backend(g.r); !g.audienceUsed[b] {
			g.audienceUsed[b] = true
			return b
		}
	}
	return g.w.backend(g.r)
}

// audienceAccepted (attack): a backend that does not check audience accepts
// tokens the issuer minted for the admin API, from one client, for a few
// minutes.
func (g *Generator) audienceAccepted(int) {
	g.acceptedAudience(ScenarioAudienceAccepted, otherAudience)
}

// acceptedAudience: one client's token carrying audience got, accepted a
// few times over minutes by a backend that wants the usual audience.
func (g *Generator) acceptedAudience(scenario, got string) {
	defer g.ownStream()()
	svc := g.audienceBackend()
	s, a := g.audienceSession()
	a.mark = g.newTruth(scenario, func(t *eval.Truth) { t.Service = svc.name })
	tok := g.audienceToken(s)
	g.spread(g.now, g.uniform(2*time.Minute, 5*time.Minute), 6+g.r.IntN(10), func(int) {
		defer g.ownStream()()
		g.audienceValidation(svc, s, a, tok, got, audience, event.OK)
	})
}

// audienceProbe (attack): a stolen access token presented by an attacker to
// three or four other services within a few minutes, each of which wants
// its own audience and rejects it (bad_audience).
func (g *Generator) audienceProbe(int) {
	defer g.ownStream()()
	s, _ := g.audienceSession()
	tok := g.audienceToken(s)
	att := g.newAttacker(g.w.farNetwork(g.r, s.u.net))
	att.mark = g.newTruth(ScenarioAudienceProbe, func(t *eval.Truth) {
		t.TokenID, t.Subject, t.ClientID = tok.id, s.u.subject, s.c.id
	})
	n := min(3+g.r.IntN(2), len(g.w.backends))
	order := g.r.Perm(len(g.w.backends))[:n]
	g.spread(g.now, g.uniform(2*time.Minute, 6*time.Minute), n, func(j int) {
		defer g.ownStream()()
		svc := g.w.backends[order[j]]
		g.audienceValidation(svc, s, att, tok, audience, "https://"+svc.name+".example.com", event.BadAudience)
	})
}

// audienceMisrouted (look-alike): one misconfigured client sends its token
// to the same wrong service again and again; that service rejects it every
// time.
func (g *Generator) audienceMisrouted(int) {
	defer g.ownStream()()
	svc := g.audienceBackend()
	s, a := g.audienceSession()
	tok := g.audienceToken(s)
	a.mark = g.newTruth(ScenarioAudienceMisrouted, func(t *eval.Truth) { t.TokenID, t.Service, t.ClientID = tok.id, svc.name, s.c.id })
	g.spread(g.now, g.uniform(3*time.Minute, 6*time.Minute), 15+g.r.IntN(20), func(int) {
		defer g.ownStream()()
		g.audienceValidation(svc, s, a, tok, audience, "https://"+svc.name+".example.com", event.BadAudience)
	})
}

// audienceList (look-alike): a client whose tokens name several audiences
// (an RFC 7519 list, kept joined by commas) among them the one the service
// wants: accepted, rightly.
func (g *Generator) audienceList(int) {
	g.acceptedAudience(ScenarioAudienceList, otherAudience+","+audience)
}
