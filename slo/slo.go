// Package slo is the SLO spec: which SLIs have objectives, what counts as good,
// and over which window. The spec is data; alerts/ turns it into rules, sli/
// uses its outcome classes for the good ratio, dashboards/ draws its targets.
package slo

import (
	"bytes"
	_ "embed"
	"fmt"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tokenwatch/tokenwatch/event"
)

// SLI names the indicators an SLO can be written on.
const (
	SLIValidationGoodRatio   = "validation_good_ratio"  // M1
	SLIValidationLatency     = "validation_latency"     // M2
	SLIRefreshSuccess        = "refresh_success"        // M3
	SLIRevocationPropagation = "revocation_propagation" // M4
)

// Spec is a whole SLO file.
type Spec struct {
	SLOs []SLO `yaml:"slos"`
}

// SLO is one objective.
type SLO struct {
	Name        string   `yaml:"name"`
	SLI         string   `yaml:"sli"`
	Target      float64  `yaml:"target"` // fraction good, e.g. 0.999
	Window      Duration `yaml:"window"`
	Description string   `yaml:"description,omitempty"`
	// For ratio SLIs: outcomes that are good and outcomes that are bad.
	// Outcomes named in neither list count as good (the system working).
	Good []string `yaml:"good,omitempty"`
	Bad  []string `yaml:"bad,omitempty"`
	// For threshold SLIs (latency, propagation): an event is good when its
	// value is at or under ThresholdSeconds.
	ThresholdSeconds float64 `yaml:"threshold_seconds,omitempty"`
	// Team owns the alerts (identity, platform, security).
	Team string `yaml:"team,omitempty"`
}

// Duration is a time.Duration written like "30d", "1h" or "90s" in YAML.
type Duration struct{ time.Duration }

// UnmarshalYAML accepts Prometheus-style durations, including d and w.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration back in its shortest Prometheus form.
func (d Duration) MarshalYAML() (any, error) { return FormatDuration(d.Duration), nil }

// ParseDuration parses "30d", "6h", "5m", "90s", "2w".
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	unit := s[len(s)-1]
	mult := time.Duration(0)
	switch unit {
	case 'd':
		mult = 24 * time.Hour
	case 'w':
		mult = 7 * 24 * time.Hour
	}
	if mult != 0 {
		var n int
		if _, err := fmt.Sscanf(s[:len(s)-1], "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != s[:len(s)-1] {
			return 0, fmt.Errorf("duration %q: want a whole number before %q", s, string(unit))
		}
		return time.Duration(n) * mult, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want e.g. 30d, 6h, 5m or 90s", s)
	}
	return d, nil
}

// FormatDuration writes d in the largest whole Prometheus unit.
func FormatDuration(d time.Duration) string {
	switch {
	case d > 0 && d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d > 0 && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d > 0 && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", int64(d/time.Second))
}

//go:embed default.yaml
var defaultYAML []byte

// Default is the spec used when the user names none.
func Default() *Spec {
	s, err := Parse(defaultYAML)
	if err != nil {
		panic("slo: embedded default spec is invalid: " + err.Error())
	}
	return s
}

// DefaultYAML is the default spec's text, for `tokenwatch alerts rules` docs.
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }

// Load reads and validates a spec file.
func Load(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("slo spec: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("slo spec %s: %w", path, err)
	}
	return s, nil
}

// Parse decodes and validates a spec; unknown keys are errors.
func Parse(b []byte) (*Spec, error) {
	var s Spec
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Validate checks every SLO and names the one that is wrong.
func (s *Spec) Validate() error {
	if len(s.SLOs) == 0 {
		return fmt.Errorf("slos: at least one SLO is needed")
	}
	seen := map[string]bool{}
	for i, o := range s.SLOs {
		where := fmt.Sprintf("slos[%d]", i)
		if o.Name != "" {
			where = fmt.Sprintf("slos[%d] (%s)", i, o.Name)
		}
		if o.Name == "" || strings.ContainsAny(o.Name, " \t\"'{}") {
			return fmt.Errorf("%s.name: want a non-empty name without spaces, quotes or braces", where)
		}
		if seen[o.Name] {
			return fmt.Errorf("%s.name: %q is used twice", where, o.Name)
		}
		seen[o.Name] = true
		if !(o.Target > 0 && o.Target < 1) {
			return fmt.Errorf("%s.target: want a fraction between 0 and 1 exclusive (e.g. 0.999), got %v", where, o.Target)
		}
		if o.Window.Duration < time.Hour {
			return fmt.Errorf("%s.window: want at least 1h (e.g. 30d), got %s", where, FormatDuration(o.Window.Duration))
		}
		switch o.SLI {
		case SLIValidationGoodRatio, SLIRefreshSuccess:
			if len(o.Bad) == 0 {
				return fmt.Errorf("%s.bad: a ratio SLO must name its bad outcomes (one of %s)", where, strings.Join(event.Outcomes(), ", "))
			}
			inGood := map[string]bool{}
			for _, g := range o.Good {
				if _, ok := event.ParseOutcome(g); !ok {
					return fmt.Errorf("%s.good: unknown outcome %q (want one of %s)", where, g, strings.Join(event.Outcomes(), ", "))
				}
				inGood[g] = true
			}
			for _, b := range o.Bad {
				if _, ok := event.ParseOutcome(b); !ok {
					return fmt.Errorf("%s.bad: unknown outcome %q (want one of %s)", where, b, strings.Join(event.Outcomes(), ", "))
				}
				if inGood[b] {
					return fmt.Errorf("%s: outcome %q is both good and bad", where, b)
				}
			}
			if o.ThresholdSeconds != 0 {
				return fmt.Errorf("%s.threshold_seconds: only for validation_latency and revocation_propagation", where)
			}
		case SLIValidationLatency, SLIRevocationPropagation:
			if o.ThresholdSeconds <= 0 {
				return fmt.Errorf("%s.threshold_seconds: want a positive number of seconds", where)
			}
			if len(o.Good) > 0 || len(o.Bad) > 0 {
				return fmt.Errorf("%s: good/bad outcomes are only for ratio SLIs", where)
			}
		default:
			return fmt.Errorf("%s.sli: unknown SLI %q (want %s, %s, %s or %s)", where, o.SLI,
				SLIValidationGoodRatio, SLIValidationLatency, SLIRefreshSuccess, SLIRevocationPropagation)
		}
		switch o.Team {
		case "", "identity", "platform", "security":
		default:
			return fmt.Errorf("%s.team: want identity, platform or security, got %q", where, o.Team)
		}
	}
	return nil
}

// IsBad reports whether an outcome counts against this ratio SLO.
func (o *SLO) IsBad(out event.Outcome) bool {
	name := out.String()
	for _, b := range o.Bad {
		if b == name {
			return true
		}
	}
	return false
}

// ErrorBudget is the fraction of events allowed to be bad (1 - target).
func (o *SLO) ErrorBudget() float64 { return 1 - o.Target }

// RevocationThreshold is the revocation-propagation objective's threshold,
// or def when the spec has none: the exporter, the tracker's early breach
// report and the slow-revocation detector all judge a revoke by it.
func (s *Spec) RevocationThreshold(def time.Duration) time.Duration {
	if o := s.Find(SLIRevocationPropagation); o != nil {
		return time.Duration(o.ThresholdSeconds * float64(time.Second))
	}
	return def
}

// Find returns the first SLO on the given SLI, or nil.
func (s *Spec) Find(sli string) *SLO {
	for i := range s.SLOs {
		if s.SLOs[i].SLI == sli {
			return &s.SLOs[i]
		}
	}
	return nil
}
