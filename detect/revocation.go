package detect

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tokenwatch/tokenwatch/finding"
)

// Revocation is one revoke's propagation result (M4) as the detectors need
// it. It mirrors what sli computes, so the pipeline adapts sli's type to this
// one and detect does not depend on sli.
type Revocation struct {
	Target    string // token, session, subject, family
	TokenID   string
	SessionID string
	Subject   string
	FamilyID  string
	Service   string // who emitted the revoke
	Issuer    string
	Region    string
	RevokedAt time.Time
	// PropagationS is the max lag over services; NotPropagated is set when a
	// service kept accepting and never rejected within the horizon.
	PropagationS  float64
	NotPropagated bool
	// Truncated: the result was taken before the horizon ended (end of
	// input), so "not propagated" may only mean "not yet".
	Truncated bool
	Services  []ServicePropagation
}

// ServicePropagation is one service's view of a revoke.
type ServicePropagation struct {
	Service             string
	ResidualAcceptances int     // ok validations after the revoke
	LagS                float64 // revoke → first rejection after the last acceptance
	FirstRejectionS     float64 // when it never accepted: an upper bound only
	// LastAcceptanceS is the service's last residual acceptance, seconds
	// after the revoke: the lower bound of its lag (0 when it never accepted).
	LastAcceptanceS float64
	Propagated      bool
}

// key names the revoke: what was revoked, which id, and when.
func (r Revocation) key() string {
	id := r.TokenID
	switch r.Target {
	case "session":
		id = r.SessionID
	case "subject":
		id = r.Subject
	case "family":
		id = r.FamilyID
	}
	if id == "" {
		id = strings.Join([]string{r.TokenID, r.SessionID, r.FamilyID, r.Subject}, "/")
	}
	return fmt.Sprintf("%s:%s@%s", r.Target, id, r.RevokedAt.UTC().Format(time.RFC3339Nano))
}

// revocationDetector turns a revoke that propagated slower than the SLO, or
// not at all within the horizon while a service kept accepting past the SLO,
// into a finding naming each service. Residual acceptances inside the SLO
// are cache behaviour: no finding.
type revocationDetector struct {
	cfg  *Config
	book *book
}

func (d *revocationDetector) observe(r Revocation) {
	slo := d.cfg.RevocationSLO.Seconds()
	// A service's true propagation lies between its last residual
	// acceptance (lower bound) and its first revoked rejection after it
	// (M4's lag, an upper bound that also measures how long the client took
	// to come back). A finding needs evidence of a breach: some service
	// accepting a covered token later than the SLO after the revoke.
	// Residual acceptances inside the SLO are cache behaviour (SIGNALS.md),
	// whether the rejection came soon after, late, or not at all because
	// the token stopped being shown (a logout's in-flight request).
	// A service whose clock runs ahead (a clock_skew finding about it)
	// stamps its acceptances late: one just before the revoke reads as
	// after it. Its skew is taken off before judging.
	breach := false
	for _, s := range r.Services {
		if s.ResidualAcceptances > 0 && s.LastAcceptanceS-d.clockAhead(s.Service, r.RevokedAt) > slo {
			breach = true
		}
	}
	if !breach {
		return
	}
	slowest, slowestLag := "", -1.0
	for _, s := range r.Services {
		lag := s.LagS
		if !s.Propagated && s.ResidualAcceptances > 0 {
			lag = math.Inf(1)
		}
		if lag > slowestLag {
			slowest, slowestLag = s.Service, lag
		}
	}
	ts := r.RevokedAt.UnixMilli()
	seen := ts + int64(r.PropagationS*1000)
	rec, _ := d.book.raise(signal{kind: finding.SlowRevocation, key: r.key(), ts: ts,
		ids: ids{service: slowest, issuer: r.Issuer, region: r.Region, tokenID: r.TokenID, sessionID: r.SessionID,
			familyID: r.FamilyID, subject: r.Subject}})
	if t := msTime(seen); t.After(rec.f.LastSeen) {
		rec.f.LastSeen = t
	}
	if _, ok := rec.ev.(*revocationEvidence); ok {
		rec.f.Count-- // a newer result for the same revoke, not a second signal
	}
	ev := &revocationEvidence{r: cloneRevocation(r), slo: slo}
	rec.ev = ev
	rec.f.Action = revocationAction(ev)
	d.book.touch(rec)
}

// clockAhead is how many seconds the clock of service ran ahead of the
// issuers' around at, as a clock_skew finding about it measured (open or
// closed; within its window of its first and last signal): the larger of
// its estimate and its largest sample, both lower bounds of the true
// offset; 0 when none.
func (d *revocationDetector) clockAhead(service string, at time.Time) float64 {
	r := d.book.recs[recKey{finding.ClockSkew, "service:" + service}]
	if r == nil {
		return 0
	}
	ev, ok := r.ev.(*skewEvidence)
	if !ok || ev.skew <= 0 {
		return 0
	}
	if at.Before(r.f.FirstSeen.Add(-d.cfg.ClockSkewWindow)) || at.After(r.f.LastSeen.Add(d.cfg.ClockSkewWindow)) {
		return 0
	}
	return max(ev.skew, ev.maxOffsetSeconds)
}

func cloneRevocation(r Revocation) Revocation {
	r.Target, r.Service = strings.Clone(r.Target), strings.Clone(r.Service)
	r.Services = slices.Clone(r.Services)
	for i := range r.Services {
		r.Services[i].Service = strings.Clone(r.Services[i].Service)
	}
	return r
}

type revocationEvidence struct {
	r   Revocation
	slo float64
}

func (ev *revocationEvidence) render(m map[string]any) {
	m["target"] = ev.r.Target
	m["revoked_at"] = ev.r.RevokedAt.UTC()
	m["revoked_by"] = ev.r.Service
	m["propagation_s"] = ev.r.PropagationS
	m["not_propagated"] = ev.r.NotPropagated
	m["slo_s"] = ev.slo
	svcs := make([]map[string]any, 0, len(ev.r.Services))
	for _, s := range ev.r.Services {
		x := map[string]any{"service": s.Service, "residual_acceptances": s.ResidualAcceptances, "lag_s": s.LagS, "propagated": s.Propagated}
		if s.ResidualAcceptances > 0 {
			x["last_acceptance_s"] = s.LastAcceptanceS
		}
		if s.ResidualAcceptances == 0 && s.FirstRejectionS > 0 {
			x["first_rejection_s"] = s.FirstRejectionS
		}
		svcs = append(svcs, x)
	}
	m["services"] = svcs
}

// slowServices names the services that broke the SLO, slowest first.
func (ev *revocationEvidence) slowServices() []string {
	var out []ServicePropagation
	for _, s := range ev.r.Services {
		if s.ResidualAcceptances > 0 && s.LastAcceptanceS > ev.slo {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b ServicePropagation) int {
		if a.Propagated != b.Propagated {
			if !a.Propagated {
				return -1
			}
			return 1
		}
		return -cmpFloat(a.LagS, b.LagS)
	})
	names := make([]string, len(out))
	for i, s := range out {
		names[i] = s.Service
	}
	return names
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func revocationAction(ev *revocationEvidence) string {
	svcs := strings.Join(ev.slowServices(), ", ")
	if svcs == "" {
		svcs = "the services listed"
	}
	what := "took longer than"
	if ev.r.NotPropagated {
		what = "never propagated within the horizon, beyond"
	}
	return fmt.Sprintf("The %s revoke at %s %s the %.0f s SLO: %s kept accepting the revoked token. Check their revocation feed subscription and revocation-cache TTL (cache_ttl_s), flush their cache, and confirm the revoked sessions are really dead.",
		ev.r.Target, ev.r.RevokedAt.UTC().Format(time.RFC3339), what, ev.slo, svcs)
}
