package detect

import (
	"sort"

	"github.com/tokenwatch/tokenwatch/sli"
)

// FromSLI adapts the revocation tracker's result (M4) to what the
// slow-revocation detector reads, services in name order.
func FromSLI(r sli.Revocation) Revocation {
	out := Revocation{
		Target: r.Target, TokenID: r.TokenID, SessionID: r.SessionID, Subject: r.Subject, FamilyID: r.FamilyID,
		Service: r.Service, Issuer: r.Issuer, Region: r.Region, RevokedAt: r.RevokedAt,
		PropagationS: r.PropagationS, NotPropagated: !r.Propagated, Truncated: r.Truncated,
	}
	for svc, l := range r.ByService {
		sp := ServicePropagation{Service: svc, ResidualAcceptances: l.ResidualAcceptances, LagS: l.LagS, Propagated: l.Propagated}
		if l.FirstRejectionS != nil {
			sp.FirstRejectionS = *l.FirstRejectionS
		}
		if l.LastAcceptanceS != nil {
			sp.LastAcceptanceS = *l.LastAcceptanceS
		}
		out.Services = append(out.Services, sp)
	}
	sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].Service < out.Services[j].Service })
	return out
}
