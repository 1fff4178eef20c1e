package detect

import (
	"math"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// skewedFleet: three services validate tokens all along; skewed's clock is
// off by offset. With offset > 0 it rejects as expired tokens whose exp
// passed on its clock but not yet on the issuer's; with offset < 0 it rejects
// fresh tokens as not yet valid. Fresh tokens are first used within 2 s of
// issue, and clients use a token until its last seconds.
func skewedFleet(offset time.Duration, skewed string, n int) []*event.Event {
	return skewedFleetUsing(offset, skewed, n, func(i int) time.Duration { return time.Duration(i%5) * 400 * time.Millisecond })
}

// skewedFleetUsing places each rejected use jitter(i) inside the skew window.
func skewedFleetUsing(offset time.Duration, skewed string, n int, jitterOf func(i int) time.Duration) []*event.Event {
	var out []*event.Event
	life := 15 * time.Minute
	for i := 0; i < n; i++ {
		issued := at(time.Duration(i) * 10 * time.Second)
		iat, exp := issued, issued.Add(life)
		id := "t" + itoa(i)
		for _, s := range []string{"orders", "billing", skewed} {
			out = append(out, validate(iat.Add(30*time.Second), event.OK, svc(s), tok(id), times(iat, exp)))
		}
		jitter := jitterOf(i)
		switch {
		case offset > 0: // the last use, jitter before exp (true time), seen by the fast clock
			out = append(out, validate(exp.Add(-jitter).Add(offset), event.Expired, svc(skewed), tok(id), times(iat, exp)))
		case offset < 0: // the first use, jitter after issue, seen by the slow clock
			out = append(out, validate(iat.Add(jitter).Add(offset), event.NotYetValid, svc(skewed), tok(id), times(iat, exp)))
		}
	}
	return out
}

func TestClockSkew(t *testing.T) {
	tests := []struct {
		name     string
		events   []*event.Event
		wantSkew float64 // seconds; 0 = no finding
	}{
		{name: "validator clock two minutes ahead", events: skewedFleet(2*time.Minute, "search", 60), wantSkew: 120},
		{name: "validator clock 90 seconds behind", events: skewedFleet(-90*time.Second, "search", 60), wantSkew: -90},
		{
			name: "clock five minutes ahead, tokens used evenly through their last five minutes",
			events: skewedFleetUsing(5*time.Minute, "search", 64, func(i int) time.Duration {
				return time.Duration((i*37)%64) * 5 * time.Minute / 64
			}),
			wantSkew: 300,
		},
		{
			name: "clock a minute behind, fresh tokens used evenly through their first minute",
			events: skewedFleetUsing(-time.Minute, "search", 64, func(i int) time.Duration {
				return time.Duration((i*37)%64) * time.Minute / 64
			}),
			wantSkew: -60,
		},
		{
			name: "the gateway meets five times the expiries of the services behind it",
			events: func() []*event.Event {
				var out []*event.Event
				for i := 0; i < 300; i++ {
					ts := at(time.Duration(i) * 2 * time.Second)
					// Ordinary expiry: a client's next request lands a
					// memoryless gap (mean 15 s) after exp.
					gap := time.Duration(-15 * math.Log(1-(float64((i*37)%60)+0.5)/60) * float64(time.Second))
					expired := validate(ts, event.Expired, svc("gateway"), tok("old"+itoa(i)), times(ts.Add(-gap-15*time.Minute), ts.Add(-gap)))
					out = append(out, expired)
					if i%5 == 0 {
						backend := *expired
						backend.Service = "orders"
						out = append(out, &backend)
					}
					for _, s := range []string{"gateway", "orders"} {
						for j := 0; j < 20; j++ {
							out = append(out, validate(ts, event.OK, svc(s), tok("new"+itoa(i)), times(ts.Add(-time.Minute), ts.Add(14*time.Minute))))
						}
					}
				}
				return out
			}(),
		},
		{
			name: "clients presenting long-expired tokens everywhere is normal expiry",
			events: func() []*event.Event {
				var out []*event.Event
				for i := 0; i < 200; i++ {
					ts := at(time.Duration(i) * 5 * time.Second)
					for _, s := range []string{"orders", "search"} {
						out = append(out, validate(ts, event.Expired, svc(s), tok("old"+itoa(i)), times(ts.Add(-3*time.Hour), ts.Add(-2*time.Hour))))
						out = append(out, validate(ts, event.OK, svc(s), tok("new"+itoa(i)), times(ts.Add(-time.Minute), ts.Add(14*time.Minute))))
					}
				}
				return out
			}(),
		},
		{
			name: "tokens just past expiry at every service alike is normal expiry",
			events: func() []*event.Event {
				var out []*event.Event
				for i := 0; i < 200; i++ {
					ts := at(time.Duration(i) * 5 * time.Second)
					for _, s := range []string{"orders", "billing", "search"} {
						out = append(out, validate(ts, event.Expired, svc(s), tok("old"+itoa(i)), times(ts.Add(-16*time.Minute), ts.Add(-time.Duration(i%60)*time.Second))))
						for j := 0; j < 5; j++ {
							out = append(out, validate(ts, event.OK, svc(s), tok("new"+itoa(i)), times(ts.Add(-time.Minute), ts.Add(14*time.Minute))))
						}
					}
				}
				return out
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, _ := run(t, nil, tt.events)
			if tt.wantSkew == 0 {
				if len(fs) != 0 {
					t.Fatalf("want no finding, got %+v", fs)
				}
				return
			}
			if len(fs) != 1 || fs[0].Kind != finding.ClockSkew {
				t.Fatalf("want one clock_skew, got %+v", fs)
			}
			f := fs[0]
			if f.Service != "search" || f.Key != "service:search" || f.Severity != finding.Ticket {
				t.Errorf("finding: %+v", f)
			}
			got := f.Evidence["skew_s"].(float64)
			if math.Abs(got-tt.wantSkew) > 3 {
				t.Errorf("skew_s = %v, want %v within 3 s", got, tt.wantSkew)
			}
			if f.Evidence["samples"].(int) < 10 {
				t.Errorf("samples = %v", f.Evidence["samples"])
			}
		})
	}
}
