package dashboards

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"

	"github.com/tokenwatch/tokenwatch/alerts"
	"github.com/tokenwatch/tokenwatch/slo"
)

// sloFor returns the spec's first SLO on an SLI, or the default spec's: the
// boards draw every SLI, and a spec without an objective on one still gets
// the default's outcome classes and threshold as a reference.
func (o Options) sloFor(sli string) *slo.SLO {
	if s := o.SLO.Find(sli); s != nil {
		return s
	}
	return slo.Default().Find(sli)
}

// sloSelector is the label matchers an SLO's recording rule can take: the
// propagation SLI is kept per service only (the revoke's emitter), the
// others per service, issuer and region.
func sloSelector(s *slo.SLO) string {
	sel := fmt.Sprintf(`slo=%q, `, s.Name)
	if s.SLI == slo.SLIRevocationPropagation {
		return sel + `service=~"$service"`
	}
	return sel + promSelector
}

// errorRatio is an SLO's worst error ratio over window w among the selected
// label sets, read from the recording rule the alerts read.
func errorRatio(s *slo.SLO, w time.Duration) string {
	return fmt.Sprintf("max(%s{%s})", alerts.ErrorRatioRecord(w), sloSelector(s))
}

// burnRate is the error ratio over w divided by the error budget: 1 spends
// the budget exactly over the SLO window.
func burnRate(s *slo.SLO, w time.Duration) string {
	return fmt.Sprintf("%s / %s", errorRatio(s, w), num(s.ErrorBudget()))
}

// burnTargets is one burn-rate target per SLO for window w; instant ones
// are for stat panels that show the value now.
func (o Options) burnTargets(w time.Duration, instant bool) []cog.Builder[variants.Dataquery] {
	var out []cog.Builder[variants.Dataquery]
	for i := range o.SLO.SLOs {
		s := &o.SLO.SLOs[i]
		q := o.promQL(refID(i), s.Name, burnRate(s, w))
		if instant {
			q = q.Instant()
		}
		out = append(out, q)
	}
	return out
}

// pageFactor is the lowest burn rate that pages, for the executive stat's
// red threshold: the factors depend on the SLO window, and the boards use
// the first SLO's (the default spec's SLOs all share 30 days).
func (o Options) pageFactor() float64 {
	f := 0.0
	for _, w := range o.BurnWindows {
		if w.Severity == alerts.SeverityPage {
			if x := w.Factor(o.SLO.SLOs[0].Window.Duration); f == 0 || x < f {
				f = x
			}
		}
	}
	if f == 0 {
		return o.BurnWindows[0].Factor(o.SLO.SLOs[0].Window.Duration)
	}
	return f
}

// refID names the i-th target of a panel: A, B, ..., Z, AA, AB, ...
func refID(i int) string {
	s := string(rune('A' + i%26))
	if i >= 26 {
		return refID(i/26-1) + s
	}
	return s
}

func joinOutcomes(os []string) string { return strings.Join(os, ", ") }

// num writes a number without trailing zeros (0.001, 60, 14.4).
func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func percent(f float64) string { return num(roundTo(f*100, 6)) + "%" }

func seconds(s float64) string {
	if s >= 1 {
		return num(s) + " s"
	}
	return num(roundTo(s*1000, 6)) + " ms"
}

func roundTo(f float64, digits int) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', digits, 64), 64)
	return v
}
