package gen

import (
	"net/netip"
	"slices"
	"time"

	"github.com/tokenwatch/tokenwatch/eval"
	"github.com/tokenwatch/tokenwatch/event"
)

// launchers start one instance (number i) of a scenario at the current
// instant. Most begin with a victim logging in, an ordinary session in every
// respect, and act on it minutes later.
var launchers = map[string]func(g *Generator, i int){
	ScenarioReplay:                  (*Generator).replay,
	ScenarioPoPFailure:              (*Generator).popFailure,
	ScenarioRefreshReuseIdP:         (*Generator).refreshReuseIdP,
	ScenarioRefreshReuseTwoDevices:  (*Generator).refreshReuseTwoDevices,
	ScenarioRefreshRateFamily:       (*Generator).refreshRateFamily,
	ScenarioRefreshNewDevice:        (*Generator).refreshNewDevice,
	ScenarioSlowRevocation:          func(g *Generator, i int) { g.revocationScenario(ScenarioSlowRevocation) },
	ScenarioRevocationNotPropagated: func(g *Generator, i int) { g.revocationScenario(ScenarioRevocationNotPropagated) },
	ScenarioFastRevocation:          func(g *Generator, i int) { g.revocationScenario(ScenarioFastRevocation) },
	ScenarioKeyRotationBreak:        (*Generator).keyRotationBreak,
	ScenarioUnknownKid:              (*Generator).unknownKid,
	ScenarioClockSkew:               func(g *Generator, i int) { g.clockSkew(ScenarioClockSkew, -1) },
	ScenarioClockSkewAhead:          func(g *Generator, i int) { g.clockSkew(ScenarioClockSkewAhead, 1) },
	ScenarioSameSubnet:              (*Generator).sameSubnet,
	ScenarioNATEgress:               (*Generator).natEgress,
	ScenarioDeviceMoves:             (*Generator).deviceMoves,
	ScenarioRefreshRace:             (*Generator).refreshRace,
	ScenarioKeyRotationHandled:      (*Generator).keyRotationHandled,
	ScenarioReplaySameCountry:       (*Generator).replaySameCountry,
	ScenarioRefreshReuseInGrace:     (*Generator).refreshReuseInGrace,
	ScenarioCGNATMobile:             (*Generator).cgnatMobile,
	ScenarioIPv6Privacy:             (*Generator).ipv6Privacy,
	ScenarioDualStack:               (*Generator).dualStack,
	ScenarioVPNSwitch:               (*Generator).vpnSwitch,
	ScenarioAudienceAccepted:        (*Generator).audienceAccepted,
	ScenarioAudienceProbe:           (*Generator).audienceProbe,
	ScenarioAudienceMisrouted:       (*Generator).audienceMisrouted,
	ScenarioAudienceList:            (*Generator).audienceList,
}

// victimSpec says which kind of session a scenario needs.
type victimSpec struct {
	fits     func(*client) bool // nil: any ordinary client
	kind     string             // client kind to create when no client fits
	binding  string
	net      func(*user) // adjusts the victim's home network
	fullTTL  bool        // give the victim the longest access lifetime
	reactive bool        // keep the client's lazy refresh (else proactive)
}

// newVictim logs in a fresh session for a scenario. It never ends on its
// own until release.
func (g *Generator) newVictim(v victimSpec) *session {
	c := g.w.pickClient(g.r, v.fits)
	if c == nil {
		c = g.w.newClientOfKind(g.spec, g.r, v.kind, v.binding, 0)
	}
	u := g.w.newUser(g.r, c)
	if v.net != nil {
		v.net(u)
	}
	s := g.newSession(nil, c, u)
	s.reactive = v.reactive && s.reactive
	if v.fullTTL {
		s.ttl = g.spec.AccessTTLMax
	}
	s.ends = g.end.Add(time.Hour)
	g.login(s)
	return s
}

// release lets a victim end like any session, some time after d.
func (g *Generator) release(s *session, d time.Duration) {
	s.ends = g.now.Add(d + g.lifetime())
}

func (g *Generator) notNAT(u *user) {
	if u.net.nat {
		nets := g.w.byRegion[u.net.country.region]
		u.net = nets[g.r.IntN(len(nets))]
	}
}

// endBeforeRefresh ends an address look-alike's session before its next
// refresh: a refresh from the new address would be a family refreshing from
// a network new to it, which SIGNALS.md counts as a refresh anomaly, and the
// look-alike is about the address change alone.
func (g *Generator) endBeforeRefresh(s *session) {
	s.ends = s.access.iat.Add(s.ttl * 7 / 10)
}

// newAttacker is a device that is not the victim's, on net.
func (g *Generator) newAttacker(net *network) *actor {
	return &actor{device: hexID(g.r, 16), net: net, ip: net.host(g.r)}
}

// spread schedules fn n times over [from, from+window), sorted and jittered.
func (g *Generator) spread(from time.Time, window time.Duration, n int, fn func(j int)) {
	offs := make([]time.Duration, n)
	for j := range offs {
		offs[j] = time.Duration((float64(j) + g.r.Float64()) / float64(n) * float64(window))
	}
	slices.Sort(offs)
	for j, off := range offs {
		g.at(from.Add(off), func() { fn(j) })
	}
}

// atFirstTokenUse runs fn at 20-40 % of the victim's first token lifetime,
// well before any refresh.
func (g *Generator) atFirstTokenUse(s *session, fn func()) {
	g.at(g.now.Add(time.Duration((0.2+0.2*g.r.Float64())*float64(s.ttl))), fn)
}

// replay: the victim's access token shows up from another device, on a
// network in another ASN and /24 on another continent, a few times within
// the token's lifetime.
func (g *Generator) replay(int) {
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.binding == "" }, kind: "web", net: g.notNAT})
	g.atFirstTokenUse(s, func() {
		tok := s.access
		att := g.newAttacker(g.w.farNetwork(g.r, s.a.net))
		att.mark = g.newTruth(ScenarioReplay, func(t *eval.Truth) { identify(t, s); t.TokenID = tok.id })
		window := min(4*time.Minute, tok.exp.Sub(g.now)-20*time.Second)
		g.spread(g.now, window, 3+g.r.IntN(6), func(int) { g.send(s, att, tok) })
		g.release(s, window)
	})
}

// popFailure: a DPoP-bound token presented by a device without the key,
// from the victim's country but another network: the proof fails.
func (g *Generator) popFailure(int) {
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.binding == "dpop" }, kind: "android", binding: "dpop", net: g.notNAT})
	g.atFirstTokenUse(s, func() {
		tok := s.access
		att := g.newAttacker(g.w.otherNetwork(g.r, s.a.net, s.a.net.country.code))
		att.popFails = true
		att.mark = g.newTruth(ScenarioPoPFailure, func(t *eval.Truth) { identify(t, s); t.TokenID = tok.id })
		window := min(3*time.Minute, tok.exp.Sub(g.now)-20*time.Second)
		g.spread(g.now, window, 3+g.r.IntN(4), func(int) { g.send(s, att, tok) })
		g.release(s, window)
	})
}

// refreshReuseIdP: after the victim rotated its refresh token, a thief
// presents the old one; the IdP answers reused and revokes the family, and
// the victim's next requests are rejected.
func (g *Generator) refreshReuseIdP(int) {
	s := g.newVictim(victimSpec{})
	s.onRefresh = func(parent token) {
		g.at(g.now.Add(g.uniform(30*time.Second, 3*time.Minute)), func() {
			att := g.newAttacker(g.w.farNetwork(g.r, s.a.net))
			att.mark = g.newTruth(ScenarioRefreshReuseIdP, func(t *eval.Truth) { identify(t, s); t.TokenID = parent.id })
			g.exchange(s, att, parent, event.Reused)
			g.at(g.now.Add(g.uniform(50*time.Millisecond, 500*time.Millisecond)), func() {
				g.revoke(s, &revocation{target: "family"}, "refresh_token_reuse")
				g.release(s, 2*time.Minute)
			})
		})
	}
}

// refreshReuseTwoDevices: a thief exchanges the parent the victim already
// exchanged, from another device minutes later, and the IdP (without reuse
// detection) accepts both; the thief then uses its new access token.
func (g *Generator) refreshReuseTwoDevices(int) {
	s := g.newVictim(victimSpec{})
	s.onRefresh = func(parent token) {
		g.at(g.now.Add(g.uniform(20*time.Second, 3*time.Minute)), func() {
			att := g.newAttacker(g.w.farNetwork(g.r, s.a.net))
			att.mark = g.newTruth(ScenarioRefreshReuseTwoDevices, func(t *eval.Truth) { identify(t, s); t.TokenID = parent.id })
			stolen, _ := g.exchange(s, att, parent, event.OK)
			g.spread(g.now.Add(time.Second), 2*time.Minute, 2+g.r.IntN(3), func(int) { g.send(s, att, stolen) })
			g.release(s, 3*time.Minute)
		})
	}
}

// refreshRateFamily: after a normal first refresh, the family refreshes
// every 5-20 s, 20-40 times, from the victim's own device.
func (g *Generator) refreshRateFamily(int) {
	s := g.newVictim(victimSpec{})
	s.onRefresh = func(token) {
		te := g.newTruth(ScenarioRefreshRateFamily, func(t *eval.Truth) { identify(t, s) })
		n := 20 + g.r.IntN(21)
		var step func(j int)
		step = func(j int) {
			if s.done {
				return
			}
			if j == 0 {
				g.mark(te)
			}
			s.access, s.refresh = g.exchange(s, s.a, s.refresh, event.OK)
			s.gen++
			if j+1 < n {
				g.at(g.now.Add(g.uniform(5*time.Second, 20*time.Second)), func() { step(j + 1) })
				return
			}
			g.scheduleRefresh(s)
			g.release(s, 2*time.Minute)
		}
		g.at(g.now.Add(g.uniform(30*time.Second, 90*time.Second)), func() { step(0) })
	}
}

// refreshNewDevice: the family's current refresh token is taken over by a
// new device on a far network; the victim's device goes quiet and the
// session carries on from the thief's device.
func (g *Generator) refreshNewDevice(int) {
	s := g.newVictim(victimSpec{})
	s.onRefresh = func(token) {
		wait := g.uniform(time.Minute, max(61*time.Second, s.ttl*2/5))
		g.at(g.now.Add(wait), func() {
			att := g.newAttacker(g.w.farNetwork(g.r, s.a.net))
			att.mark = g.newTruth(ScenarioRefreshNewDevice, func(t *eval.Truth) { identify(t, s) })
			s.a = att
			s.gen++ // the victim's own scheduled refresh no longer happens
			g.sessionRefresh(s)
			g.release(s, 2*s.ttl)
		})
	}
}

// refreshRace: one device sends its refresh twice within the 2 s grace
// window; the IdP answers both.
func (g *Generator) refreshRace(int) {
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.kind != "svc" }, kind: "web"})
	s.onRefresh = func(parent token) {
		g.at(g.now.Add(g.uniform(100*time.Millisecond, 1500*time.Millisecond)), func() {
			te := g.newTruth(ScenarioRefreshRace, func(t *eval.Truth) { identify(t, s); t.TokenID = parent.id })
			g.mark(te)
			g.exchange(s, s.a, parent, event.OK)
			g.release(s, 3*time.Minute)
		})
	}
}

// revocationScenario: the victim logs out a minute or two after login while
// its device keeps presenting the revoked token (a background tab, a sync
// job). Slow: one service accepts for 90-240 s. Not propagated: one service
// accepts until the token expires. Fast (look-alike): every service rejects
// at once.
func (g *Generator) revocationScenario(name string) {
	s := g.newVictim(victimSpec{fullTTL: true})
	g.at(g.now.Add(g.uniform(time.Minute, 150*time.Second)), func() {
		s.done = true
		tok := s.access
		rv := &revocation{target: "session"}
		var te *truthEntry
		var until time.Time
		slow := g.slowBackend(tok)
		switch name {
		case ScenarioSlowRevocation:
			rv.slow, rv.slowDelay = slow, g.uniform(90*time.Second, 240*time.Second)
			until = g.now.Add(rv.slowDelay + g.uniform(20*time.Second, time.Minute))
		case ScenarioRevocationNotPropagated:
			rv.slow, rv.slowDelay = slow, -1
			until = minTime(tok.exp.Add(45*time.Second), g.now.Add(11*time.Minute))
		case ScenarioFastRevocation:
			rv.fast = true
			rv.target = pick(g.r, []string{"session", "token", "family"})
			until = g.now.Add(g.uniform(time.Minute, 2*time.Minute))
		}
		te = g.newTruth(name, func(t *eval.Truth) {
			identify(t, s)
			t.TokenID = tok.id
			if rv.slow != nil {
				t.Service = rv.slow.name
			}
		})
		rv.truth = te
		g.revoke(s, rv, "logout")
		if rv.fast {
			g.mark(te)
		}
		// Post-logout requests stay off the services kept for clock skews:
		// a skewed stamp would put a pre-revoke acceptance after the revoke.
		services := []*service{g.w.gateway}
		for _, b := range g.w.backends {
			if !g.skewReserved(b) {
				services = append(services, b)
			}
		}
		if rv.slow != nil {
			for t := g.now.Add(g.uniform(2*time.Second, 10*time.Second)); t.Before(until); t = t.Add(g.uniform(5*time.Second, 15*time.Second)) {
				g.at(t, func() { g.sendTo(s, s.a, tok, rv.slow) })
			}
			others := slices.DeleteFunc(slices.Clone(services), func(x *service) bool { return x == rv.slow })
			otherUntil := minTime(until, g.now.Add(3*time.Minute))
			for t := g.now.Add(g.uniform(3*time.Second, 20*time.Second)); t.Before(otherUntil); t = t.Add(g.uniform(10*time.Second, 30*time.Second)) {
				svc := pick(g.r, others)
				g.at(t, func() { g.sendTo(s, s.a, tok, svc) })
			}
			return
		}
		for t := g.now.Add(g.uniform(time.Second, 5*time.Second)); t.Before(until); t = t.Add(g.uniform(5*time.Second, 15*time.Second)) {
			svc := pick(g.r, services)
			g.at(t, func() { g.sendTo(s, s.a, tok, svc) })
		}
	})
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// slowBackend picks the backend that will be slow to learn of a revoke of
// tok. Best is one that decides from its own cache (one that introspects
// learns of the revoke from the IdP at once) and that nothing else makes
// reject tok or misdate its events: not kept for clock skews, and not
// failing tok's kid after a rotation. When scenarios crowd the services,
// the preferences give way in that order.
func (g *Generator) slowBackend(tok token) *service {
	broken := func(b *service) bool {
		br := b.broken[tok.kid]
		return br != nil && (g.now.Before(br.until) || br.hits < br.minHits)
	}
	prefs := []func(*service) bool{
		func(b *service) bool { return !b.introspects && !g.skewReserved(b) && !broken(b) },
		func(b *service) bool { return !g.skewReserved(b) && !broken(b) },
		func(b *service) bool { return b.skew == nil && !broken(b) },
		func(b *service) bool { return b.skew == nil },
	}
	for _, ok := range prefs {
		var fit []*service
		for _, b := range g.w.backends {
			if ok(b) {
				fit = append(fit, b)
			}
		}
		if len(fit) > 0 {
			return pick(g.r, fit)
		}
	}
	return g.w.backend(g.r)
}

// skewReserved reports whether b is one of the last backends, which clock
// skew instances take, so that a revocation scenario never picks a service
// whose clock will reject the token for another reason.
func (g *Generator) skewReserved(b *service) bool {
	n := g.spec.Inject[ScenarioClockSkew] + g.spec.Inject[ScenarioClockSkewAhead]
	return slices.Index(g.w.backends, b) >= len(g.w.backends)-n
}

// busiestIssuer is the issuer whose clients carry the most traffic, so a
// rotation there is seen quickly.
func (g *Generator) busiestIssuer() *issuer {
	weight := map[*issuer]float64{}
	for _, c := range g.w.clients {
		weight[c.issuer] += c.weight
	}
	best := g.w.issuers[0]
	for _, iss := range g.w.issuers {
		if weight[iss] > weight[best] {
			best = iss
		}
	}
	return best
}

// keyRotationBreak: the IdP rotates, and one backend keeps rejecting the
// new kid for 3-8 minutes (at least until it has rejected five tokens).
func (g *Generator) keyRotationBreak(i int) {
	iss := g.busiestIssuer()
	svc := g.w.backend(g.r)
	g.rotate(iss)
	outcome := event.UnknownKid
	if i%2 == 1 {
		outcome = event.BadSignature
	}
	te := g.newTruth(ScenarioKeyRotationBreak, func(t *eval.Truth) { t.Kid, t.Service = iss.kid, svc.name })
	svc.broken[iss.kid] = &brokenKid{until: g.now.Add(g.uniform(3*time.Minute, 8*time.Minute)), minHits: 5, outcome: outcome, truth: te}
}

// keyRotationHandled: a rotation every service follows.
func (g *Generator) keyRotationHandled(int) {
	iss := pick(g.r, g.w.issuers)
	g.rotate(iss)
	g.mark(g.newTruth(ScenarioKeyRotationHandled, func(t *eval.Truth) { t.Kid = iss.kid }))
}

// unknownKid: forged tokens signed with a kid the issuer never published,
// presented to one backend from a far network, without any rotation.
func (g *Generator) unknownKid(int) {
	iss := pick(g.r, g.w.issuers)
	kid := newKid(g.r, iss)
	svc := g.w.backend(g.r)
	c := g.w.pickClient(g.r, func(c *client) bool { return c.issuer == iss })
	if c == nil {
		c = g.w.newClientOfKind(g.spec, g.r, "web", "", 0)
		c.issuer, c.region = iss, iss.region
	}
	victim := g.w.userOf(g.r, c, 1)
	forged := &session{c: c, u: victim, ttl: c.accessTTL}
	att := g.newAttacker(g.w.farNetwork(g.r, victim.net))
	att.mark = g.newTruth(ScenarioUnknownKid, func(t *eval.Truth) { t.Kid, t.Service, t.Subject, t.ClientID = kid, svc.name, victim.subject, c.id })
	var tok token
	g.spread(g.now, g.uniform(2*time.Minute, 5*time.Minute), 10+g.r.IntN(16), func(j int) {
		if j%3 == 0 {
			iat := g.now.Add(-g.uniform(0, time.Minute))
			tok = token{id: hexID(g.r, 16), iat: iat, exp: iat.Add(forged.ttl), kid: kid, bytes: g.accessBytes(c)}
		}
		g.sendTo(forged, att, tok, svc)
	})
}

// clockSkew: one backend's clock jumps 2-8 minutes behind (sign -1) or
// ahead (+1) and is fixed 8-15 minutes later. The service decides with its
// clock and stamps its events with it.
func (g *Generator) clockSkew(name string, sign int) {
	var fit []*service
	for _, b := range g.w.backends {
		if b.skew == nil && g.skewReserved(b) {
			fit = append(fit, b)
		}
	}
	if g.skewed == nil {
		g.skewed = map[*service]int{}
	}
	least := fit[:0:0]
	for _, b := range fit {
		switch {
		case len(least) == 0 || g.skewed[b] < g.skewed[least[0]]:
			least = append(least[:0], b)
		case g.skewed[b] == g.skewed[least[0]]:
			least = append(least, b)
		}
	}
	svc := pick(g.r, least)
	g.skewed[svc]++
	offset := g.uniform(2*time.Minute, 8*time.Minute).Truncate(time.Millisecond) * time.Duration(sign)
	te := g.newTruth(name, func(t *eval.Truth) { t.Service = svc.name })
	svc.skew = &clockSkew{from: g.now, offset: offset, truth: te}
	g.at(g.now.Add(g.uniform(8*time.Minute, 15*time.Minute)), func() { svc.skew = nil })
}

// sameSubnet (look-alike): a machine client with no device fingerprint gets
// a new address in the same /24 (or /48) mid-token.
func (g *Generator) sameSubnet(int) {
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.kind == "svc" }, kind: "svc", binding: "mtls", net: g.notNAT})
	g.atFirstTokenUse(s, func() {
		s.a.ip = g.addrIn(s.a.net, s.a.ip)
		s.a.mark = g.newTruth(ScenarioSameSubnet, func(t *eval.Truth) { identify(t, s); t.TokenID = s.access.id })
		g.endBeforeRefresh(s)
	})
}

// natEgress (look-alike): a client without a device fingerprint behind a
// known NAT egress hops to another egress range (another /24 and ASN).
func (g *Generator) natEgress(i int) {
	from := g.w.nat[i%len(g.w.nat)]
	to := g.w.nat[(i+1)%len(g.w.nat)]
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.kind == "svc" }, kind: "svc", binding: "mtls", net: func(u *user) { u.net = from }})
	g.atFirstTokenUse(s, func() {
		s.a.net, s.a.ip = to, to.host(g.r)
		s.a.mark = g.newTruth(ScenarioNATEgress, func(t *eval.Truth) { identify(t, s); t.TokenID = s.access.id })
		g.endBeforeRefresh(s)
	})
}

// deviceMoves (look-alike): a phone switches from wifi to cellular (same
// country, another ASN) or crosses into a neighbouring country on a train,
// keeping its token and device.
func (g *Generator) deviceMoves(int) {
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.kind == "ios" || c.kind == "android" }, kind: "ios", net: g.notNAT})
	g.atFirstTokenUse(s, func() {
		code := s.a.net.country.code
		if nb := s.a.net.country.neighbors; len(nb) > 0 && g.r.IntN(2) == 0 {
			code = pick(g.r, nb)
		}
		s.a.net = g.w.otherNetwork(g.r, s.a.net, code)
		s.a.ip = s.a.net.host(g.r)
		s.a.mark = g.newTruth(ScenarioDeviceMoves, func(t *eval.Truth) { identify(t, s); t.TokenID = s.access.id })
		g.endBeforeRefresh(s)
	})
}

// clientSurge: a client with a small steady baseline suddenly has dozens of
// families refreshing, as harvested refresh tokens are exercised from many
// networks; each family on its own refreshes on a normal cadence.
func (g *Generator) clientSurge(c *client) {
	te := g.newTruth(ScenarioRefreshRateClient, func(t *eval.Truth) { t.ClientID = c.id })
	for j := 0; j < max(30, g.spec.Sessions/20); j++ {
		s := g.newSession(nil, c, g.w.newUser(g.r, c))
		s.reactive = false
		age := time.Duration((0.75 + 0.15*g.r.Float64()) * float64(s.ttl))
		s.access = g.newAccess(s, g.now.Add(-age))
		s.refresh = g.newRefresh(s, g.now.Add(-age))
		s.ends = g.now.Add(5*time.Minute + g.lifetime())
		s.onRefresh = func(token) { g.mark(te) }
		g.q.push(action{at: g.now.Add(g.uniform(0, 2*time.Minute)), op: opRefresh, s: s, gen: s.gen})
		g.q.push(action{at: g.now.Add(g.uniform(0, 2*time.Minute)), op: opRequest, s: s})
	}
}

// noDevice makes a victim a client that reports no device id (a browser
// without a fingerprint), at home on a network of the kind v6 asks for.
func (g *Generator) noDevice(v6 bool) func(*user) {
	return func(u *user) {
		g.notNAT(u)
		u.device = ""
		if u.net.prefix.Addr().Is6() != v6 {
			u.net = g.sibling(u.net, v6)
		}
	}
}

// sibling is another network of n's ASN, IPv6 or IPv4 as asked (every ASN
// of the world has five IPv4 /24s and one IPv6 /48).
func (g *Generator) sibling(n *network, v6 bool) *network {
	var fit []*network
	for _, m := range g.w.networks {
		if m.asn == n.asn && m != n && m.prefix.Addr().Is6() == v6 {
			fit = append(fit, m)
		}
	}
	return fit[g.r.IntN(len(fit))]
}

// replaySameCountry: the victim's token shows up from another device id-less
// client in the victim's country, on another provider's network.
func (g *Generator) replaySameCountry(int) {
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.binding == "" && c.kind == "web" }, kind: "web", net: g.noDevice(false)})
	g.atFirstTokenUse(s, func() {
		tok := s.access
		att := g.newAttacker(g.w.otherNetwork(g.r, s.a.net, s.a.net.country.code))
		att.device = ""
		att.mark = g.newTruth(ScenarioReplaySameCountry, func(t *eval.Truth) { identify(t, s); t.TokenID = tok.id })
		window := min(4*time.Minute, tok.exp.Sub(g.now)-20*time.Second)
		g.spread(g.now, window, 3+g.r.IntN(4), func(int) { g.send(s, att, tok) })
		g.release(s, window)
	})
}

// refreshReuseInGrace: a thief exchanges the parent the victim exchanged a
// moment before, from another device and network within the grace window.
func (g *Generator) refreshReuseInGrace(int) {
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.kind != "svc" }, kind: "web"})
	s.onRefresh = func(parent token) {
		g.at(g.now.Add(g.uniform(100*time.Millisecond, 1500*time.Millisecond)), func() {
			att := g.newAttacker(g.w.farNetwork(g.r, s.a.net))
			att.mark = g.newTruth(ScenarioRefreshReuseInGrace, func(t *eval.Truth) { identify(t, s); t.TokenID = parent.id })
			stolen, _ := g.exchange(s, att, parent, event.OK)
			g.spread(g.now.Add(time.Second), 2*time.Minute, 2+g.r.IntN(3), func(int) { g.send(s, att, stolen) })
			g.release(s, 3*time.Minute)
		})
	}
}

// hops moves the victim's address n times over the rest of its first token's
// lifetime, each to where(j), and marks the first move.
func (g *Generator) hops(s *session, name string, n int, where func(j int) (*network, netip.Addr)) {
	g.atFirstTokenUse(s, func() {
		window := min(5*time.Minute, s.access.exp.Sub(g.now)-20*time.Second)
		te := g.newTruth(name, func(t *eval.Truth) { identify(t, s); t.TokenID = s.access.id })
		g.spread(g.now, window, n, func(j int) {
			s.a.net, s.a.ip = where(j)
			if j == 0 {
				s.a.mark = te
			}
		})
		g.endBeforeRefresh(s)
	})
}

// cgnatMobile (look-alike): a phone behind its carrier's CGNAT gets an
// address in another /24 of the carrier's ASN every few minutes.
func (g *Generator) cgnatMobile(int) {
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.kind == "ios" || c.kind == "android" }, kind: "android", net: g.v4NotNAT})
	g.hops(s, ScenarioCGNATMobile, 3, func(int) (*network, netip.Addr) {
		n := g.sibling(s.a.net, false)
		return n, n.host(g.r)
	})
}

func (g *Generator) v4NotNAT(u *user) {
	g.notNAT(u)
	if u.net.prefix.Addr().Is6() {
		u.net = g.sibling(u.net, false)
	}
}

// ipv6Privacy (look-alike): a browser without a device id whose temporary
// IPv6 address changes inside its /64 (RFC 8981).
func (g *Generator) ipv6Privacy(int) {
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.kind == "web" && c.binding == "" }, kind: "web", net: g.noDevice(true)})
	g.hops(s, ScenarioIPv6Privacy, 3, func(int) (*network, netip.Addr) {
		a := s.a.ip.As16()
		for i := 8; i < 16; i++ {
			a[i] = byte(g.r.IntN(256))
		}
		return s.a.net, netip.AddrFrom16(a)
	})
}

// dualStack (look-alike): a browser without a device id alternating between
// its provider's IPv4 and IPv6 networks (one ASN).
func (g *Generator) dualStack(int) {
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.kind == "web" && c.binding == "" }, kind: "web", net: g.noDevice(false)})
	var v4, v6 *network
	g.hops(s, ScenarioDualStack, 4, func(j int) (*network, netip.Addr) {
		if v4 == nil {
			v4, v6 = s.a.net, g.sibling(s.a.net, true)
		}
		if j%2 == 0 {
			return v6, v6.host(g.r)
		}
		return v4, v4.host(g.r)
	})
}

// vpnSwitch (look-alike): a phone turns its VPN on (an exit on another
// continent) and off again, keeping its device.
func (g *Generator) vpnSwitch(int) {
	s := g.newVictim(victimSpec{fits: func(c *client) bool { return c.kind == "ios" || c.kind == "android" }, kind: "ios", net: g.notNAT})
	var home *network
	g.hops(s, ScenarioVPNSwitch, 2, func(j int) (*network, netip.Addr) {
		if j == 0 {
			home = s.a.net
			exit := g.w.farNetwork(g.r, home)
			return exit, exit.host(g.r)
		}
		return home, home.host(g.r)
	})
}
