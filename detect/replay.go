package detect

import (
	"fmt"
	"math"
	"slices"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// replayDetector finds one token used by two clients that cannot be the same:
// two devices, or (when devices are unknown) two networks with different ASN
// and /24 (/48), or two countries too far apart for the time between the
// uses; and a failed proof-of-possession, which is replay by itself. It keeps
// the first client of every token for the token's lifetime.
type replayDetector struct {
	cfg      *Config
	book     *book
	services *interner
	nat      natRanges
	tokens   *table[client]
}

// Why two uses cannot be the same client.
const (
	reasonDevices  = "presented from two devices"
	reasonNetworks = "presented from two networks (different ASN and /24 or /48)"
	reasonTravel   = "impossible travel between the countries of two uses"
	reasonPoP      = "proof-of-possession failed (binding_ok=false)"
)

const (
	tokenFlagged uint8 = 1 << iota // a replay finding is open for this token
	maxUses            = 16
)

// presented reports whether a validation outcome shows the token itself was
// used within its lifetime. Expired and not-yet-valid uses fall outside it;
// bad signatures, unknown kids and malformed tokens are not this token.
func presented(o event.Outcome) bool {
	switch o {
	case event.OK, event.Revoked, event.Denied, event.BadAudience, event.BadIssuer:
		return true
	}
	return false
}

func popFailed(e *event.Event) bool {
	return e.BindingOK == event.False && (e.Binding == "dpop" || e.Binding == "mtls")
}

func (d *replayDetector) observe(e *event.Event, ms int64) {
	if e.TokenID == "" {
		return
	}
	pop := popFailed(e)
	if !pop && !presented(e.Outcome) {
		return
	}
	cur := clientOf(e, ms, d.services)
	if e.Kind == event.KindIntrospect {
		// An introspection's address is often the resource server calling
		// the IdP, not the client: only its device says who held the token.
		cur.a, cur.asn, cur.cc = addr{}, 0, 0
	}
	if !pop && cur.dev == 0 && !cur.a.valid() && cur.cc == 0 {
		return // nothing to tell one client from another
	}
	k := hashID(e.TokenID)
	first, exp, ok := d.tokens.get(k)
	if !ok {
		d.tokens.put(k, cur, d.expiry(e, ms))
		if pop {
			d.raise(e, ms, cur, cur, reasonPoP, 0)
		}
		return
	}
	if ms > exp {
		return // outside the token's lifetime
	}
	reason, speed := reasonPoP, 0.0
	if !pop {
		reason, speed = d.differ(first, cur)
	}
	if reason == "" {
		if first.dev == 0 && cur.dev != 0 {
			first.dev = cur.dev // same client, now with its device: sharper next time
			d.tokens.put(k, first, exp)
		}
		return
	}
	d.raise(e, ms, first, cur, reason, speed)
}

// expiry is the end of the token's lifetime as far as replay state goes.
func (d *replayDetector) expiry(e *event.Event, ms int64) int64 {
	end := ms + d.cfg.DefaultTokenLifetime.Milliseconds()
	if !e.EXP.IsZero() {
		end = max(e.EXP.UnixMilli(), ms)
	}
	end = min(end, ms+d.cfg.MaxTokenLifetime.Milliseconds())
	return end + d.cfg.AllowedLateness.Milliseconds()
}

// differ says why a and b cannot be the same client, or "" if they can be.
// A device, when both uses report one, decides alone: one device is one
// client wherever it moves.
func (d *replayDetector) differ(a, b client) (string, float64) {
	if a.dev != 0 && b.dev != 0 {
		if a.dev != b.dev {
			return reasonDevices, 0
		}
		return "", 0
	}
	if d.nat.contains(a.a) || d.nat.contains(b.a) {
		return "", 0
	}
	if a.a.valid() && b.a.valid() {
		if sameNetwork(a.a, b.a) {
			return "", 0
		}
		if a.asn != 0 && b.asn != 0 && a.asn != b.asn {
			return reasonNetworks, 0
		}
	}
	if speed, ok := d.impossibleTravel(a, b); ok {
		return reasonTravel, speed
	}
	return "", 0
}

// impossibleTravel reports the speed (km/h) two uses imply when it exceeds
// the plausible maximum. The distance is between country centroids less a
// tolerance, so neighbours and big countries are given the benefit of the doubt.
func (d *replayDetector) impossibleTravel(a, b client) (float64, bool) {
	if a.cc == 0 || b.cc == 0 || a.cc == b.cc {
		return 0, false
	}
	km, ok := distanceKm(a.cc, b.cc)
	if !ok {
		return 0, false
	}
	km -= d.cfg.TravelToleranceKm
	if km <= 0 {
		return 0, false
	}
	hours := float64(absMS(b.ms-a.ms)) / 3.6e6
	if hours*d.cfg.MaxTravelSpeedKmh >= km {
		return 0, false
	}
	speed := math.Inf(1)
	if hours > 0 {
		speed = math.Round(km / hours)
	}
	return speed, true
}

// replayEvidence is what a replay finding shows: each distinct client.
type replayEvidence struct {
	uses        []use
	reasons     []string
	popFailures int
	speedKmh    float64
}

func (ev *replayEvidence) render(m map[string]any) {
	uses := make([]map[string]any, 0, len(ev.uses))
	sorted := slices.Clone(ev.uses)
	slices.SortStableFunc(sorted, func(a, b use) int { return a.ts.Compare(b.ts) })
	for _, u := range sorted {
		uses = append(uses, u.render(false))
	}
	m["uses"] = uses
	m["reasons"] = slices.Clone(ev.reasons)
	m["distinct_clients"] = len(ev.uses)
	if ev.popFailures > 0 {
		m["pop_failures"] = ev.popFailures
	}
	if ev.speedKmh != 0 {
		if math.IsInf(ev.speedKmh, 1) {
			m["travel_speed_kmh"] = "simultaneous"
		} else {
			m["travel_speed_kmh"] = ev.speedKmh
		}
	}
}

func (d *replayDetector) raise(e *event.Event, ms int64, first, cur client, reason string, speed float64) {
	r, own := d.book.raise(signal{
		kind: finding.Replay, key: e.TokenID, ts: ms,
		ids: ids{service: e.Service, issuer: e.Issuer, region: e.Region, tokenID: e.TokenID, sessionID: e.SessionID,
			familyID: e.FamilyID, subject: e.Subject, clientID: e.ClientID, kid: e.Kid},
		detail: reason,
		corr:   [2]uint64{sessionCorr(e.SessionID), familyCorr(e.FamilyID)},
	})
	if !own {
		return
	}
	ev, _ := r.ev.(*replayEvidence)
	if ev == nil {
		ev = &replayEvidence{}
		r.ev = ev
		if reason != reasonPoP || first.ms != cur.ms {
			ev.uses, _ = appendUse(ev.uses, useFromClient(first, d.services), maxUses)
		}
	}
	ev.uses, _ = appendUse(ev.uses, useFromEvent(e), maxUses)
	if !slices.Contains(ev.reasons, reason) {
		ev.reasons = append(ev.reasons, reason)
	}
	if reason == reasonPoP {
		ev.popFailures++
	}
	if speed != 0 {
		ev.speedKmh = speed
	}
	r.f.Action = replayAction(r.f)
	d.book.touch(r)
}

func replayAction(f finding.Finding) string {
	a := fmt.Sprintf("Revoke token %s", f.TokenID)
	if f.SessionID != "" {
		a += fmt.Sprintf(" and end session %s", f.SessionID)
	}
	if f.FamilyID != "" {
		a += fmt.Sprintf(" (revoke refresh family %s)", f.FamilyID)
	}
	return a + ": a second client holds a copy of the token. Make the user sign in again, and check the clients listed in uses for malware or a leaked log."
}
