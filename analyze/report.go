package analyze

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/sli"
)

// Report is the result of one analyze run. It holds no wall-clock time and
// every list is sorted, so the same input gives a byte-identical report.
type Report struct {
	Events   Events            `json:"events"`
	SLIs     SLIs              `json:"slis"`
	Findings []finding.Finding `json:"findings"`
	// Errors are the first MaxErrorLines bad-line messages, each naming the
	// line (and OTLP record), the field, and what was expected.
	Errors []string `json:"errors,omitempty"`
}

// Events counts what the input held.
type Events struct {
	// Read is every event or message the decoder looked at: Accepted +
	// Rejected. A line holding an OTLP batch counts each of its records.
	Read     int64 `json:"read"`
	Accepted int64 `json:"accepted"`
	Rejected int64 `json:"rejected"`
	// RedactionViolations counts accepted events in which the redaction
	// guard replaced a leaked credential.
	RedactionViolations int64 `json:"redaction_violations"`
	// Duplicates counts accepted events dropped as copies of one already
	// read (Options.Dedup), as the pipeline drops them.
	Duplicates                   int64            `json:"duplicates"`
	RejectedByReason             map[string]int64 `json:"rejected_by_reason"`
	RedactionViolationsByEmitter map[string]int64 `json:"redaction_violations_by_emitter"`
}

// SLIs are M1–M10 over the whole input.
type SLIs struct {
	Overall     sli.Stats            `json:"overall"`
	ByService   map[string]sli.Stats `json:"by_service"`
	Refresh     Refresh              `json:"refresh"`
	Propagation Propagation          `json:"revocation_propagation"`
	Revocations []RevocationReport   `json:"revocations"`
}

// Refresh is M3 over the whole input.
type Refresh struct {
	Attempts    int64    `json:"attempts"`
	OK          int64    `json:"ok"`
	SuccessRate *float64 `json:"success_rate,omitempty"`
}

// Propagation is M4 over the whole input: the p95 of propagation over the
// revokes that propagated, and how many did not within the horizon.
type Propagation struct {
	Revokes       int      `json:"revokes"`
	Propagated    int      `json:"propagated"`
	NotPropagated int      `json:"not_propagated"`
	P95S          *float64 `json:"p95_s,omitempty"`
	MaxS          *float64 `json:"max_s,omitempty"`
	// Truncated counts revokes within one horizon of the end of the input,
	// whose result later events could still have changed.
	Truncated int `json:"truncated"`
}

// RevocationReport is one revoke's M4 result as the report shows it.
type RevocationReport = sli.Revocation

// MaxErrorLines bounds Report.Errors; every bad line is still counted.
const MaxErrorLines = 100

// WriteJSON writes the report as indented JSON. encoding/json sorts map
// keys, which with the sorted slices makes the output deterministic.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// WriteText writes a summary for a person reading a terminal.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) }
	ev := r.Events
	p("Events: %d read, %d accepted, %d rejected, %d redaction violations, %d duplicates dropped\n", ev.Read, ev.Accepted, ev.Rejected, ev.RedactionViolations, ev.Duplicates)
	for _, reason := range slices.Sorted(maps.Keys(ev.RejectedByReason)) {
		p("  rejected %s:\t%d\n", reason, ev.RejectedByReason[reason])
	}
	for _, line := range r.Errors {
		p("  %s\n", line)
	}
	o := r.SLIs.Overall
	p("\nValidations: %d, success %s, good (SLO) %s, latency p50 %s p95 %s p99 %s\n",
		o.Validations, pct(o.ValidationSuccessRate), pct(o.ValidationGoodRatio),
		ms(o.ValidationLatencyP50MS), ms(o.ValidationLatencyP95MS), ms(o.ValidationLatencyP99MS))
	p("Requests: %d, 401s %d (%s); introspections %d, errors %s; issued %d (%s/min)\n",
		o.Requests, o.Rejections401, pct(o.Rate401), o.Introspections, pct(o.IntrospectionErrorRate), o.Issued, num(o.IssuedPerMinute))
	p("Token size: p50 %s p95 %s max %s bytes; refresh anomalies %d; replay findings %d (%s of validations)\n",
		num(o.TokenBytesP50), num(o.TokenBytesP95), num(o.TokenBytesMax), o.RefreshAnomalies, o.ReplayFindings, pct(o.ReplayDetectionRate))
	p("Refresh: %d attempts, success %s\n", r.SLIs.Refresh.Attempts, pct(r.SLIs.Refresh.SuccessRate))

	if len(r.SLIs.ByService) > 0 {
		p("\nSERVICE\tVALIDATIONS\tSUCCESS\tGOOD\tP50\tP95\tP99\t401s\tREFRESH OK\n")
		for _, svc := range slices.Sorted(maps.Keys(r.SLIs.ByService)) {
			s := r.SLIs.ByService[svc]
			p("%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", svc, s.Validations, pct(s.ValidationSuccessRate), pct(s.ValidationGoodRatio),
				ms(s.ValidationLatencyP50MS), ms(s.ValidationLatencyP95MS), ms(s.ValidationLatencyP99MS), s.Rejections401, pct(s.RefreshSuccessRate))
		}
	}

	pr := r.SLIs.Propagation
	p("\nRevocations: %d, propagated %d, not propagated %d, p95 %s, max %s\n", pr.Revokes, pr.Propagated, pr.NotPropagated, secs(pr.P95S), secs(pr.MaxS))
	slowest := slices.Clone(r.SLIs.Revocations)
	slices.SortStableFunc(slowest, func(a, b RevocationReport) int {
		return cmp.Or(boolOrder(a.Propagated, b.Propagated), cmp.Compare(b.PropagationS, a.PropagationS))
	})
	for _, rv := range slowest[:min(len(slowest), 10)] {
		state := "propagated"
		if !rv.Propagated {
			state = "NOT propagated (at least)"
		}
		p("  %s %s revoked by %s at %s: %s %.1fs\n", rv.Target, rv.TargetID(), rv.Service, rv.RevokedAt.Format("2006-01-02T15:04:05.000Z07:00"), state, rv.PropagationS)
	}

	p("\nFindings: %d\n", len(r.Findings))
	for _, f := range r.Findings {
		p("  %s\t%s\t%s\t%s\t%d\t%s\n", f.Severity, f.Kind, or(f.Service, "-"), f.FirstSeen.Format("2006-01-02T15:04:05Z07:00"), f.Count, f.Action)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// boolOrder puts false (not propagated) first.
func boolOrder(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

func pct(v *float64) string {
	if v == nil {
		return "-"
	}
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", *v*100), "0"), ".") + "%"
}

func ms(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.1fms", *v)
}

func secs(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.1fs", *v)
}

func num(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.4g", *v)
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
