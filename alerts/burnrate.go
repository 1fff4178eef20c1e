package alerts

import (
	"fmt"
	"sort"
	"time"

	"github.com/tokenwatch/tokenwatch/slo"
)

// BurnWindow is one multiwindow condition: the alert fires when the error
// ratio over both Long and Short exceeds Factor × error budget. Long decides
// that enough budget went to matter; Short makes the alert stop soon after
// the burn stops, instead of an hour later.
type BurnWindow struct {
	Severity string
	Long     time.Duration
	Short    time.Duration
	// BudgetFraction is the share of the whole window's error budget that,
	// spent within Long, is worth this severity.
	BudgetFraction float64
}

// DefaultBurnWindows is the table from the Google SRE workbook ("Alerting on
// SLOs", multiwindow multi-burn-rate): for a 30-day SLO it gives the familiar
// 14.4x/6x pages and 3x/1x tickets. It is data, not code, so a reader sees
// the whole policy at once.
func DefaultBurnWindows() []BurnWindow {
	return []BurnWindow{
		{Severity: SeverityPage, Long: time.Hour, Short: 5 * time.Minute, BudgetFraction: 0.02},
		{Severity: SeverityPage, Long: 6 * time.Hour, Short: 30 * time.Minute, BudgetFraction: 0.05},
		{Severity: SeverityTicket, Long: 24 * time.Hour, Short: 2 * time.Hour, BudgetFraction: 0.10},
		{Severity: SeverityTicket, Long: 3 * 24 * time.Hour, Short: 6 * time.Hour, BudgetFraction: 0.10},
	}
}

// Severities an alert can carry, for Alertmanager routing.
const (
	SeverityPage   = "page"
	SeverityTicket = "ticket"
)

// Factor is the burn rate at which BudgetFraction of the budget is spent in
// Long:
//
//	factor = budget_fraction × slo_window / long_window
//
// A burn rate of 1 spends exactly the budget over the SLO window, so spending
// the fraction f in the time L means burning f × W / L times faster. With a
// 30-day window: 0.02 × 720h / 1h = 14.4, 0.05 × 720h / 6h = 6,
// 0.10 × 720h / 24h = 3 and 0.10 × 720h / 72h = 1.
func (w BurnWindow) Factor(sloWindow time.Duration) float64 {
	return w.BudgetFraction * float64(sloWindow) / float64(w.Long)
}

// RatioWindows lists every window the alerts read, shortest first: the
// windows of the recording rules.
func RatioWindows(windows []BurnWindow) []time.Duration {
	seen := map[time.Duration]bool{}
	var out []time.Duration
	for _, w := range windows {
		for _, d := range []time.Duration{w.Short, w.Long} {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// checkBurnWindows refuses an SLO the burn-rate table cannot alert on
// sensibly: a window shorter than the longest alert window, or a target so
// low that a condition's threshold is an error ratio above 100 % and so could
// never fire (silent alerts are worse than a refused spec).
func checkBurnWindows(o *slo.SLO, windows []BurnWindow) error {
	for _, w := range windows {
		if w.Long > o.Window.Duration {
			return fmt.Errorf("slo %s: window %s is shorter than the %s alert window; use a window of at least %s",
				o.Name, slo.FormatDuration(o.Window.Duration), slo.FormatDuration(w.Long), slo.FormatDuration(w.Long))
		}
		if th := w.Factor(o.Window.Duration) * o.ErrorBudget(); th >= 1 {
			return fmt.Errorf("slo %s: target %v is too low for the %.4gx burn over %s (the error ratio would have to exceed %.4g, more than 100%%); raise the target",
				o.Name, o.Target, w.Factor(o.Window.Duration), slo.FormatDuration(w.Long), th)
		}
	}
	return nil
}
