package detect

import (
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

func rotate(ts time.Time, newKid, oldKid string) *event.Event {
	return ev(ts, event.KindKeyRotate, event.OK, svc("idp"), kid(newKid), prevKid(oldKid))
}

// traffic validates a token every few seconds at each service between from
// and to, with the given kid and outcome.
func traffic(from, to, step time.Duration, k string, outcome event.Outcome, services ...string) []*event.Event {
	var out []*event.Event
	n := 0
	for d := from; d < to; d += step {
		for _, s := range services {
			n++
			out = append(out, validate(at(d), outcome, svc(s), kid(k), tok(s+itoa(n))))
		}
	}
	return out
}

func cat(parts ...[]*event.Event) []*event.Event {
	var out []*event.Event
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

type rotationCase struct {
	name         string
	events       []*event.Event
	wantKid      string // "" = no finding
	wantSignal   string
	wantServices int // services named in evidence; 0 means only orders
}

func rotationCases() []rotationCase {
	return []rotationCase{
		{
			name: "one service rejects the new kid after a rotation",
			events: cat(
				[]*event.Event{issue(at(0), kid("k1"))},
				traffic(0, 20*time.Minute, 5*time.Second, "k1", event.OK, "orders", "billing"),
				[]*event.Event{rotate(at(10*time.Minute), "k2", "k1")},
				traffic(10*time.Minute, 20*time.Minute, 5*time.Second, "k2", event.OK, "billing"),
				traffic(10*time.Minute, 20*time.Minute, 5*time.Second, "k2", event.UnknownKid, "orders"),
			),
			wantKid: "k2", wantSignal: "after_rotation",
		},
		{
			name: "bad signatures jump after a rotation",
			events: cat(
				traffic(0, 10*time.Minute, 2*time.Minute, "k1", event.BadSignature, "orders"),
				[]*event.Event{rotate(at(10*time.Minute), "k2", "k1")},
				traffic(10*time.Minute, 12*time.Minute, 3*time.Second, "k1", event.BadSignature, "orders"),
			),
			wantKid: "k2", wantSignal: "after_rotation",
		},
		{
			name: "a break spread thinly over many services",
			events: cat(
				traffic(0, 10*time.Minute, 5*time.Second, "k1", event.OK, "orders", "billing", "search", "profile", "cart", "auth"),
				[]*event.Event{rotate(at(10*time.Minute), "k2", "k1")},
				traffic(10*time.Minute, 10*time.Minute+20*time.Second, 10*time.Second, "k2", event.UnknownKid, "orders", "billing", "search", "profile", "cart", "auth"),
			),
			wantKid: "k2", wantSignal: "after_rotation", wantServices: 2,
		},
		{
			name: "a second rotation breaks a service still recovering from the first",
			events: cat(
				[]*event.Event{rotate(at(0), "k2", "k1")},
				traffic(time.Second, 10*time.Minute+30*time.Second, time.Second, "k2", event.UnknownKid, "orders"),
				[]*event.Event{rotate(at(20*time.Minute), "k3", "k2")},
				traffic(20*time.Minute+time.Second, 22*time.Minute, 2*time.Second, "k3", event.UnknownKid, "orders"),
			),
			wantKid: "k3", wantSignal: "after_rotation",
		},
		{
			name: "a rotation every service handled",
			events: cat(
				traffic(0, 10*time.Minute, 5*time.Second, "k1", event.OK, "orders", "billing"),
				[]*event.Event{rotate(at(10*time.Minute), "k2", "k1")},
				traffic(10*time.Minute, 20*time.Minute, 5*time.Second, "k2", event.OK, "orders", "billing"),
			),
		},
		{
			name: "steady forged-signature noise before and after a rotation",
			events: cat(
				traffic(0, 20*time.Minute, 30*time.Second, "k1", event.BadSignature, "orders"),
				[]*event.Event{rotate(at(10*time.Minute), "k2", "k1")},
			),
		},
		{
			name: "an unknown kid appearing without a rotation",
			events: cat(
				traffic(0, 5*time.Minute, 5*time.Second, "k1", event.OK, "orders"),
				traffic(5*time.Minute, 6*time.Minute, 5*time.Second, "k-rogue", event.UnknownKid, "orders"),
			),
			wantKid: "k-rogue", wantSignal: "unknown_kid",
		},
		{
			name: "garbage tokens each with a different made-up kid",
			events: func() []*event.Event {
				var out []*event.Event
				for i := 0; i < 30; i++ {
					out = append(out, validate(at(time.Duration(i)*time.Second), event.UnknownKid, svc("orders"), kid("junk"+itoa(i))))
				}
				return out
			}(),
		},
	}
}

func TestKeyRotationBreak(t *testing.T) {
	for _, tt := range rotationCases() {
		t.Run(tt.name, func(t *testing.T) {
			fs, _ := run(t, nil, tt.events)
			if tt.wantKid == "" {
				if len(fs) != 0 {
					t.Fatalf("want no finding, got %+v", fs)
				}
				return
			}
			var f finding.Finding
			for _, x := range fs {
				if x.Kid == tt.wantKid {
					f = x
				}
			}
			if f.Kind != finding.KeyRotationBreak {
				t.Fatalf("want a key_rotation_break for %s, got %+v", tt.wantKid, fs)
			}
			if f.Kid != tt.wantKid || f.Severity != finding.Page || (tt.wantServices == 0 && f.Service != "orders") {
				t.Errorf("finding: %+v", f)
			}
			if f.Evidence["kid"] != tt.wantKid || f.Evidence["signals"].([]string)[0] != tt.wantSignal {
				t.Errorf("evidence: %v", f.Evidence)
			}
			before, after := f.Evidence["failures_before"].(int), f.Evidence["failures_after"].(int)
			if after <= before {
				t.Errorf("failures before %d, after %d: not a jump", before, after)
			}
			svcs := f.Evidence["services"].([]map[string]any)
			if tt.wantServices == 0 && (len(svcs) != 1 || svcs[0]["service"] != "orders" || after < 5) {
				t.Errorf("services = %v, want only orders with at least 5 failures after", svcs)
			}
			if tt.wantServices > 0 && len(svcs) < tt.wantServices {
				t.Errorf("services = %v, want at least %d", svcs, tt.wantServices)
			}
		})
	}
}
