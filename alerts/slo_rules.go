package alerts

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tokenwatch/tokenwatch/slo"
)

// Metric names the SLO rules read (docs/architecture.md).
const (
	metricValidations          = "tokenwatch_validations_total"
	metricValidationLatency    = "tokenwatch_validation_latency_seconds"
	metricRefreshes            = "tokenwatch_refreshes_total"
	metricPropagation          = "tokenwatch_revocation_propagation_seconds"
	metricRevocations          = "tokenwatch_revocations_total"
	metricRevocationsNotPropag = "tokenwatch_revocations_not_propagated_total"
)

// ErrorRatioRecord is the recording rule name for an SLO error ratio over
// window w: tokenwatch:slo_error_ratio:rate<W>, the contract with dashboards.
func ErrorRatioRecord(w time.Duration) string {
	return "tokenwatch:slo_error_ratio:rate" + slo.FormatDuration(w)
}

// SLOAlertName is the CamelCase alert name of an SLO's burn-rate alerts:
// "token-validation" becomes TokenValidationErrorBudgetBurn. Page and ticket
// share the name (severity tells them apart), so Alertmanager can inhibit the
// ticket while the page fires.
func SLOAlertName(sloName string) string {
	return camel(sloName) + "ErrorBudgetBurn"
}

// camel joins the words of a dashed, dotted or underscored name in CamelCase.
func camel(s string) string {
	var b strings.Builder
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		b.WriteString(strings.ToUpper(w[:1]) + w[1:])
	}
	return b.String()
}

// sloLabels are the labels each SLI's metrics carry, so the error ratio is
// kept per (service, issuer, region) where the metric has them.
func sloLabels(sli string) []string {
	if sli == slo.SLIRevocationPropagation {
		return []string{"service"}
	}
	return []string{"service", "issuer", "region"}
}

func sloTeam(o *slo.SLO) string {
	if o.Team != "" {
		return o.Team
	}
	return "identity"
}

func sloRuleFile(o *slo.SLO, opts Options) (RuleFile, error) {
	if err := checkBurnWindows(o, opts.BurnWindows); err != nil {
		return RuleFile{}, err
	}
	if o.SLI == slo.SLIValidationLatency || o.SLI == slo.SLIRevocationPropagation {
		if err := checkThreshold(o, opts.Buckets); err != nil {
			return RuleFile{}, err
		}
	}
	var recs []Rule
	for _, w := range RatioWindows(opts.BurnWindows) {
		recs = append(recs, Rule{
			Record: ErrorRatioRecord(w),
			Expr:   errorRatioExpr(o, slo.FormatDuration(w)),
			Labels: map[string]string{"slo": o.Name},
		})
	}
	var alerts []Rule
	for _, sev := range []string{SeverityPage, SeverityTicket} {
		var ws []BurnWindow
		for _, w := range opts.BurnWindows {
			if w.Severity == sev {
				ws = append(ws, w)
			}
		}
		if len(ws) > 0 {
			alerts = append(alerts, burnAlert(o, sev, ws, opts))
		}
	}
	return RuleFile{Groups: []RuleGroup{
		{Name: "tokenwatch-slo-" + o.Name + "-error-ratios", Rules: recs},
		{Name: "tokenwatch-slo-" + o.Name + "-alerts", Rules: alerts},
	}}, nil
}

// errorRatioExpr is the fraction of bad events over window w. A missing
// "bad" series (nothing has gone wrong yet) counts as zero rather than
// hiding the ratio, so dashboards show 0 % instead of no data.
func errorRatioExpr(o *slo.SLO, w string) string {
	by := "sum by (" + strings.Join(sloLabels(o.SLI), ", ") + ")"
	rate := func(sel string) string { return fmt.Sprintf("%s (rate(%s[%s]))", by, sel, w) }
	orZero := func(expr, total string) string {
		return "(\n  " + expr + "\n  or\n  0 * " + total + "\n)"
	}
	switch o.SLI {
	case slo.SLIValidationGoodRatio, slo.SLIRefreshSuccess:
		metric := metricValidations
		if o.SLI == slo.SLIRefreshSuccess {
			metric = metricRefreshes
		}
		all := rate(metric)
		bad := rate(fmt.Sprintf(`%s{outcome=~%q}`, metric, strings.Join(o.Bad, "|")))
		return orZero(bad, all) + "\n/\n" + all
	case slo.SLIValidationLatency:
		return "1 - (\n  " + rate(fmt.Sprintf("%s_bucket{%s}", metricValidationLatency, leMatcher(o.ThresholdSeconds))) +
			"\n  /\n  " + rate(metricValidationLatency+"_count") + "\n)"
	case slo.SLIRevocationPropagation:
		total := rate(metricRevocations)
		slow := "(" + rate(metricPropagation+"_count") + " - " +
			rate(fmt.Sprintf("%s_bucket{%s}", metricPropagation, leMatcher(o.ThresholdSeconds))) + ")"
		return "(\n" + orZero(slow, total) + "\n+\n" + orZero(rate(metricRevocationsNotPropag), total) + "\n)\n/\n" + total
	}
	// Spec.Validate has already refused any other SLI.
	panic("alerts: unknown SLI " + o.SLI)
}

func burnAlert(o *slo.SLO, severity string, ws []BurnWindow, opts Options) Rule {
	budget := o.ErrorBudget()
	var conds, prose []string
	for _, w := range ws {
		f := w.Factor(o.Window.Duration)
		th := fmt.Sprintf("(%s * %s)", num(f), num(budget))
		sel := fmt.Sprintf("{slo=%q}", o.Name)
		conds = append(conds, fmt.Sprintf("(\n  %s%s > %s\n  and\n  %s%s > %s\n)",
			ErrorRatioRecord(w.Long), sel, th, ErrorRatioRecord(w.Short), sel, th))
		prose = append(prose, fmt.Sprintf("above %sx the budget (%s) over both %s and %s, which spends %s of the %s budget in %s",
			num(f), pct(f*budget), slo.FormatDuration(w.Long), slo.FormatDuration(w.Short),
			pct(w.BudgetFraction), slo.FormatDuration(o.Window.Duration), slo.FormatDuration(w.Long)))
	}
	name := SLOAlertName(o.Name)
	where := "{{ $labels.service }}"
	if len(sloLabels(o.SLI)) == 3 {
		where += " (issuer {{ $labels.issuer }}, region {{ $labels.region }})"
	}
	speed := "fast"
	if severity == SeverityTicket {
		speed = "steadily"
	}
	desc := fmt.Sprintf("SLO %s: %s Objective %s good over %s (error budget %s); bad means %s. "+
		"The error ratio on %s is %s.",
		o.Name, sentence(o.Description), pct(o.Target), slo.FormatDuration(o.Window.Duration), pct(budget),
		badMeans(o), where, strings.Join(prose, ", or "))
	return Rule{
		Alert:  name,
		Expr:   strings.Join(conds, "\nor\n"),
		Labels: map[string]string{"severity": severity, "team": sloTeam(o)},
		Annotations: map[string]string{
			"summary":     fmt.Sprintf("{{ $labels.service }} is burning the %s error budget %s", o.Name, speed),
			"description": desc,
			"runbook_url": RunbookURL(opts.RunbookBaseURL, name),
		},
	}
}

func badMeans(o *slo.SLO) string {
	switch o.SLI {
	case slo.SLIValidationLatency:
		return "a validation slower than " + seconds(o.ThresholdSeconds)
	case slo.SLIRevocationPropagation:
		return "a revoke not propagated to every service within " + seconds(o.ThresholdSeconds)
	}
	return "outcome " + strings.Join(o.Bad, ", ")
}

func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || strings.HasSuffix(s, ".") {
		return s
	}
	return s + "."
}

// num writes a float without binary noise (1-0.999 is 0.0010000000000000009).
func num(f float64) string {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'g', 10, 64), 64)
	return strconv.FormatFloat(r, 'g', -1, 64)
}

func pct(f float64) string { return num(f*100) + "%" }

func seconds(s float64) string {
	if s < 1 {
		return num(s*1000) + " ms"
	}
	return num(s) + " s"
}
