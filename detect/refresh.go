package detect

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// refreshDetector watches refresh-token families: a parent exchanged twice
// (or the IdP saying `reused`) is theft; a family refreshing far faster than
// its token lifetime implies, or from a device or network new to it, is an
// anomaly. Client and subject refresh rates against their own baseline live
// in rateDetector.
type refreshDetector struct {
	cfg      *Config
	book     *book
	services *interner
	nat      natRanges
	families *table[familyState]
}

// familyState is what one family needs remembered: its last two exchanges
// (a stolen token is used within a couple of refresh periods, else the IdP's
// own `reused` verdict covers it), up to two known devices and networks, the
// current burst and the token lifetime.
type familyState struct {
	ex         [2]exchange
	devs       [2]uint64
	nets       [2]network
	burstStart int64
	lifetimeS  uint32
	burstN     uint16
	nDev, nNet uint8
}

// exchange is one successful exchange of a parent: what its evidence needs
// (time, device, address) and nothing more: 40 bytes.
type exchange struct {
	parent uint64
	ms     int64
	dev    uint64
	a      addr
}

func (x exchange) client() client { return client{ms: x.ms, dev: x.dev, a: x.a} }

// The refresh signals, strongest first.
const (
	flavorIdPReuse       = "idp_reported_reuse"
	flavorDoubleExchange = "double_exchange"
	flavorBurst          = "refresh_burst"
	flavorNewDevice      = "new_device"
	flavorNewNetwork     = "new_network"
	flavorRate           = "rate_above_baseline"
)

// maxLearnedLifetime bounds the lifetime learned from exp-iat: anything
// longer is taken for a refresh token's lifetime, which would make every
// normal refresh look like a burst.
const maxLearnedLifetimeS = 2 * 3600

func familyKey(e *event.Event) string {
	if e.FamilyID != "" {
		return e.FamilyID
	}
	return e.SessionID
}

func (d *refreshDetector) ttl(f *familyState) int64 {
	return max(d.cfg.FamilyIdleTTL.Milliseconds(), 2*d.lifetimeMS(f)) + d.cfg.AllowedLateness.Milliseconds()
}

func (d *refreshDetector) lifetimeMS(f *familyState) int64 {
	if f.lifetimeS > 0 {
		return int64(f.lifetimeS) * 1000
	}
	return d.cfg.AccessTokenLifetime.Milliseconds()
}

// learnLifetime takes exp-iat of an access token the family was given.
func learnLifetime(f *familyState, e *event.Event) {
	if e.IAT.IsZero() || e.EXP.IsZero() || (e.TokenType != "" && e.TokenType != "access") {
		return
	}
	s := e.EXP.Sub(e.IAT).Seconds()
	if s >= 1 && s <= maxLearnedLifetimeS {
		f.lifetimeS = uint32(s)
	}
}

// observeIssue learns a family's first device, network and token lifetime
// from the login that created it.
func (d *refreshDetector) observeIssue(e *event.Event, ms int64) {
	if e.FamilyID == "" || e.Outcome != event.OK {
		return
	}
	k := hashID(e.FamilyID)
	f, exp, _ := d.families.get(k)
	cur := clientOf(e, ms, d.services)
	learnLifetime(&f, e)
	d.learnClient(&f, cur)
	d.families.put(k, f, max(exp, ms+d.ttl(&f)))
}

func (d *refreshDetector) learnClient(f *familyState, c client) {
	if c.dev != 0 && !slices.Contains(f.devs[:f.nDev], c.dev) && int(f.nDev) < len(f.devs) {
		f.devs[f.nDev] = c.dev
		f.nDev++
	}
	if c.a.valid() && !d.nat.contains(c.a) {
		n := networkOf(c.a, c.asn)
		if !slices.Contains(f.nets[:f.nNet], n) && int(f.nNet) < len(f.nets) {
			f.nets[f.nNet] = n
			f.nNet++
		}
	}
}

// refreshSignal is one finding-worthy observation about a refresh.
type refreshSignal struct {
	kind   finding.Kind
	flavor string
	prior  *exchange
	detail string
}

func (d *refreshDetector) observe(e *event.Event, ms int64) {
	fk := familyKey(e)
	if fk == "" {
		return
	}
	k := hashID(fk)
	f, exp, known := d.families.get(k)
	cur := clientOf(e, ms, d.services)
	learnLifetime(&f, e)

	var sigs [3]refreshSignal
	n := 0
	if s, ok := d.reuse(&f, e, cur); ok {
		sigs[n] = s
		n++
	}
	if s, ok := d.burst(&f, e, ms); ok {
		sigs[n] = s
		n++
	}
	if known {
		if s, ok := d.newClient(&f, cur); ok {
			sigs[n] = s
			n++
		}
	}
	if n == 0 && e.Outcome == event.OK {
		// Only clean refreshes teach the family what its clients look like.
		d.learnClient(&f, cur)
	}
	d.families.put(k, f, max(exp, ms+d.ttl(&f)))
	// Strongest first: the weaker ones then fold into its finding.
	for i := 0; i < n; i++ {
		d.raise(e, ms, fk, sigs[i], &f)
	}
}

// reuse applies the contract: the IdP saying `reused`, or a parent exchanged
// twice, is theft, unless both exchanges came from one client within the
// grace window (a client racing itself).
func (d *refreshDetector) reuse(f *familyState, e *event.Event, cur client) (refreshSignal, bool) {
	if e.ParentTokenID == "" {
		if e.Outcome == event.Reused {
			return refreshSignal{kind: finding.RefreshReuse, flavor: flavorIdPReuse, detail: "the IdP rejected a refresh token as reused"}, true
		}
		return refreshSignal{}, false
	}
	ph := hashID(e.ParentTokenID)
	var prior *exchange
	for i := range f.ex {
		if f.ex[i].parent == ph {
			prior = &f.ex[i]
		}
	}
	race := prior != nil && absMS(cur.ms-prior.ms) <= d.cfg.RefreshGrace.Milliseconds() && sameRacer(prior.client(), cur)
	switch {
	case e.Outcome == event.Reused && !race:
		var p *exchange
		if prior != nil {
			cp := *prior
			p = &cp
		}
		return refreshSignal{kind: finding.RefreshReuse, flavor: flavorIdPReuse, prior: p, detail: "the IdP rejected a refresh token as reused"}, true
	case e.Outcome == event.OK && prior != nil && !race:
		cp := *prior
		return refreshSignal{kind: finding.RefreshReuse, flavor: flavorDoubleExchange, prior: &cp, detail: "one refresh token was exchanged twice"}, true
	case e.Outcome == event.OK && prior == nil:
		// Remember this exchange in place of the older one.
		i := 0
		if f.ex[1].ms < f.ex[0].ms {
			i = 1
		}
		f.ex[i] = exchange{parent: ph, ms: cur.ms, dev: cur.dev, a: cur.a}
	}
	return refreshSignal{}, false
}

// sameRacer: two exchanges can be one client racing itself when they share
// the device (or, with no device reported, the address).
func sameRacer(a, b client) bool {
	if a.dev != 0 && b.dev != 0 {
		return a.dev == b.dev
	}
	if a.dev != 0 || b.dev != 0 {
		return false
	}
	return a.a.valid() && a.a == b.a
}

// burst: RefreshBurstCount successful refreshes within RefreshBurstFraction
// of the token lifetime. A client refreshes about once per lifetime, so this
// is tens of times too often, and needs no history.
func (d *refreshDetector) burst(f *familyState, e *event.Event, ms int64) (refreshSignal, bool) {
	if e.Outcome != event.OK {
		return refreshSignal{}, false
	}
	window := int64(float64(d.lifetimeMS(f)) * d.cfg.RefreshBurstFraction)
	if f.burstN == 0 || ms-f.burstStart > window || f.burstStart-ms > window {
		f.burstStart, f.burstN = ms, 1
		return refreshSignal{}, false
	}
	if f.burstN < 1<<15 {
		f.burstN++
	}
	if int(f.burstN) < d.cfg.RefreshBurstCount {
		return refreshSignal{}, false
	}
	return refreshSignal{kind: finding.RefreshAnomaly, flavor: flavorBurst,
		detail: fmt.Sprintf("%d refreshes within %.0f s, token lifetime %d s", f.burstN, float64(window)/1000, d.lifetimeMS(f)/1000)}, true
}

// newClient: a refresh from a device the family has never used, or, when no
// device is reported, from a network that cannot be one it used. A known
// device on a new network is a device moving, not a new client.
func (d *refreshDetector) newClient(f *familyState, c client) (refreshSignal, bool) {
	if c.dev != 0 && f.nDev > 0 {
		if slices.Contains(f.devs[:f.nDev], c.dev) {
			return refreshSignal{}, false
		}
		return refreshSignal{kind: finding.RefreshAnomaly, flavor: flavorNewDevice, detail: "refresh from a device new to the family"}, true
	}
	if !c.a.valid() || f.nNet == 0 || d.nat.contains(c.a) || c.asn == 0 {
		return refreshSignal{}, false
	}
	n := networkOf(c.a, c.asn)
	for _, k := range f.nets[:f.nNet] {
		if !differentNetwork(k, n) {
			return refreshSignal{}, false
		}
	}
	return refreshSignal{kind: finding.RefreshAnomaly, flavor: flavorNewNetwork, detail: "refresh from a network new to the family (different ASN and /24 or /48)"}, true
}

// reuseEvidence lists every exchange of the reused parent.
type reuseEvidence struct {
	parent    string
	exchanges []use
	flavors   []string
}

func (ev *reuseEvidence) render(m map[string]any) {
	sorted := slices.Clone(ev.exchanges)
	slices.SortStableFunc(sorted, func(a, b use) int { return a.ts.Compare(b.ts) })
	ex := make([]map[string]any, 0, len(sorted))
	for _, u := range sorted {
		ex = append(ex, map[string]any{"ts": u.ts, "device": u.device, "ip": u.ip, "outcome": u.outcome, "service": u.service})
	}
	m["exchanges"] = ex
	if ev.parent != "" {
		m["parent_token_id"] = ev.parent
	}
	m["signals"] = slices.Clone(ev.flavors)
}

// anomalyEvidence describes a family's odd refreshing.
type anomalyEvidence struct {
	flavors  []string
	details  []string
	lifetime int64
	clients  []use
}

func (ev *anomalyEvidence) render(m map[string]any) {
	m["signals"] = slices.Clone(ev.flavors)
	m["details"] = slices.Clone(ev.details)
	m["token_lifetime_s"] = ev.lifetime
	if len(ev.clients) > 0 {
		cl := make([]map[string]any, 0, len(ev.clients))
		for _, u := range ev.clients {
			cl = append(cl, u.render(true))
		}
		m["refreshes"] = cl
	}
}

func (d *refreshDetector) raise(e *event.Event, ms int64, fk string, s refreshSignal, f *familyState) {
	key := fk
	r, own := d.book.raise(signal{
		kind: s.kind, key: key, ts: ms,
		ids: ids{service: e.Service, issuer: e.Issuer, region: e.Region, tokenID: e.TokenID, sessionID: e.SessionID,
			familyID: e.FamilyID, subject: e.Subject, clientID: e.ClientID},
		detail: s.detail,
		corr:   [2]uint64{sessionCorr(e.SessionID), familyCorr(fk)},
	})
	if !own {
		return
	}
	switch s.kind {
	case finding.RefreshReuse:
		ev, _ := r.ev.(*reuseEvidence)
		if ev == nil {
			ev = &reuseEvidence{parent: strings.Clone(e.ParentTokenID)}
			r.ev = ev
		}
		if s.prior != nil {
			p := useFromClient(s.prior.client(), d.services)
			p.outcome, p.service = event.OK.String(), e.Service // one IdP exchanges a family's tokens
			ev.exchanges = appendExchange(ev.exchanges, p)
		}
		ev.exchanges = appendExchange(ev.exchanges, useFromEvent(e))
		if !slices.Contains(ev.flavors, s.flavor) {
			ev.flavors = append(ev.flavors, s.flavor)
		}
		r.f.Action = reuseAction(r.f, fk)
	case finding.RefreshAnomaly:
		ev, _ := r.ev.(*anomalyEvidence)
		if ev == nil {
			ev = &anomalyEvidence{}
			r.ev = ev
		}
		ev.lifetime = d.lifetimeMS(f) / 1000
		if !slices.Contains(ev.flavors, s.flavor) {
			ev.flavors = append(ev.flavors, s.flavor)
			ev.details = append(ev.details, s.detail)
		}
		ev.clients, _ = appendUse(ev.clients, useFromEvent(e), maxUses)
		r.f.Action = anomalyAction(r.f, fk)
	}
	d.book.touch(r)
}

// appendExchange keeps every exchange (by time and client), up to maxUses.
func appendExchange(list []use, u use) []use {
	for _, x := range list {
		if x.ts.Equal(u.ts) && x.id == u.id {
			return list
		}
	}
	if len(list) >= maxUses {
		return list
	}
	u.service, u.ip, u.country, u.device = strings.Clone(u.service), strings.Clone(u.ip), strings.Clone(u.country), strings.Clone(u.device)
	return append(list, u)
}

func reuseAction(f finding.Finding, family string) string {
	a := fmt.Sprintf("Revoke the whole refresh-token family %s (every token it issued)", family)
	if f.SessionID != "" {
		a += fmt.Sprintf(" and end session %s", f.SessionID)
	}
	return a + ": one refresh token was used twice, so someone else holds a copy. Make the user sign in again and review the clients listed in exchanges."
}

func anomalyAction(f finding.Finding, family string) string {
	return fmt.Sprintf("Check refresh family %s: its refreshes do not look like its own client (see signals). If the user does not recognise the device or network, revoke the family and end the session.", family)
}
