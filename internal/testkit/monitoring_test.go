package testkit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const constantRule = `groups:
  - name: testkit
    interval: 1s
    rules:
      - record: tokenwatch:testkit_constant
        expr: vector(42)
`

func getJSON(t *testing.T, rawURL string, into any) {
	t.Helper()
	resp, err := http.Get(rawURL)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", rawURL, resp.Status, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("decoding %s: %v (%s)", rawURL, err, body)
	}
}

func TestPrometheusEvaluatesTheRulesOfTheRulesDirectory(t *testing.T) {
	rules := t.TempDir()
	if err := os.WriteFile(filepath.Join(rules, "constant.yml"), []byte(constantRule), 0o644); err != nil {
		t.Fatal(err)
	}
	base := Prometheus(t, "", rules)

	query := base + "/api/v1/query?query=" + url.QueryEscape("tokenwatch:testkit_constant")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var answer struct {
			Data struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		getJSON(t, query, &answer)
		if len(answer.Data.Result) == 1 {
			if got := answer.Data.Result[0].Value[1]; got != "42" {
				t.Fatalf("recorded series has value %v, want 42", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the recording rule in %s was not evaluated within 30s", rules)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestAlertmanagerListsAnAlertPushedToIt(t *testing.T) {
	base := Alertmanager(t, "")
	alert := `[{"labels":{"alertname":"TokenReplay","severity":"critical"},"annotations":{"summary":"replayed token"}}]`
	resp, err := http.Post(base+"/api/v2/alerts", "application/json", strings.NewReader(alert))
	if err != nil {
		t.Fatalf("pushing an alert: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pushing an alert: %s", resp.Status)
	}
	var alerts []struct {
		Labels map[string]string `json:"labels"`
	}
	getJSON(t, base+"/api/v2/alerts", &alerts)
	if len(alerts) != 1 || alerts[0].Labels["alertname"] != "TokenReplay" {
		t.Fatalf("Alertmanager lists %+v, want the one TokenReplay alert pushed", alerts)
	}
}

func TestTwoAlertmanagersRunSideBySideOnTheirOwnPorts(t *testing.T) {
	first, second := Alertmanager(t, ""), Alertmanager(t, "")
	if first == second {
		t.Fatalf("both Alertmanagers answer on %s", first)
	}
}

func TestPromtoolAcceptsValidRulesAndRejectsBrokenOnes(t *testing.T) {
	promtool := Promtool(t)
	tests := []struct {
		name  string
		rules string
		valid bool
	}{
		{"a recording rule with a valid expression passes", constantRule, true},
		{"an expression that does not parse fails", strings.Replace(constantRule, "vector(42)", "rate(x[5m]", 1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rules.yml")
			if err := os.WriteFile(path, []byte(tc.rules), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
			if valid := err == nil; valid != tc.valid {
				t.Fatalf("promtool check rules: valid=%v, want %v\n%s", valid, tc.valid, out)
			}
		})
	}
}

func TestPrometheusConfigGainsTheRuleFilesOfTheRulesDirectory(t *testing.T) {
	rules := t.TempDir()
	tests := []struct {
		name      string
		config    string
		rulesDir  string
		wantRules []string
		wantErr   string
	}{
		{
			name:     "no rules directory leaves the config as written",
			config:   "global:\n  scrape_interval: 5s\n",
			rulesDir: "",
		},
		{
			name:      "an empty config gets the defaults and both rule file patterns",
			config:    "",
			rulesDir:  rules,
			wantRules: []string{filepath.Join(rules, "*.yml"), filepath.Join(rules, "*.yaml")},
		},
		{
			name:     "a config naming its own rule files conflicts with a rules directory",
			config:   "rule_files: [a.yml]\n",
			rulesDir: rules,
			wantErr:  "rule_files",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := prometheusConfig(tc.config, tc.rulesDir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.rulesDir == "" {
				if !bytes.Equal(out, []byte(tc.config)) {
					t.Fatalf("config changed to %q", out)
				}
				return
			}
			var doc struct {
				Global    map[string]string `yaml:"global"`
				RuleFiles []string          `yaml:"rule_files"`
			}
			if err := yaml.Unmarshal(out, &doc); err != nil {
				t.Fatalf("the written config is not YAML: %v\n%s", err, out)
			}
			if fmt.Sprint(doc.RuleFiles) != fmt.Sprint(tc.wantRules) {
				t.Errorf("rule_files = %v, want %v", doc.RuleFiles, tc.wantRules)
			}
			if doc.Global["evaluation_interval"] != "1s" {
				t.Errorf("default evaluation_interval = %q, want 1s", doc.Global["evaluation_interval"])
			}
		})
	}
}
