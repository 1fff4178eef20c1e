package detect

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// audienceDetector finds tokens used on the wrong service (SIGNALS.md,
// "More detections", audience_misuse), in two shapes:
//
//   - a service that accepts tokens not issued for it: a validate with
//     outcome ok whose audience (one value, or an RFC 7519 list kept joined
//     by commas) does not contain the expected_audience the validator
//     reported. The validator is not checking audience. Key: the service.
//   - one token presented with bad_audience to AudienceProbeServices or
//     more distinct services (or expected audiences) within
//     AudienceProbeWindow: a token being tried across services. Key: the
//     token.
//
// Not findings: one client sending its token to the same wrong service
// again and again (rejections at one service are the system working), and
// a token whose audience list contains the expected audience.
type audienceDetector struct {
	cfg    *Config
	book   *book
	probes *table[probe]
}

// probe is one token's bad_audience rejections within the window: the
// distinct places it was tried (service and expected audience).
type probe struct {
	tries []audienceTry
}

type audienceTry struct {
	ms       int64
	service  string
	expected string
	outcome  event.Outcome
}

// maxTries bounds the places kept per token.
const maxTries = 16

// audienceContains reports whether aud (one value or a comma-joined list)
// names want.
func audienceContains(aud, want string) bool {
	for a := range strings.SplitSeq(aud, ",") {
		if a == want {
			return true
		}
	}
	return false
}

func (d *audienceDetector) observe(e *event.Event, ms int64) {
	if e.Kind != event.KindValidate {
		return
	}
	switch {
	case e.Outcome == event.OK && e.Audience != "" && e.ExpectedAudience != "" && !audienceContains(e.Audience, e.ExpectedAudience):
		d.accepted(e, ms)
	case e.Outcome == event.BadAudience && e.TokenID != "":
		d.rejected(e, ms)
	}
}

// accepted: the service took a token for another audience.
func (d *audienceDetector) accepted(e *event.Event, ms int64) {
	r, own := d.book.raise(signal{
		kind: finding.AudienceMisuse, key: e.Service, ts: ms,
		ids:    ids{service: e.Service, issuer: e.Issuer, region: e.Region},
		detail: "accepts tokens issued for other audiences",
	})
	if !own {
		return
	}
	ev, _ := r.ev.(*acceptEvidence)
	if ev == nil {
		ev = &acceptEvidence{expected: strings.Clone(e.ExpectedAudience)}
		r.ev = ev
	}
	ev.accepted++
	ev.audiences = addCapped(ev.audiences, e.Audience)
	ev.clients = addCapped(ev.clients, e.ClientID)
	r.f.Action = fmt.Sprintf("Make %s check the token's audience: it accepted tokens issued for %s although it expects %s. "+
		"Until it does, any token the issuer minted for another service works there.", r.f.Service, strings.Join(ev.audiences, ", "), ev.expected)
	d.book.touch(r)
}

// rejected: one more place the token was tried and refused for audience.
func (d *audienceDetector) rejected(e *event.Event, ms int64) {
	k := hashID(e.TokenID)
	p, _, _ := d.probes.get(k)
	window := d.cfg.AudienceProbeWindow.Milliseconds()
	kept := p.tries[:0]
	for _, t := range p.tries {
		if ms-t.ms <= window && t.ms-ms <= window {
			kept = append(kept, t)
		}
	}
	p.tries = kept
	if len(p.tries) < maxTries {
		p.tries = append(p.tries, audienceTry{ms: ms, service: strings.Clone(e.Service), expected: strings.Clone(e.ExpectedAudience), outcome: e.Outcome})
	}
	d.probes.put(k, p, ms+window+d.cfg.AllowedLateness.Milliseconds())
	services, expected := map[string]bool{}, map[string]bool{}
	for _, t := range p.tries {
		services[t.service] = true
		if t.expected != "" {
			expected[t.expected] = true
		}
	}
	if max(len(services), len(expected)) < d.cfg.AudienceProbeServices {
		return
	}
	r, own := d.book.raise(signal{
		kind: finding.AudienceMisuse, key: e.TokenID, ts: ms,
		ids: ids{service: e.Service, issuer: e.Issuer, region: e.Region, tokenID: e.TokenID, sessionID: e.SessionID,
			familyID: e.FamilyID, subject: e.Subject, clientID: e.ClientID},
		detail: "presented to several services it was not issued for",
	})
	if !own {
		return
	}
	ev, _ := r.ev.(*probeEvidence)
	if ev == nil {
		ev = &probeEvidence{}
		r.ev = ev
	}
	ev.tries = slices.Clone(p.tries)
	for _, t := range p.tries {
		if tt := msTime(t.ms); tt.Before(r.f.FirstSeen) {
			r.f.FirstSeen = tt // the incident began with the first try
		}
	}
	r.f.Action = fmt.Sprintf("Revoke token %s and find where it leaked: it was presented to %d services it was not issued for within %s. "+
		"Check the client %s and the subject's other sessions.", r.f.TokenID, len(services), d.cfg.AudienceProbeWindow, r.f.ClientID)
	d.book.touch(r)
}

// addCapped adds v to a small set kept in first-seen order.
func addCapped(set []string, v string) []string {
	if v == "" || slices.Contains(set, v) || len(set) >= 8 {
		return set
	}
	return append(set, strings.Clone(v))
}

// acceptEvidence: a service accepting tokens for other audiences.
type acceptEvidence struct {
	accepted  int
	expected  string
	audiences []string
	clients   []string
}

func (ev *acceptEvidence) render(m map[string]any) {
	m["shape"] = "accepts_other_audiences"
	m["accepted"] = ev.accepted
	m["expected_audience"] = ev.expected
	m["audiences_seen"] = slices.Clone(ev.audiences)
	m["clients"] = slices.Clone(ev.clients)
}

// probeEvidence: one token tried across services, in order.
type probeEvidence struct {
	tries []audienceTry
}

func (ev *probeEvidence) render(m map[string]any) {
	m["shape"] = "presented_across_services"
	tries := make([]map[string]any, 0, len(ev.tries))
	sorted := slices.Clone(ev.tries)
	slices.SortStableFunc(sorted, func(a, b audienceTry) int { return int(a.ms - b.ms) })
	services := []string{}
	for _, t := range sorted {
		x := map[string]any{"ts": msTime(t.ms), "service": t.service, "outcome": t.outcome.String()}
		if t.expected != "" {
			x["expected_audience"] = t.expected
		}
		tries = append(tries, x)
		if !slices.Contains(services, t.service) {
			services = append(services, t.service)
		}
	}
	m["tries"] = tries
	m["services"] = services
}
