package alerts

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/slo"
)

func TestBurnFactorsFollowTheSLOWindow(t *testing.T) {
	day := 24 * time.Hour
	cases := []struct {
		name   string
		window time.Duration
		want   []float64 // page 1h, page 6h, ticket 1d, ticket 3d
	}{
		{"a 30-day SLO gets the textbook 14.4x, 6x, 3x and 1x", 30 * day, []float64{14.4, 6, 3, 1}},
		{"a 28-day SLO burns its smaller budget at lower factors", 28 * day, []float64{13.44, 5.6, 2.8, 0.9333333333}},
		{"a 7-day SLO pages only at steeper relative burns", 7 * day, []float64{3.36, 1.4, 0.7, 0.2333333333}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i, w := range DefaultBurnWindows() {
				if got := w.Factor(c.window); math.Abs(got-c.want[i]) > 1e-9 {
					t.Errorf("%s over %s: factor %v, want %v", w.Severity, w.Long, got, c.want[i])
				}
			}
		})
	}
}

func TestRecordingRulesFollowTheDashboardContract(t *testing.T) {
	files, err := Rules(slo.Default(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantWindows := []string{"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
	for _, o := range slo.Default().SLOs {
		f, ok := files["slo-"+o.Name+".yml"]
		if !ok {
			t.Fatalf("no rule file for SLO %s", o.Name)
		}
		var got []string
		for _, g := range f.Groups {
			for _, r := range g.Rules {
				if r.Record == "" {
					continue
				}
				if r.Labels["slo"] != o.Name {
					t.Errorf("%s: %s has slo label %q", o.Name, r.Record, r.Labels["slo"])
				}
				got = append(got, strings.TrimPrefix(r.Record, "tokenwatch:slo_error_ratio:rate"))
			}
		}
		if strings.Join(got, ",") != strings.Join(wantWindows, ",") {
			t.Errorf("%s: error ratio windows %v, want %v", o.Name, got, wantWindows)
		}
	}
}

func TestSpecsTheRulesCannotServeAreRefused(t *testing.T) {
	cases := []struct {
		name    string
		spec    string
		wantErr string
	}{
		{
			name:    "a latency threshold between buckets",
			spec:    `slos: [{name: lat, sli: validation_latency, target: 0.95, window: 30d, threshold_seconds: 0.04}]`,
			wantErr: "threshold_seconds 0.04 is not a bucket boundary",
		},
		{
			name:    "a propagation threshold between buckets",
			spec:    `slos: [{name: prop, sli: revocation_propagation, target: 0.99, window: 30d, threshold_seconds: 45}]`,
			wantErr: "threshold_seconds 45 is not a bucket boundary",
		},
		{
			name:    "a window shorter than the three-day alert window",
			spec:    `slos: [{name: short, sli: validation_good_ratio, target: 0.999, window: 2d, bad: [error]}]`,
			wantErr: "shorter than the 3d alert window",
		},
		{
			name:    "a target so low the page threshold is above 100 %",
			spec:    `slos: [{name: lax, sli: validation_good_ratio, target: 0.9, window: 30d, bad: [error]}]`,
			wantErr: "too low",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec, err := slo.Parse([]byte(c.spec))
			if err != nil {
				t.Fatalf("spec: %v", err)
			}
			_, err = Rules(spec, Options{})
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Rules: error %v, want one containing %q", err, c.wantErr)
			}
		})
	}
	if _, err := Rules(nil, Options{}); err == nil {
		t.Error("Rules(nil): want an error")
	}
}

func TestEveryAlertCarriesRoutingLabelsAndAnnotations(t *testing.T) {
	files, err := Rules(slo.Default(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	teams := map[string]bool{"identity": true, "platform": true, "security": true}
	for _, r := range files.Alerts() {
		sev := r.Labels["severity"]
		if sev != SeverityPage && sev != SeverityTicket && sev != "{{ $labels.severity }}" {
			t.Errorf("%s: severity %q, want page or ticket", r.Alert, sev)
		}
		if !teams[r.Labels["team"]] {
			t.Errorf("%s: team %q, want identity, platform or security", r.Alert, r.Labels["team"])
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if r.Annotations[a] == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		if r.Alert[0] < 'A' || r.Alert[0] > 'Z' || strings.ContainsAny(r.Alert, "-_ ") {
			t.Errorf("alert %q is not CamelCase", r.Alert)
		}
	}
}

func TestRunbookBaseURLIsConfigurable(t *testing.T) {
	files, err := Rules(slo.Default(), Options{RunbookBaseURL: "https://wiki.example/runbooks/"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range files.Alerts() {
		if !strings.HasPrefix(r.Annotations["runbook_url"], "https://wiki.example/runbooks/") ||
			strings.Contains(r.Annotations["runbook_url"], "runbooks//") {
			t.Errorf("%s: runbook_url %q does not use the configured base", r.Alert, r.Annotations["runbook_url"])
		}
	}
}

// TestEveryAlertLinksToARunbookThatExists covers the rules and the alerts
// the Alertmanager pusher raises (one per finding kind).
func TestEveryAlertLinksToARunbookThatExists(t *testing.T) {
	files, err := Rules(slo.Default(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	urls := map[string]string{}
	for _, r := range files.Alerts() {
		urls[r.Alert] = r.Annotations["runbook_url"]
	}
	for _, k := range finding.Kinds() {
		urls[FindingAlertName(k)] = RunbookURL(DefaultRunbookBaseURL, FindingAlertName(k))
	}
	for alert, url := range urls {
		rel, ok := strings.CutPrefix(url, DefaultRunbookBaseURL+"/")
		if !ok {
			t.Errorf("%s: runbook_url %q is not under %s", alert, url, DefaultRunbookBaseURL)
			continue
		}
		path := filepath.Join("..", "docs", "runbooks", rel)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: runbook %s: %v", alert, path, err)
			continue
		}
		if !strings.Contains(string(b), alert) {
			t.Errorf("%s: runbook %s does not mention the alert it is for", alert, path)
		}
	}
}
