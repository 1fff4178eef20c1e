package alerts

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/slo"
)

var (
	prometheusConfig   = filepath.Join("..", "deploy", "prometheus", "prometheus.yml")
	alertmanagerConfig = filepath.Join("..", "deploy", "alertmanager", "alertmanager.yml")
)

func amtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("amtool")
	if err != nil {
		testkit.Require(t, "amtool", "apt-get install prometheus-alertmanager (scripts/monitoring.sh installs it)")
	}
	return p
}

// TestDeployedPrometheusConfigLoadsTheCommittedRules runs promtool on the
// config, which also checks every rule file its rule_files glob loads.
func TestDeployedPrometheusConfigLoadsTheCommittedRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "config", prometheusConfig).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	files, err := Rules(slo.Default(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d rule files found", len(files)); !strings.Contains(string(out), want) {
		t.Errorf("prometheus.yml should load every generated rule file (%s):\n%s", want, out)
	}
}

func TestDeployedAlertmanagerConfigIsValid(t *testing.T) {
	out, err := exec.Command(amtool(t), "check-config", alertmanagerConfig).CombinedOutput()
	if err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}
}

func TestAlertmanagerRoutesPagesToThePagerAndTheRestToTickets(t *testing.T) {
	bin := amtool(t)
	cases := []struct {
		name   string
		labels []string
		want   string
	}{
		{"an SLO page goes to the pager", []string{"alertname=TokenValidationErrorBudgetBurn", "severity=page", "team=identity"}, "pager"},
		{"an SLO ticket goes to the ticket queue", []string{"alertname=TokenValidationErrorBudgetBurn", "severity=ticket", "team=identity"}, "ticket"},
		{"a replay finding at page severity goes to the pager", []string{"alertname=TokenReplayDetected", "severity=page", "team=security", "finding_id=abc"}, "pager"},
		{"an info finding goes to the ticket queue", []string{"alertname=ClockSkewDetected", "severity=info", "team=platform", "finding_id=abc"}, "ticket"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"config", "routes", "test", "--config.file=" + alertmanagerConfig}, c.labels...)
			out, err := exec.Command(bin, args...).Output()
			if err != nil {
				t.Fatalf("amtool config routes test: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != c.want {
				t.Errorf("routed to %q, want %q", got, c.want)
			}
		})
	}
}
