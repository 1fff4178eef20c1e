package detect

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

func TestReplay(t *testing.T) {
	exp := times(at(0), at(time.Hour))
	home := from("203.0.113.10", 64500, "DE")
	tests := []struct {
		name       string
		nat        []string
		events     []*event.Event
		wantReason string // "" = no replay finding
	}{
		{
			name: "token used from a second device is replay",
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), sess("s1"), dev("laptop"), home, exp),
				validate(at(2*time.Minute), event.OK, tok("t1"), sess("s1"), dev("attacker-phone"), home, exp),
			},
			wantReason: reasonDevices,
		},
		{
			name: "token used from another ASN and another /24 is replay",
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), home, exp),
				validate(at(3*time.Minute), event.OK, tok("t1"), from("198.51.100.7", 64999, "DE"), exp),
			},
			wantReason: reasonNetworks,
		},
		{
			name: "IPv6 token used from another ASN and another /48 is replay",
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), from("2001:db8:1:1::5", 64500, "DE"), exp),
				validate(at(3*time.Minute), event.OK, tok("t1"), from("2001:db8:2:1::5", 64999, "DE"), exp),
			},
			wantReason: reasonNetworks,
		},
		{
			name: "impossible travel: Germany then Australia ten minutes later",
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), from("203.0.113.10", 0, "DE"), exp),
				validate(at(11*time.Minute), event.OK, tok("t1"), from("192.0.2.44", 0, "AU"), exp),
			},
			wantReason: reasonTravel,
		},
		{
			name: "failed DPoP proof is replay on its own",
			events: []*event.Event{
				validate(at(time.Minute), event.Denied, tok("t1"), dev("laptop"), binding("dpop", false), exp),
			},
			wantReason: reasonPoP,
		},
		{
			name: "failed mTLS binding after normal uses is replay",
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), dev("laptop"), home, binding("mtls", true), exp),
				validate(at(2*time.Minute), event.Denied, tok("t1"), dev("laptop"), home, binding("mtls", false), exp),
			},
			wantReason: reasonPoP,
		},
		{
			name: "address change inside one /24 is not replay",
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), from("203.0.113.10", 64500, "DE"), exp),
				validate(at(2*time.Minute), event.OK, tok("t1"), from("203.0.113.200", 64501, "DE"), exp),
			},
		},
		{
			name: "addresses in a known NAT egress range are not replay",
			nat:  []string{"100.64.0.0/10"},
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), from("100.64.1.10", 64500, "DE"), exp),
				validate(at(2*time.Minute), event.OK, tok("t1"), from("100.100.7.7", 64999, "DE"), exp),
			},
		},
		{
			name: "one device moving from home wifi to mobile data is not replay",
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), dev("phone"), home, exp),
				validate(at(2*time.Minute), event.OK, tok("t1"), dev("phone"), from("198.51.100.7", 64999, "DE"), exp),
			},
		},
		{
			name: "one device seen by two services is not replay",
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), dev("phone"), svc("orders"), home, exp),
				validate(at(time.Minute), event.OK, tok("t1"), dev("phone"), svc("billing"), home, exp),
			},
		},
		{
			name: "Germany then the Netherlands an hour later is plausible travel",
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), from("203.0.113.10", 0, "DE"), exp),
				validate(at(61*time.Minute), event.OK, tok("t1"), from("192.0.2.44", 0, "NL"), times(at(0), at(2*time.Hour))),
			},
		},
		{
			name: "a second client after the token expired is outside its lifetime",
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), dev("laptop"), times(at(0), at(5*time.Minute))),
				validate(at(20*time.Minute), event.OK, tok("t1"), dev("other"), times(at(0), at(5*time.Minute))),
			},
		},
		{
			name: "an expired-token rejection from another device is not a use",
			events: []*event.Event{
				validate(at(time.Minute), event.OK, tok("t1"), dev("laptop"), exp),
				validate(at(2*time.Minute), event.Expired, tok("t1"), dev("other"), exp),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, _ := run(t, func(c *Config) { c.NATEgressRanges = tt.nat }, tt.events)
			got := ofKind(fs, finding.Replay)
			if tt.wantReason == "" {
				if len(got) != 0 {
					t.Fatalf("want no replay, got %+v", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("want one replay finding, got %d (%+v)", len(got), fs)
			}
			f := got[0]
			if f.TokenID != "t1" || f.Key != "t1" || f.Severity != finding.Page || f.ID != finding.MakeID(finding.Replay, "t1") {
				t.Errorf("finding ids: %+v", f)
			}
			reasons, _ := f.Evidence["reasons"].([]string)
			if len(reasons) != 1 || reasons[0] != tt.wantReason {
				t.Errorf("reasons = %v, want %q", reasons, tt.wantReason)
			}
			uses, _ := f.Evidence["uses"].([]map[string]any)
			if len(uses) == 0 {
				t.Fatalf("no uses in evidence: %v", f.Evidence)
			}
			for _, u := range uses {
				for _, k := range []string{"ts", "service", "ip", "asn", "country", "device"} {
					if _, ok := u[k]; !ok {
						t.Errorf("use lacks %q: %v", k, u)
					}
				}
			}
			if !strings.Contains(f.Action, "Revoke token t1") {
				t.Errorf("action %q does not say to revoke the token", f.Action)
			}
		})
	}
}

func TestManyReplayedUsesAreOneFindingWithACount(t *testing.T) {
	exp := times(at(0), at(time.Hour))
	events := []*event.Event{validate(at(0), event.OK, tok("t1"), sess("s1"), dev("laptop"), exp)}
	for i := 1; i <= 50; i++ {
		events = append(events, validate(at(time.Duration(i)*time.Second), event.OK, tok("t1"), sess("s1"), dev("attacker"), exp))
		events = append(events, validate(at(time.Duration(i)*time.Second+time.Millisecond), event.OK, tok("t1"), sess("s1"), dev("laptop"), exp))
	}
	fs, rec := run(t, nil, events)
	if len(fs) != 1 {
		t.Fatalf("want one finding, got %d: %+v", len(fs), fs)
	}
	f := fs[0]
	if f.Count != 50 {
		t.Errorf("count = %d, want 50 replayed uses", f.Count)
	}
	if uses := f.Evidence["uses"].([]map[string]any); len(uses) != 2 {
		t.Errorf("uses lists %d clients, want the 2 distinct ones", len(uses))
	}
	if !f.FirstSeen.Equal(at(time.Second)) || !f.LastSeen.Equal(at(50*time.Second)) {
		t.Errorf("first/last seen = %s/%s", f.FirstSeen, f.LastSeen)
	}
	// 50 s of updates, throttled to one per second of event time, plus the open.
	if n := len(rec.calls); n < 2 || n > 52 {
		t.Errorf("sink saw %d calls, want the open plus at most one update per second", n)
	}
	for i := 1; i < len(rec.calls); i++ {
		if rec.calls[i].Version <= rec.calls[i-1].Version {
			t.Fatalf("version did not grow: %d then %d", rec.calls[i-1].Version, rec.calls[i].Version)
		}
	}
}

func TestReplayLearnsTheDeviceOfAnAddressOnlyFirstUse(t *testing.T) {
	exp := times(at(0), at(time.Hour))
	home := from("203.0.113.10", 64500, "DE")
	fs, _ := run(t, nil, []*event.Event{
		validate(at(time.Minute), event.OK, tok("t1"), home, exp),
		validate(at(2*time.Minute), event.OK, tok("t1"), dev("laptop"), home, exp), // same client, now with device
		validate(at(3*time.Minute), event.OK, tok("t1"), dev("thief"), home, exp),
	})
	if got := ofKind(fs, finding.Replay); len(got) != 1 {
		t.Fatalf("want the second device behind the same NAT to be replay, got %+v", fs)
	}
}
