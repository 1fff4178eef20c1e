package alertmanager

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenwatch/tokenwatch/alerts"
	"github.com/tokenwatch/tokenwatch/finding"
)

// postableAlert is Alertmanager's API v2 PostableAlert. Five fields do not
// justify importing Alertmanager's generated OpenAPI client and its
// dependencies, so the shape is written here.
type postableAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// toAlert builds the alert for a finding. Only bounded, non-identifying
// values go in: the kind, the service, the severity, the opaque finding id,
// counts and the signing key id. Token, session, family, subject, client and
// device ids, addresses and the detector's free-text action never do: the
// responder reads those from the findings table by finding_id.
func toAlert(f finding.Finding, endsAt time.Time, cfg Config) postableAlert {
	name := alerts.FindingAlertName(f.Kind)
	labels := map[string]string{
		"alertname":  name,
		"severity":   severityOf(f),
		"team":       f.Team(),
		"kind":       string(f.Kind),
		"finding_id": f.ID,
	}
	if f.Service != "" {
		labels["service"] = f.Service
	}
	startsAt := f.FirstSeen
	if startsAt.IsZero() || startsAt.After(endsAt) {
		// Event time can run ahead of the wall clock (a skewed emitter);
		// Alertmanager refuses an alert that ends before it starts.
		startsAt = endsAt
	}
	a := postableAlert{
		Labels: labels,
		Annotations: map[string]string{
			"summary":     summary(f),
			"description": description(f),
			"runbook_url": alerts.RunbookURL(cfg.RunbookBaseURL, name),
		},
		StartsAt: startsAt.UTC(),
		EndsAt:   endsAt.UTC(),
	}
	if cfg.GeneratorURL != "" {
		a.GeneratorURL = generatorURL(cfg.GeneratorURL, f.ID)
	}
	return a
}

// severityOf is the finding's severity label; a finding without one is
// treated as a ticket, so it is seen but wakes nobody.
func severityOf(f finding.Finding) string {
	if f.Severity == "" {
		return string(finding.Ticket)
	}
	return string(f.Severity)
}

func generatorURL(base, id string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base // Config.Validate has refused this already
	}
	q := u.Query()
	q.Set("finding_id", id)
	u.RawQuery = q.Encode()
	return u.String()
}

func where(f finding.Finding) string {
	s := f.Service
	if s == "" {
		s = "an unnamed service"
	}
	return s
}

// summary is one line a responder reads on a phone.
func summary(f finding.Finding) string {
	ev := evidence(f)
	svc := where(f)
	switch f.Kind {
	case finding.Replay:
		if n := distinct(ev["uses"], "country"); n > 1 {
			return fmt.Sprintf("token replay on %s from %d countries", svc, n)
		}
		if n := distinct(ev["uses"], "ip"); n > 1 {
			return fmt.Sprintf("token replay on %s from %d clients", svc, n)
		}
		return "token replay on " + svc
	case finding.RefreshReuse:
		if n := length(ev["exchanges"]); n > 1 {
			return fmt.Sprintf("refresh token reused on %s (%d exchanges of one token)", svc, n)
		}
		return "refresh token reused on " + svc
	case finding.RefreshAnomaly:
		return "refresh anomaly on " + svc
	case finding.SlowRevocation:
		if v, ok := number(ev["propagation_s"]); ok {
			return fmt.Sprintf("slow revocation seen from %s: %s s to propagate", svc, fmtNum(v))
		}
		return "revocation not propagated, seen from " + svc
	case finding.KeyRotationBreak:
		if f.Kid != "" {
			return fmt.Sprintf("key rotation break on %s for kid %s", svc, f.Kid)
		}
		return "key rotation break on " + svc
	case finding.ClockSkew:
		if v, ok := number(ev["skew_s"]); ok {
			return fmt.Sprintf("clock skew of %s s on %s", fmtNum(v), svc)
		}
		return "clock skew on " + svc
	}
	return fmt.Sprintf("%s finding on %s", f.Kind, svc)
}

// description says what it means, how big it is and where to read more.
func description(f finding.Finding) string {
	ev := evidence(f)
	var b strings.Builder
	b.WriteString(capitalize(alerts.KindMeaning(f.Kind)))
	b.WriteString(".")
	fmt.Fprintf(&b, " Service %s", where(f))
	if f.Region != "" {
		fmt.Fprintf(&b, ", region %s", f.Region)
	}
	if f.Issuer != "" {
		fmt.Fprintf(&b, ", issuer %s", f.Issuer)
	}
	fmt.Fprintf(&b, "; seen %d times", f.Count)
	if !f.FirstSeen.IsZero() {
		fmt.Fprintf(&b, " from %s to %s", f.FirstSeen.UTC().Format(time.RFC3339), f.LastSeen.UTC().Format(time.RFC3339))
	}
	b.WriteString(".")
	switch f.Kind {
	case finding.KeyRotationBreak:
		before, ok1 := number(ev["failures_before"])
		after, ok2 := number(ev["failures_after"])
		if ok1 && ok2 {
			fmt.Fprintf(&b, " Signature/kid failures went from %s before the rotation to %s after.", fmtNum(before), fmtNum(after))
		}
	case finding.SlowRevocation:
		if n := length(ev["services"]); n > 0 {
			fmt.Fprintf(&b, " %d services were late or never rejected the revoked tokens.", n)
		}
	case finding.ClockSkew:
		if n, ok := number(ev["samples"]); ok {
			fmt.Fprintf(&b, " Estimated from %s rejections.", fmtNum(n))
		}
	}
	fmt.Fprintf(&b, " Evidence and the suggested action are in the findings table: SELECT * FROM findings FINAL WHERE id = '%s'.", f.ID)
	return b.String()
}

// evidence normalises the evidence map through JSON, so typed evidence
// (structs from a detector) and decoded evidence read the same way.
func evidence(f finding.Finding) map[string]any {
	if len(f.Evidence) == 0 {
		return nil
	}
	b, err := json.Marshal(f.Evidence)
	if err != nil {
		return nil
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil
	}
	return out
}

// distinct counts the distinct non-empty values of field across a list of
// objects. It returns only the count: the values themselves (addresses,
// countries of one user) stay out of the alert.
func distinct(list any, field string) int {
	items, _ := list.([]any)
	seen := map[string]bool{}
	for _, it := range items {
		m, _ := it.(map[string]any)
		if v, ok := m[field]; ok && v != nil && fmt.Sprint(v) != "" {
			seen[fmt.Sprint(v)] = true
		}
	}
	return len(seen)
}

func length(v any) int {
	switch x := v.(type) {
	case []any:
		return len(x)
	case map[string]any:
		return len(x)
	}
	return 0
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil
	}
	return 0, false
}

// fmtNum rounds to one decimal: "73.4 s", not "73.41234 s".
func fmtNum(v float64) string { return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) }

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
