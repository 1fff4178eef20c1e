package detect

import (
	"slices"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

func aud(got, want string) func(*event.Event) {
	return func(e *event.Event) { e.Audience, e.ExpectedAudience = got, want }
}

const (
	apiAud   = "https://api.example.com"
	adminAud = "https://admin.example.com"
)

// SIGNALS.md, audience_misuse: both shapes are found, once each, with
// their evidence; the look-alikes it names are not.
func TestAudienceMisuse(t *testing.T) {
	cases := []struct {
		name    string
		events  []*event.Event
		wantKey string // "" = no finding
		check   func(t *testing.T, f finding.Finding)
	}{
		{
			name: "a service accepts tokens issued for another audience",
			events: cat(
				traffic(0, 5*time.Minute, 5*time.Second, "k1", event.OK, "orders"), // no audience: not judged
				[]*event.Event{
					validate(at(time.Minute), event.OK, svc("reports"), tok("t1"), clientID("web"), aud(adminAud, apiAud)),
					validate(at(2*time.Minute), event.OK, svc("reports"), tok("t2"), clientID("cli"), aud(adminAud, apiAud)),
					validate(at(3*time.Minute), event.OK, svc("reports"), tok("t3"), clientID("web"), aud(adminAud, apiAud)),
				}),
			wantKey: "reports",
			check: func(t *testing.T, f finding.Finding) {
				if f.Count != 3 || f.Evidence["accepted"] != 3 || f.Evidence["expected_audience"] != apiAud {
					t.Errorf("count %d, evidence %v: want 3 accepted, expected %s", f.Count, f.Evidence, apiAud)
				}
				if cl, _ := f.Evidence["clients"].([]string); !slices.Equal(cl, []string{"web", "cli"}) {
					t.Errorf("clients %v, want [web cli]", f.Evidence["clients"])
				}
				if f.TokenID != "" || f.Team() != "platform" || f.Severity != finding.Page {
					t.Errorf("token %q team %s severity %s: want no token, team platform, page", f.TokenID, f.Team(), f.Severity)
				}
			},
		},
		{
			name: "a token tried at three services with bad_audience within 10 minutes",
			events: []*event.Event{
				validate(at(0), event.OK, svc("orders"), tok("stolen"), aud(apiAud, apiAud)),
				validate(at(time.Minute), event.BadAudience, svc("admin"), tok("stolen"), clientID("web"), aud(apiAud, adminAud)),
				validate(at(3*time.Minute), event.BadAudience, svc("billing"), tok("stolen"), aud(apiAud, "https://billing.example.com")),
				validate(at(4*time.Minute), event.BadAudience, svc("hr"), tok("stolen"), aud(apiAud, "https://hr.example.com")),
				validate(at(5*time.Minute), event.BadAudience, svc("payroll"), tok("stolen"), aud(apiAud, "https://payroll.example.com")),
			},
			wantKey: "stolen",
			check: func(t *testing.T, f finding.Finding) {
				if s, _ := f.Evidence["services"].([]string); !slices.Equal(s, []string{"admin", "billing", "hr", "payroll"}) {
					t.Errorf("services %v, want admin, billing, hr, payroll in order", f.Evidence["services"])
				}
				if f.Team() != "security" || f.TokenID != "stolen" {
					t.Errorf("team %s token %q", f.Team(), f.TokenID)
				}
				if !f.FirstSeen.Equal(at(time.Minute)) || !f.LastSeen.Equal(at(5*time.Minute)) {
					t.Errorf("first seen %v, last seen %v: want the first and last tries", f.FirstSeen, f.LastSeen)
				}
			},
		},
		{
			name: "look-alike: one client sends its token to the same wrong service again and again",
			events: func() []*event.Event {
				var out []*event.Event
				for i := range 40 {
					out = append(out, validate(at(time.Duration(i)*10*time.Second), event.BadAudience, svc("admin"), tok("misrouted"), aud(apiAud, adminAud)))
				}
				return out
			}(),
		},
		{
			name: "look-alike: a token whose audience list contains the expected audience",
			events: []*event.Event{
				validate(at(0), event.OK, svc("reports"), tok("t1"), aud(adminAud+","+apiAud, apiAud)),
				validate(at(time.Minute), event.OK, svc("reports"), tok("t2"), aud(apiAud+","+adminAud, apiAud)),
			},
		},
		{
			name: "look-alike: three services, but not within the window",
			events: []*event.Event{
				validate(at(0), event.BadAudience, svc("admin"), tok("slow"), aud(apiAud, adminAud)),
				validate(at(11*time.Minute), event.BadAudience, svc("billing"), tok("slow"), aud(apiAud, "b")),
				validate(at(22*time.Minute), event.BadAudience, svc("hr"), tok("slow"), aud(apiAud, "h")),
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := ofKind(func() []finding.Finding { f, _ := run(t, nil, c.events); return f }(), finding.AudienceMisuse)
			if c.wantKey == "" {
				if len(fs) != 0 {
					t.Fatalf("look-alike reported: %s", fmtFinding(fs[0]))
				}
				return
			}
			if len(fs) != 1 || fs[0].Key != c.wantKey {
				var got []string
				for _, f := range fs {
					got = append(got, fmtFinding(f))
				}
				t.Fatalf("findings %v, want one keyed %q", got, c.wantKey)
			}
			if fs[0].Action == "" {
				t.Error("no action")
			}
			c.check(t, fs[0])
		})
	}
}

// The order events of one incident arrive in changes nothing: the probe
// shape counts distinct services, not arrival order.
func TestAudienceProbeIndependentOfOrder(t *testing.T) {
	evs := []*event.Event{
		validate(at(4*time.Minute), event.BadAudience, svc("hr"), tok("x"), aud(apiAud, "h")),
		validate(at(time.Minute), event.BadAudience, svc("admin"), tok("x"), aud(apiAud, adminAud)),
		validate(at(3*time.Minute), event.BadAudience, svc("billing"), tok("x"), aud(apiAud, "b")),
	}
	fs, _ := run(t, nil, evs)
	if got := ofKind(fs, finding.AudienceMisuse); len(got) != 1 {
		t.Fatalf("%d findings out of order, want 1", len(got))
	}
}
