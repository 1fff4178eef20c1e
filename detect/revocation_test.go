package detect

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/finding"
)

func TestSlowRevocation(t *testing.T) {
	revokedAt := at(10 * time.Minute)
	base := Revocation{Target: "session", SessionID: "s1", TokenID: "t1", Service: "idp", RevokedAt: revokedAt}
	tests := []struct {
		name        string
		r           Revocation
		wantService string // "" = no finding
	}{
		{
			name: "one service kept accepting for 95 seconds",
			r: with(base, 95, false, false,
				ServicePropagation{Service: "orders", ResidualAcceptances: 14, LagS: 95, LastAcceptanceS: 94, Propagated: true},
				ServicePropagation{Service: "billing", ResidualAcceptances: 1, LagS: 3, LastAcceptanceS: 1, Propagated: true}),
			wantService: "orders",
		},
		{
			name: "a service never rejected within the horizon",
			r: with(base, 240, true, false,
				ServicePropagation{Service: "legacy-api", ResidualAcceptances: 30, LagS: 240, LastAcceptanceS: 240},
				ServicePropagation{Service: "orders", ResidualAcceptances: 0, LagS: 0, FirstRejectionS: 4, Propagated: true}),
			wantService: "legacy-api",
		},
		{
			name: "residual acceptances inside the SLO are cache behaviour",
			r: with(base, 45, false, false,
				ServicePropagation{Service: "orders", ResidualAcceptances: 6, LagS: 45, LastAcceptanceS: 44, Propagated: true}),
		},
		{
			name: "revoked token rejected at once everywhere",
			r: with(base, 0, false, false,
				ServicePropagation{Service: "orders", FirstRejectionS: 2, Propagated: true},
				ServicePropagation{Service: "billing", FirstRejectionS: 700, Propagated: true}),
		},
		{
			name: "logout: one in-flight acceptance, then the token is never used again",
			r: with(base, 2, true, false,
				ServicePropagation{Service: "gateway", ResidualAcceptances: 1, LagS: 2, LastAcceptanceS: 2}),
		},
		{
			name: "an idle client whose next request was rejected 66 s after the revoke, last accepted at 5 s, is not slow",
			r: with(base, 66, false, false,
				ServicePropagation{Service: "gateway", ResidualAcceptances: 1, LagS: 66, LastAcceptanceS: 5, Propagated: true}),
		},
		{
			name: "input ended before the horizon with a lag still inside the SLO",
			r: with(base, 5, true, true,
				ServicePropagation{Service: "orders", ResidualAcceptances: 1, LagS: 5, LastAcceptanceS: 5}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			en, _, _ := newEngine(t, nil)
			en.ObserveRevocation(tt.r)
			fs := en.Flush()
			if tt.wantService == "" {
				if len(fs) != 0 {
					t.Fatalf("want no finding, got %+v", fs)
				}
				return
			}
			if len(fs) != 1 || fs[0].Kind != finding.SlowRevocation {
				t.Fatalf("want one slow_revocation, got %+v", fs)
			}
			f := fs[0]
			if f.Service != tt.wantService || f.Severity != finding.Ticket || f.SessionID != "s1" {
				t.Errorf("finding: %+v", f)
			}
			if f.Evidence["propagation_s"] != tt.r.PropagationS {
				t.Errorf("propagation_s = %v", f.Evidence["propagation_s"])
			}
			svcs := f.Evidence["services"].([]map[string]any)
			if len(svcs) != len(tt.r.Services) {
				t.Fatalf("services = %v", svcs)
			}
			for _, s := range svcs {
				if _, ok := s["residual_acceptances"]; !ok {
					t.Errorf("service lacks residual_acceptances: %v", s)
				}
				if _, ok := s["lag_s"]; !ok {
					t.Errorf("service lacks lag_s: %v", s)
				}
			}
			if !strings.Contains(f.Action, tt.wantService) {
				t.Errorf("action %q does not name %s", f.Action, tt.wantService)
			}
		})
	}
}

func with(r Revocation, propagation float64, notPropagated, truncated bool, svcs ...ServicePropagation) Revocation {
	r.PropagationS, r.NotPropagated, r.Truncated, r.Services = propagation, notPropagated, truncated, svcs
	return r
}

func TestTheSameRevokeReportedTwiceIsOneFinding(t *testing.T) {
	en, _, _ := newEngine(t, nil)
	r := with(Revocation{Target: "token", TokenID: "t1", RevokedAt: at(0)}, 80, false, false,
		ServicePropagation{Service: "orders", ResidualAcceptances: 3, LagS: 80, LastAcceptanceS: 79, Propagated: true})
	en.ObserveRevocation(r)
	r.PropagationS, r.Services[0].LagS = 90, 90
	en.ObserveRevocation(r)
	fs := en.Flush()
	if len(fs) != 1 || fs[0].Count != 1 || fs[0].Evidence["propagation_s"] != 90.0 {
		t.Fatalf("want one finding with the newer result, got %+v", fs)
	}
}

// TestAServiceWhoseClockRunsAheadIsJudgedOnItsOwnTime: a validator two
// minutes ahead stamps an acceptance made just after a revoke two minutes
// late. With its clock_skew finding known, that is not a slow revocation;
// the same residual acceptance by a service with a true clock is.
func TestAServiceWhoseClockRunsAheadIsJudgedOnItsOwnTime(t *testing.T) {
	for _, tc := range []struct {
		service  string
		wantSlow bool
	}{{"search", false}, {"orders", true}} {
		en, _, _ := newEngine(t, nil)
		for _, e := range skewedFleet(2*time.Minute, "search", 60) {
			en.Observe(e)
		}
		en.ObserveRevocation(with(Revocation{Target: "session", SessionID: "s1", RevokedAt: at(20 * time.Minute)}, 150, false, false,
			ServicePropagation{Service: tc.service, ResidualAcceptances: 1, LagS: 150, LastAcceptanceS: 150, Propagated: true}))
		fs := en.Flush()
		if len(ofKind(fs, finding.ClockSkew)) != 1 {
			t.Fatalf("%s: the skewed traffic raised no clock_skew finding: %+v", tc.service, fs)
		}
		if got := len(ofKind(fs, finding.SlowRevocation)) == 1; got != tc.wantSlow {
			t.Errorf("%s accepting 150 s after a revoke: slow_revocation %v, want %v", tc.service, got, tc.wantSlow)
		}
	}
}
