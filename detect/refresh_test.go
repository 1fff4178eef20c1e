package detect

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

func TestRefreshReuse(t *testing.T) {
	home := from("203.0.113.10", 64500, "DE")
	away := from("198.51.100.7", 64999, "RO")
	login := issue(at(0), tok("r0"), sess("s1"), fam("f1"), dev("laptop"), home)
	tests := []struct {
		name          string
		events        []*event.Event
		wantSignal    string // "" = no reuse finding
		wantExchanges int
	}{
		{
			name: "IdP says the refresh token was reused",
			events: []*event.Event{login,
				refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), sess("s1"), fam("f1"), dev("laptop"), home),
				refresh(at(40*time.Minute), event.Reused, parent("r0"), sess("s1"), fam("f1"), dev("laptop"), home),
			},
			wantSignal: flavorIdPReuse, wantExchanges: 2,
		},
		{
			name: "IdP says reused with no earlier exchange seen",
			events: []*event.Event{
				refresh(at(40*time.Minute), event.Reused, parent("r9"), sess("s1"), fam("f1"), dev("laptop"), home),
			},
			wantSignal: flavorIdPReuse, wantExchanges: 1,
		},
		{
			name: "one refresh token exchanged twice from two devices",
			events: []*event.Event{login,
				refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), sess("s1"), fam("f1"), dev("laptop"), home),
				refresh(at(16*time.Minute), event.OK, tok("r1b"), parent("r0"), sess("s1"), fam("f1"), dev("thief"), away),
			},
			wantSignal: flavorDoubleExchange, wantExchanges: 2,
		},
		{
			name: "one refresh token exchanged twice by one device minutes apart",
			events: []*event.Event{login,
				refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), fam("f1"), dev("laptop"), home),
				refresh(at(18*time.Minute), event.OK, tok("r1b"), parent("r0"), fam("f1"), dev("laptop"), home),
			},
			wantSignal: flavorDoubleExchange, wantExchanges: 2,
		},
		{
			name: "the thief exchanges first and the owner's exchange arrives later",
			events: []*event.Event{login,
				refresh(at(15*time.Minute+time.Second), event.OK, tok("r1"), parent("r0"), fam("f1"), dev("laptop"), home),
				refresh(at(15*time.Minute), event.OK, tok("r1b"), parent("r0"), fam("f1"), dev("thief"), away),
			},
			wantSignal: flavorDoubleExchange, wantExchanges: 2,
		},
		{
			name: "refresh race on one device within the grace window is not theft",
			events: []*event.Event{login,
				refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), fam("f1"), dev("laptop"), home),
				refresh(at(15*time.Minute+1500*time.Millisecond), event.OK, tok("r1b"), parent("r0"), fam("f1"), dev("laptop"), home),
			},
		},
		{
			name: "refresh race the IdP calls reused is still a race on one device",
			events: []*event.Event{login,
				refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), fam("f1"), dev("laptop"), home),
				refresh(at(15*time.Minute+500*time.Millisecond), event.Reused, parent("r0"), fam("f1"), dev("laptop"), home),
			},
		},
		{
			name: "retry after an IdP error is not a second exchange",
			events: []*event.Event{login,
				refresh(at(15*time.Minute), event.Error, parent("r0"), fam("f1"), dev("laptop"), home),
				refresh(at(15*time.Minute+5*time.Second), event.OK, tok("r1"), parent("r0"), fam("f1"), dev("laptop"), home),
			},
		},
		{
			name: "a family rotating normally is not reuse",
			events: []*event.Event{login,
				refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), fam("f1"), dev("laptop"), home),
				refresh(at(30*time.Minute), event.OK, tok("r2"), parent("r1"), fam("f1"), dev("laptop"), home),
				refresh(at(45*time.Minute), event.OK, tok("r3"), parent("r2"), fam("f1"), dev("laptop"), home),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, _ := run(t, nil, tt.events)
			got := ofKind(fs, finding.RefreshReuse)
			if tt.wantSignal == "" {
				if len(got) != 0 {
					t.Fatalf("want no reuse finding, got %+v", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("want one reuse finding, got %+v", fs)
			}
			f := got[0]
			if f.FamilyID != "f1" || f.Severity != finding.Page {
				t.Errorf("finding: %+v", f)
			}
			if sig := f.Evidence["signals"].([]string); sig[0] != tt.wantSignal {
				t.Errorf("signals = %v, want %s", sig, tt.wantSignal)
			}
			ex := f.Evidence["exchanges"].([]map[string]any)
			if len(ex) != tt.wantExchanges {
				t.Errorf("exchanges = %v, want %d", ex, tt.wantExchanges)
			}
			for _, x := range ex {
				for _, k := range []string{"ts", "device", "ip", "outcome"} {
					if _, ok := x[k]; !ok {
						t.Errorf("exchange lacks %s: %v", k, x)
					}
				}
			}
			if !strings.Contains(f.Action, "Revoke the whole refresh-token family f1") {
				t.Errorf("action %q does not say to revoke the family", f.Action)
			}
		})
	}
}

func TestReusedRefreshFromANewDeviceIsOneReuseFinding(t *testing.T) {
	home := from("203.0.113.10", 64500, "DE")
	fs, _ := run(t, nil, []*event.Event{
		issue(at(0), tok("r0"), sess("s1"), fam("f1"), dev("laptop"), home),
		refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), sess("s1"), fam("f1"), dev("laptop"), home),
		refresh(at(20*time.Minute), event.OK, tok("r1b"), parent("r0"), sess("s1"), fam("f1"), dev("thief"), home),
		// The thief keeps its branch alive: new device each time, no new reuse.
		refresh(at(30*time.Minute), event.OK, tok("r2b"), parent("r1b"), sess("s1"), fam("f1"), dev("thief"), home),
	})
	if len(fs) != 1 {
		t.Fatalf("want one finding for the incident, got %d: %+v", len(fs), fs)
	}
	f := fs[0]
	if f.Kind != finding.RefreshReuse {
		t.Fatalf("kind = %s, want refresh_reuse (the strongest)", f.Kind)
	}
	rel, _ := f.Evidence["related"].([]map[string]any)
	if len(rel) != 1 || rel[0]["kind"] != string(finding.RefreshAnomaly) || rel[0]["count"] != 2 {
		t.Errorf("related = %v, want the new-device anomaly twice", rel)
	}
	if f.Count != 3 {
		t.Errorf("count = %d, want 3 signals", f.Count)
	}
}

func TestAnomalyFirstThenReuseSupersedesIt(t *testing.T) {
	home := from("203.0.113.10", 64500, "DE")
	fs, rec := run(t, nil, []*event.Event{
		issue(at(0), tok("r0"), sess("s1"), fam("f1"), dev("laptop"), home),
		// The thief exchanges first: only a new device so far.
		refresh(at(10*time.Minute), event.OK, tok("r1b"), parent("r0"), sess("s1"), fam("f1"), dev("thief"), home),
		// Then the owner exchanges the same token: theft.
		refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), sess("s1"), fam("f1"), dev("laptop"), home),
	})
	if len(fs) != 1 || fs[0].Kind != finding.RefreshReuse {
		t.Fatalf("want one refresh_reuse finding, got %+v", fs)
	}
	var superseded bool
	for _, c := range rec.calls {
		if c.Kind == finding.RefreshAnomaly && c.Status == finding.Closed && c.Evidence["superseded_by"] == fs[0].ID {
			superseded = true
		}
	}
	if !superseded {
		t.Errorf("the anomaly finding was not closed as superseded by %s", fs[0].ID)
	}
	if !fs[0].FirstSeen.Equal(at(10 * time.Minute)) {
		t.Errorf("first seen = %s, want the anomaly's start", fs[0].FirstSeen)
	}
}

func TestRefreshAnomaly(t *testing.T) {
	home := from("203.0.113.10", 64500, "DE")
	// cadence builds a family refreshing n times, every step, from one device.
	cadence := func(n int, step time.Duration, opts ...func(*event.Event)) []*event.Event {
		out := []*event.Event{issue(at(0), tok("r0"), fam("f1"), dev("laptop"), home)}
		for i := 1; i <= n; i++ {
			o := append([]func(*event.Event){tok("r" + itoa(i)), parent("r" + itoa(i-1)), fam("f1"), dev("laptop"), home}, opts...)
			out = append(out, refresh(at(time.Duration(i)*step), event.OK, o...))
		}
		return out
	}
	tests := []struct {
		name   string
		events []*event.Event
		want   string // "" = no anomaly
	}{
		{name: "family refreshing six times in a minute with 15-minute tokens", events: cadence(6, 10*time.Second), want: flavorBurst},
		{
			name:   "hour-long tokens (from exp-iat) refreshed every minute",
			events: cadence(6, time.Minute, ttype("access"), func(e *event.Event) { e.IAT, e.EXP = e.TS, e.TS.Add(time.Hour) }),
			want:   flavorBurst,
		},
		{
			name:   "five-minute tokens refreshed every twelve seconds",
			events: cadence(8, 12*time.Second, ttype("access"), func(e *event.Event) { e.IAT, e.EXP = e.TS, e.TS.Add(5*time.Minute) }),
			want:   flavorBurst,
		},
		{name: "a handful of refreshes in a minute is not a burst", events: cadence(4, 10*time.Second)},
		{name: "refreshing every 14 minutes for a day is normal", events: cadence(100, 14*time.Minute)},
		{
			name:   "five-minute tokens refreshed every four minutes are normal",
			events: cadence(30, 4*time.Minute, ttype("access"), func(e *event.Event) { e.IAT, e.EXP = e.TS, e.TS.Add(5*time.Minute) }),
		},
		{
			name:   "30-day refresh tokens do not make the normal cadence a burst",
			events: cadence(20, 15*time.Minute, ttype("refresh"), func(e *event.Event) { e.IAT, e.EXP = e.TS, e.TS.Add(30*24*time.Hour) }),
		},
		{
			name: "refresh from a device new to the family",
			events: []*event.Event{
				issue(at(0), tok("r0"), fam("f1"), dev("laptop"), home),
				refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), fam("f1"), dev("unknown-pc"), home),
			},
			want: flavorNewDevice,
		},
		{
			name: "refresh from a new network when no device is reported",
			events: []*event.Event{
				issue(at(0), tok("r0"), fam("f1"), home),
				refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), fam("f1"), from("198.51.100.7", 64999, "DE")),
			},
			want: flavorNewNetwork,
		},
		{
			name: "the family's own device on a new network is not an anomaly",
			events: []*event.Event{
				issue(at(0), tok("r0"), fam("f1"), dev("laptop"), home),
				refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), fam("f1"), dev("laptop"), from("198.51.100.7", 64999, "DE")),
			},
		},
		{
			name: "a new address inside the family's /24 is not a new network",
			events: []*event.Event{
				issue(at(0), tok("r0"), fam("f1"), home),
				refresh(at(15*time.Minute), event.OK, tok("r1"), parent("r0"), fam("f1"), from("203.0.113.99", 64999, "DE")),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, _ := run(t, nil, tt.events)
			got := ofKind(fs, finding.RefreshAnomaly)
			if tt.want == "" {
				if len(fs) != 0 {
					t.Fatalf("want no finding, got %+v", fs)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("want one refresh_anomaly, got %+v", fs)
			}
			if got[0].Severity != finding.Ticket || got[0].Key != "f1" {
				t.Errorf("finding: %+v", got[0])
			}
			if sig := got[0].Evidence["signals"].([]string); sig[0] != tt.want {
				t.Errorf("signals = %v, want %s", sig, tt.want)
			}
		})
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// steadyRefreshes spreads perMinute refreshes of one client (each by its own
// user and family) over every minute in [from, to).
func steadyRefreshes(clientName string, from, to time.Duration, perMinute func(minute int) int) []*event.Event {
	var out []*event.Event
	n := 0
	for m := from; m < to; m += time.Minute {
		k := perMinute(int(m / time.Minute))
		for i := 0; i < k; i++ {
			n++
			ts := at(m + time.Duration(i)*time.Minute/time.Duration(k))
			user := "u" + itoa(n%5000)
			out = append(out, refresh(ts, event.OK, clientID(clientName), subj(user), fam("fam-"+user), tok("t"+itoa(n)), dev("d-"+user)))
		}
	}
	return out
}

func TestRefreshRateAgainstBaseline(t *testing.T) {
	wobble := func(base int) func(int) int {
		return func(m int) int { return base + (m*7919)%(base/5+1) - base/10 }
	}
	tests := []struct {
		name   string
		events []*event.Event
		want   string // finding key, "" = none
	}{
		{
			name: "client jumping from about 50 to 500 refreshes a minute",
			events: steadyRefreshes("mobile-app", 0, 31*time.Minute, func(m int) int {
				if m >= 25 {
					return 500
				}
				return wobble(50)(m)
			}),
			want: "client:mobile-app",
		},
		{
			name:   "busy client whose many users refresh on a normal cadence",
			events: steadyRefreshes("web", 0, 40*time.Minute, wobble(400)),
		},
		{
			name: "a new client's first busy minutes have no baseline yet",
			events: steadyRefreshes("batch", 0, 5*time.Minute, func(m int) int {
				if m >= 3 {
					return 300
				}
				return 2
			}),
		},
		{
			name: "a quiet client's handful of extra refreshes is not a rate",
			events: steadyRefreshes("cli", 0, 40*time.Minute, func(m int) int {
				if m == 35 {
					return 12
				}
				return 1
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, _ := run(t, nil, tt.events)
			var got []finding.Finding
			for _, f := range ofKind(fs, finding.RefreshAnomaly) {
				if strings.HasPrefix(f.Key, "client:") || strings.HasPrefix(f.Key, "subject:") {
					got = append(got, f)
				}
			}
			if tt.want == "" {
				if len(got) != 0 {
					t.Fatalf("want no rate anomaly, got %+v", got)
				}
				return
			}
			if len(got) != 1 || got[0].Key != tt.want {
				t.Fatalf("want %s, got %+v", tt.want, got)
			}
			if z := got[0].Evidence["z_score"].(float64); z < 6 {
				t.Errorf("z = %v, want at least the threshold", z)
			}
		})
	}
}

func TestSubjectRefreshingFarAboveItsOwnBaseline(t *testing.T) {
	var events []*event.Event
	// One user refreshing once every few minutes for 30 minutes...
	for m := 0; m < 30; m += 3 {
		events = append(events, refresh(at(time.Duration(m)*time.Minute), event.OK, subj("alice"), fam("fa"), dev("laptop")))
	}
	// ...then 40 refreshes in one minute from many families (a script with her tokens).
	for i := 0; i < 40; i++ {
		events = append(events, refresh(at(31*time.Minute+time.Duration(i)*time.Second), event.OK, subj("alice"), fam("x"+itoa(i)), dev("bot")))
	}
	fs, _ := run(t, nil, events)
	var keys []string
	for _, f := range fs {
		keys = append(keys, f.Key)
	}
	if len(ofKind(fs, finding.RefreshAnomaly)) != 1 || fs[0].Key != "subject:alice" {
		t.Fatalf("want one anomaly for subject:alice, got %v", keys)
	}
}
