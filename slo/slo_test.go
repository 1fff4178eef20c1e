package slo

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

func TestTheDefaultSpecHasTheFourObjectivesOfTheBrief(t *testing.T) {
	s := Default()
	cases := []struct {
		sli       string
		target    float64
		threshold float64
	}{
		{SLIValidationGoodRatio, 0.999, 0},
		{SLIValidationLatency, 0.95, 0.05},
		{SLIRefreshSuccess, 0.995, 0},
		{SLIRevocationPropagation, 0.99, 60},
	}
	for _, c := range cases {
		o := s.Find(c.sli)
		if o == nil {
			t.Fatalf("no SLO on %s", c.sli)
		}
		if o.Target != c.target || o.ThresholdSeconds != c.threshold || o.Window.Duration != 30*24*time.Hour {
			t.Errorf("%s: target %v threshold %v window %v", c.sli, o.Target, o.ThresholdSeconds, o.Window.Duration)
		}
	}
	v := s.Find(SLIValidationGoodRatio)
	for _, bad := range []event.Outcome{event.Error, event.UnknownKid, event.BadSignature} {
		if !v.IsBad(bad) {
			t.Errorf("%s should count against validation", bad)
		}
	}
	for _, good := range []event.Outcome{event.OK, event.Expired, event.Revoked, event.Malformed, event.BadAudience} {
		if v.IsBad(good) {
			t.Errorf("%s is the system working, not failing", good)
		}
	}
}

func TestSpecErrorsNameTheSLOAndTheKey(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"no slos", "slos: []", "at least one SLO"},
		{"unknown key", "slos:\n  - name: a\n    sli: refresh_success\n    target: 0.9\n    window: 30d\n    bad: [error]\n    colour: red\n", "colour"},
		{"target as a percentage", "slos:\n  - name: a\n    sli: refresh_success\n    target: 99.5\n    window: 30d\n    bad: [error]\n", "slos[0] (a).target: want a fraction"},
		{"unknown sli", "slos:\n  - name: a\n    sli: vibes\n    target: 0.9\n    window: 30d\n", `unknown SLI "vibes"`},
		{"ratio without bad outcomes", "slos:\n  - name: a\n    sli: validation_good_ratio\n    target: 0.9\n    window: 30d\n", "must name its bad outcomes"},
		{"unknown outcome", "slos:\n  - name: a\n    sli: validation_good_ratio\n    target: 0.9\n    window: 30d\n    bad: [oops]\n", `unknown outcome "oops"`},
		{"outcome both good and bad", "slos:\n  - name: a\n    sli: validation_good_ratio\n    target: 0.9\n    window: 30d\n    good: [error]\n    bad: [error]\n", "both good and bad"},
		{"latency without threshold", "slos:\n  - name: a\n    sli: validation_latency\n    target: 0.9\n    window: 30d\n", "threshold_seconds"},
		{"bad window", "slos:\n  - name: a\n    sli: refresh_success\n    target: 0.9\n    window: soon\n    bad: [error]\n", "duration \"soon\""},
		{"duplicate names", "slos:\n  - {name: a, sli: refresh_success, target: 0.9, window: 30d, bad: [error]}\n  - {name: a, sli: refresh_success, target: 0.9, window: 30d, bad: [error]}\n", "used twice"},
		{"unknown team", "slos:\n  - {name: a, sli: refresh_success, target: 0.9, window: 30d, bad: [error], team: sales}\n", "team"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want it to mention %q", err, c.want)
			}
		})
	}
}

func TestDurationsReadAndWriteInPrometheusForm(t *testing.T) {
	for in, want := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "6h": 6 * time.Hour, "90s": 90 * time.Second} {
		d, err := ParseDuration(in)
		if err != nil || d != want {
			t.Errorf("ParseDuration(%q) = %v, %v", in, d, err)
		}
	}
	if FormatDuration(30*24*time.Hour) != "30d" || FormatDuration(90*time.Minute) != "90m" {
		t.Errorf("FormatDuration: %s %s", FormatDuration(30*24*time.Hour), FormatDuration(90*time.Minute))
	}
}

func TestTheRevocationThresholdComesFromTheSpecWhenItHasOne(t *testing.T) {
	if got := Default().RevocationThreshold(time.Hour); got != time.Minute {
		t.Errorf("default spec: %v, want its 60 s", got)
	}
	s, err := Parse([]byte("slos:\n  - {name: a, sli: refresh_success, target: 0.9, window: 30d, bad: [error]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.RevocationThreshold(90 * time.Second); got != 90*time.Second {
		t.Errorf("a spec without a propagation SLO: %v, want the fallback", got)
	}
}
