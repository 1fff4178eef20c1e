package alerts

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"

	"gopkg.in/yaml.v3"

	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/slo"
)

// promtool is the real promtool (Debian package prometheus, installed in CI
// by scripts/monitoring.sh); testkit skips or fails when it is missing.
func promtool(t *testing.T) string {
	t.Helper()
	return testkit.Promtool(t)
}

func TestPromtoolAcceptsEveryGeneratedRuleFile(t *testing.T) {
	bin := promtool(t)
	for name, spec := range goldenSpecs(t) {
		t.Run(name, func(t *testing.T) {
			files, err := Rules(spec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			paths, err := files.WriteDir(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, append([]string{"check", "rules"}, paths...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("promtool check rules: %v\n%s", err, out)
			}
		})
	}
}

// The promtool unit-test file format (prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules).
type promTestFile struct {
	RuleFiles          []string       `yaml:"rule_files"`
	EvaluationInterval string         `yaml:"evaluation_interval"`
	Tests              []promTestCase `yaml:"tests"`
}

type promTestCase struct {
	Name        string          `yaml:"name"`
	Interval    string          `yaml:"interval"`
	InputSeries []inputSeries   `yaml:"input_series"`
	AlertTests  []alertRuleTest `yaml:"alert_rule_test"`
	ExprTests   []exprTest      `yaml:"promql_expr_test,omitempty"`
}

// exprTest is promtool's check of one PromQL expression's samples.
type exprTest struct {
	Expr       string      `yaml:"expr"`
	EvalTime   string      `yaml:"eval_time"`
	ExpSamples []expSample `yaml:"exp_samples"`
}

type expSample struct {
	Labels string  `yaml:"labels"`
	Value  float64 `yaml:"value"`
}

type inputSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

type alertRuleTest struct {
	EvalTime  string     `yaml:"eval_time"`
	Alertname string     `yaml:"alertname"`
	ExpAlerts []expAlert `yaml:"exp_alerts"`
}

type expAlert struct {
	ExpLabels      map[string]string `yaml:"exp_labels"`
	ExpAnnotations map[string]string `yaml:"exp_annotations"`
}

// phase is a stretch of a counter's life: it grows by perMinute for minutes.
type phase struct {
	perMinute float64
	minutes   int
}

// counter writes promtool's expanding notation for a counter sampled every
// minute from 0: the first phase covers t=0..minutes, later phases continue.
func counter(phases ...phase) string {
	var parts []string
	cur := 0.0
	for i, p := range phases {
		if i == 0 {
			parts = append(parts, fmt.Sprintf("0+%gx%d", p.perMinute, p.minutes))
			cur = p.perMinute * float64(p.minutes)
			continue
		}
		parts = append(parts, fmt.Sprintf("%g+%gx%d", cur+p.perMinute, p.perMinute, p.minutes-1))
		cur += p.perMinute * float64(p.minutes)
	}
	return strings.Join(parts, " ")
}

// steady is a counter growing at one rate for minutes.
func steady(perMinute float64, minutes int) string { return counter(phase{perMinute, minutes}) }

// firing names an alert expected at an evaluation time, by its full label
// set; its annotations are the rule's templates expanded with those labels.
type firing struct {
	alert  string
	labels map[string]string
}

type expectation struct {
	at     string
	alert  string
	firing []map[string]string // label sets; empty means nothing fires
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// expand renders a Prometheus rule template the way Prometheus does for
// templates that only read $labels (ours never read $value, so the expected
// text does not depend on an evaluated number).
func expand(t *testing.T, text string, labels map[string]string) string {
	t.Helper()
	tmpl, err := template.New("").Option("missingkey=zero").Parse("{{$labels := .Labels}}" + text)
	if err != nil {
		t.Fatalf("template %q: %v", text, err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, map[string]any{"Labels": labels}); err != nil {
		t.Fatalf("template %q: %v", text, err)
	}
	return b.String()
}

// expected finds the rule of alert whose labels, expanded, agree with want
// and returns what promtool should report for it.
func expected(t *testing.T, files RuleFiles, alert string, want map[string]string) expAlert {
	t.Helper()
	for _, r := range files.Alerts() {
		if r.Alert != alert {
			continue
		}
		match := true
		for k, v := range r.Labels {
			if expand(t, v, want) != want[k] {
				match = false
			}
		}
		if !match {
			continue
		}
		ann := map[string]string{}
		for k, v := range r.Annotations {
			ann[k] = expand(t, v, want)
		}
		return expAlert{ExpLabels: want, ExpAnnotations: ann}
	}
	t.Fatalf("no rule of %s has labels %v", alert, want)
	return expAlert{}
}

type ruleScenario struct {
	name   string
	series []inputSeries
	expect []expectation
}

// runPromtoolTests writes the rules and one promtool test file with every
// scenario, and runs `promtool test rules`.
func runPromtoolTests(t *testing.T, files RuleFiles, scenarios []ruleScenario) {
	t.Helper()
	tf := promTestFile{RuleFiles: files.Names(), EvaluationInterval: "1m"}
	for _, s := range scenarios {
		tc := promTestCase{Name: s.name, Interval: "1m", InputSeries: s.series}
		for _, e := range s.expect {
			at := alertRuleTest{EvalTime: e.at, Alertname: e.alert, ExpAlerts: []expAlert{}}
			for _, l := range e.firing {
				at.ExpAlerts = append(at.ExpAlerts, expected(t, files, e.alert, merge(l, map[string]string{"alertname": e.alert})))
			}
			tc.AlertTests = append(tc.AlertTests, at)
		}
		tf.Tests = append(tf.Tests, tc)
	}
	runPromtoolFile(t, files, tf)
}

// runPromtoolFile writes the rules and the test file, and runs `promtool
// test rules`.
func runPromtoolFile(t *testing.T, files RuleFiles, tf promTestFile) {
	t.Helper()
	bin := promtool(t)
	dir := t.TempDir()
	if _, err := files.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(tf)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tests.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "test", "rules", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s\n(test file kept in %s)", err, out, path)
	}
}

func TestBurnRateAlertsFireAtTheRightSpeed(t *testing.T) {
	files, err := Rules(slo.Default(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	where := `service="api",issuer="https://idp.example",region="eu"`
	labels := map[string]string{"service": "api", "issuer": "https://idp.example", "region": "eu"}
	validation := func(sev string) map[string]string {
		return merge(labels, map[string]string{"slo": "token-validation", "severity": sev, "team": "identity"})
	}
	validations := func(outcome, values string) inputSeries {
		return inputSeries{Series: fmt.Sprintf(`tokenwatch_validations_total{%s,outcome=%q}`, where, outcome), Values: values}
	}
	const tv = "TokenValidationErrorBudgetBurn"
	scenarios := []ruleScenario{
		{
			// 10 % bad validations after a clean hour is a 100x burn.
			name: "a fast burn of failing validations pages within ten minutes",
			series: []inputSeries{
				validations("ok", counter(phase{1000, 60}, phase{900, 30})),
				validations("expired", steady(50, 90)), // the system working: never counts against the SLO
				validations("error", counter(phase{0, 60}, phase{100, 30})),
			},
			expect: []expectation{
				{at: "55m", alert: tv},
				{at: "64m", alert: tv, firing: []map[string]string{validation("ticket")}},
				{at: "72m", alert: tv, firing: []map[string]string{validation("page"), validation("ticket")}},
			},
		},
		{
			// 0.4 % bad is 4x: over the 3x ticket, under the 6x and 14.4x pages.
			name: "a slow burn at 4x opens a ticket and never pages",
			series: []inputSeries{
				validations("ok", steady(996, 180)),
				validations("unknown_kid", steady(4, 180)),
			},
			expect: []expectation{
				{at: "30m", alert: tv, firing: []map[string]string{validation("ticket")}},
				{at: "3h", alert: tv, firing: []map[string]string{validation("ticket")}},
			},
		},
		{
			// 0.2 % bad is 2x: only the 1x-over-3d ticket sees it.
			name: "a slow burn at 2x opens a ticket through the three-day window",
			series: []inputSeries{
				validations("ok", steady(998, 180)),
				validations("bad_signature", steady(2, 180)),
			},
			expect: []expectation{
				{at: "3h", alert: tv, firing: []map[string]string{validation("ticket")}},
			},
		},
		{
			// 0.05 % bad is half the budget: fine.
			name: "a burn under 1x fires nothing",
			series: []inputSeries{
				validations("ok", steady(9995, 180)),
				validations("error", steady(5, 180)),
			},
			expect: []expectation{
				{at: "30m", alert: tv},
				{at: "3h", alert: tv},
			},
		},
		{
			name: "rejections that are the system working fire nothing",
			series: []inputSeries{
				validations("ok", steady(500, 90)),
				validations("expired", steady(300, 90)),
				validations("revoked", steady(200, 90)),
			},
			expect: []expectation{{at: "90m", alert: tv}},
		},
	}

	// Latency: target 95 %, so a page needs more than 72 % slow validations.
	latency := func(sev string) map[string]string {
		return merge(labels, map[string]string{"slo": "token-validation-latency", "severity": sev, "team": "platform"})
	}
	latencySeries := func(fastPerMin, allPerMin float64) []inputSeries {
		return []inputSeries{
			{Series: fmt.Sprintf(`tokenwatch_validation_latency_seconds_bucket{%s,le="0.05"}`, where), Values: steady(fastPerMin, 60)},
			{Series: fmt.Sprintf(`tokenwatch_validation_latency_seconds_bucket{%s,le="+Inf"}`, where), Values: steady(allPerMin, 60)},
			{Series: fmt.Sprintf(`tokenwatch_validation_latency_seconds_count{%s}`, where), Values: steady(allPerMin, 60)},
		}
	}
	const tl = "TokenValidationLatencyErrorBudgetBurn"
	scenarios = append(scenarios,
		ruleScenario{
			name:   "validations slower than 50 ms for most requests page the platform team",
			series: latencySeries(100, 1000),
			expect: []expectation{{at: "30m", alert: tl, firing: []map[string]string{latency("page"), latency("ticket")}}},
		},
		ruleScenario{
			name:   "2 % of validations slower than 50 ms is within the p95 objective",
			series: latencySeries(980, 1000),
			expect: []expectation{{at: "30m", alert: tl}},
		},
	)

	// Refresh: target 99.5 %, so a page needs more than 7.2 % failed refreshes.
	refresh := func(sev string) map[string]string {
		return merge(labels, map[string]string{"slo": "token-refresh", "severity": sev, "team": "identity"})
	}
	refreshes := func(outcome, values string) inputSeries {
		return inputSeries{Series: fmt.Sprintf(`tokenwatch_refreshes_total{%s,outcome=%q}`, where, outcome), Values: values}
	}
	const tr = "TokenRefreshErrorBudgetBurn"
	scenarios = append(scenarios,
		ruleScenario{
			name:   "a fifth of refreshes failing pages",
			series: []inputSeries{refreshes("ok", steady(80, 60)), refreshes("reused", steady(20, 60))},
			expect: []expectation{{at: "30m", alert: tr, firing: []map[string]string{refresh("page"), refresh("ticket")}}},
		},
		ruleScenario{
			name:   "refreshes that all succeed fire nothing",
			series: []inputSeries{refreshes("ok", steady(100, 60))},
			expect: []expectation{{at: "30m", alert: tr}},
		},
	)

	// Propagation: target 99 %, so a page needs more than 14.4 % slow revokes.
	propagation := func(sev string) map[string]string {
		return map[string]string{"service": "gateway", "slo": "revocation-propagation", "severity": sev, "team": "identity"}
	}
	revokes := func(le string, within, propagated, notPropagated float64) []inputSeries {
		return []inputSeries{
			{Series: `tokenwatch_revocations_total{service="gateway"}`, Values: steady(propagated+notPropagated, 60)},
			{Series: fmt.Sprintf(`tokenwatch_revocation_propagation_seconds_bucket{service="gateway",le=%q}`, le), Values: steady(within, 60)},
			{Series: `tokenwatch_revocation_propagation_seconds_count{service="gateway"}`, Values: steady(propagated, 60)},
			{Series: `tokenwatch_revocations_not_propagated_total{service="gateway"}`, Values: steady(notPropagated, 60)},
		}
	}
	const rp = "RevocationPropagationErrorBudgetBurn"
	scenarios = append(scenarios,
		ruleScenario{
			name:   "half the revokes taking over 60 s pages",
			series: revokes("60", 5, 10, 0),
			expect: []expectation{{at: "30m", alert: rp, firing: []map[string]string{propagation("page"), propagation("ticket")}}},
		},
		ruleScenario{
			name:   "revokes that never propagate page even when the rest are fast",
			series: revokes("60", 7, 7, 3),
			expect: []expectation{{at: "30m", alert: rp, firing: []map[string]string{propagation("page"), propagation("ticket")}}},
		},
		ruleScenario{
			name:   "the 60 s bucket written the OpenMetrics way (le=\"60.0\") is read too",
			series: revokes("60.0", 5, 10, 0),
			expect: []expectation{{at: "30m", alert: rp, firing: []map[string]string{propagation("page"), propagation("ticket")}}},
		},
		ruleScenario{
			name:   "revokes all propagated within 60 s fire nothing",
			series: revokes("60", 10, 10, 0),
			expect: []expectation{{at: "30m", alert: rp}},
		},
	)
	runPromtoolTests(t, files, scenarios)
}

// TestTwoReplicasGiveTheOneProcessSLOs evaluates the generated recording
// rules and burn-rate alerts on the series of two tokenwatch replicas (each
// with its own instance and role labels, as Prometheus scrapes a fleet), a
// third of the traffic on one and the rest on the other, and the failures
// all on one: every SLO's error ratio and every alert is the one-process
// answer, with no per-instance series left.
func TestTwoReplicasGiveTheOneProcessSLOs(t *testing.T) {
	files, err := Rules(slo.Default(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	where := `service="api",issuer="https://idp.example",region="eu"`
	replicas := []string{`instance="tw-0:9464",job="tokenwatch",role="ingest"`, `instance="tw-1:9464",job="tokenwatch",role="ingest"`}
	// One process: 1500 validations a minute, 3 % failing (error), a
	// 30x burn of the 99.9 % objective: pages. Replica 0 has 500 all ok,
	// replica 1 has 955 ok and 45 error (4.5 % on its own).
	series := []inputSeries{
		{Series: fmt.Sprintf(`tokenwatch_validations_total{%s,%s,outcome="ok"}`, where, replicas[0]), Values: steady(500, 60)},
		{Series: fmt.Sprintf(`tokenwatch_validations_total{%s,%s,outcome="ok"}`, where, replicas[1]), Values: steady(955, 60)},
		{Series: fmt.Sprintf(`tokenwatch_validations_total{%s,%s,outcome="error"}`, where, replicas[1]), Values: steady(45, 60)},
		// Revocations: the merging owner of each revoke exports it once;
		// 8 revokes a minute, 2 of them past 60 s, split 4 and 4.
		{Series: fmt.Sprintf(`tokenwatch_revocations_total{service="idp",%s}`, replicas[0]), Values: steady(4, 60)},
		{Series: fmt.Sprintf(`tokenwatch_revocation_propagation_seconds_bucket{service="idp",%s,le="60"}`, replicas[0]), Values: steady(4, 60)},
		{Series: fmt.Sprintf(`tokenwatch_revocation_propagation_seconds_count{service="idp",%s}`, replicas[0]), Values: steady(4, 60)},
		{Series: fmt.Sprintf(`tokenwatch_revocations_total{service="idp",%s}`, replicas[1]), Values: steady(4, 60)},
		{Series: fmt.Sprintf(`tokenwatch_revocation_propagation_seconds_bucket{service="idp",%s,le="60"}`, replicas[1]), Values: steady(2, 60)},
		{Series: fmt.Sprintf(`tokenwatch_revocation_propagation_seconds_count{service="idp",%s}`, replicas[1]), Values: steady(4, 60)},
	}
	tc := promTestCase{Name: "two replicas", Interval: "1m", InputSeries: series, ExprTests: []exprTest{
		{Expr: `tokenwatch:slo_error_ratio:rate5m{slo="token-validation"}`, EvalTime: "30m",
			ExpSamples: []expSample{{Labels: fmt.Sprintf(`tokenwatch:slo_error_ratio:rate5m{%s,slo="token-validation"}`, where), Value: 0.03}}},
		{Expr: `tokenwatch:slo_error_ratio:rate1h{slo="revocation-propagation"}`, EvalTime: "59m",
			ExpSamples: []expSample{{Labels: `tokenwatch:slo_error_ratio:rate1h{service="idp",slo="revocation-propagation"}`, Value: 0.25}}},
	}}
	const tv = "TokenValidationErrorBudgetBurn"
	labels := map[string]string{"service": "api", "issuer": "https://idp.example", "region": "eu", "slo": "token-validation", "team": "identity", "alertname": tv}
	tc.AlertTests = []alertRuleTest{{EvalTime: "30m", Alertname: tv, ExpAlerts: []expAlert{
		expected(t, files, tv, merge(labels, map[string]string{"severity": "page"})),
		expected(t, files, tv, merge(labels, map[string]string{"severity": "ticket"})),
	}}}
	runPromtoolFile(t, files, promTestFile{RuleFiles: files.Names(), EvaluationInterval: "1m", Tests: []promTestCase{tc}})
}

func TestSecurityAndPipelineAlertsFireOnTheirMetric(t *testing.T) {
	files, err := Rules(slo.Default(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	inst := `job="tokenwatch",instance="localhost:9464"`
	instLabels := map[string]string{"job": "tokenwatch", "instance": "localhost:9464"}
	var scenarios []ruleScenario
	for _, k := range finding.Kinds() {
		scenarios = append(scenarios, ruleScenario{
			name: fmt.Sprintf("a %s finding opened on a service raises %s", k, FindingsOpenedAlertName(k)),
			series: []inputSeries{
				{Series: fmt.Sprintf(`tokenwatch_findings_total{kind=%q,severity="page",service="api"}`, k), Values: "0 0 0 0 0 1 1 1 1 1 1"},
				{Series: fmt.Sprintf(`tokenwatch_findings_total{kind=%q,severity="info",service="api"}`, k), Values: "0 0 0 0 0 4 4 4 4 4 4"},
			},
			expect: []expectation{
				{at: "3m", alert: FindingsOpenedAlertName(k)},
				{at: "8m", alert: FindingsOpenedAlertName(k), firing: []map[string]string{
					{"kind": string(k), "severity": "page", "service": "api", "team": k.Team()},
				}},
			},
		})
	}
	scenarios = append(scenarios,
		ruleScenario{
			name: "info findings alone raise no alert",
			series: []inputSeries{
				{Series: `tokenwatch_findings_total{kind="replay",severity="info",service="api"}`, Values: "0 0 0 5 5 5 5 5"},
			},
			expect: []expectation{{at: "6m", alert: FindingsOpenedAlertName(finding.Replay)}},
		},
		ruleScenario{
			name: "more than 20 replay findings open for half an hour is a backlog ticket",
			series: []inputSeries{
				{Series: `tokenwatch_findings_open{kind="replay",severity="ticket"}`, Values: "25x45"},
				{Series: `tokenwatch_findings_open{kind="clock_skew",severity="ticket"}`, Values: "3x45"},
			},
			expect: []expectation{
				{at: "20m", alert: "TokenFindingsBacklog"},
				{at: "40m", alert: "TokenFindingsBacklog", firing: []map[string]string{
					{"kind": "replay", "severity": "ticket", "team": "security"},
				}},
			},
		},
		ruleScenario{
			name: "an emitter sending a raw credential pages security",
			series: []inputSeries{
				{Series: `tokenwatch_redaction_violations_total{emitter="legacy-gateway"}`, Values: "0 0 0 0 1 1 1 1"},
				{Series: `tokenwatch_redaction_violations_total{emitter="api"}`, Values: "0x7"},
			},
			expect: []expectation{
				{at: "2m", alert: "TokenRedactionViolation"},
				{at: "6m", alert: "TokenRedactionViolation", firing: []map[string]string{
					{"emitter": "legacy-gateway", "severity": "page", "team": "security"},
				}},
			},
		},
		ruleScenario{
			name:   "tokenwatch failing its scrape for five minutes pages",
			series: []inputSeries{{Series: `up{` + inst + `}`, Values: "1 1 0x10"}},
			expect: []expectation{
				{at: "4m", alert: "TokenwatchDown"},
				{at: "9m", alert: "TokenwatchDown", firing: []map[string]string{
					merge(instLabels, map[string]string{"severity": "page", "team": "platform"}),
				}},
			},
		},
		ruleScenario{
			name:   "tokenwatch never scraped at all pages",
			series: []inputSeries{{Series: `up{job="other"}`, Values: "1x10"}},
			expect: []expectation{{at: "8m", alert: "TokenwatchDown", firing: []map[string]string{
				{"job": "tokenwatch", "severity": "page", "team": "platform"},
			}}},
		},
		ruleScenario{
			name: "a process never joined to its consumer group pages; one that joined and one that rejoined at once do not",
			series: []inputSeries{
				{Series: `tokenwatch_consumer_connected{` + inst + `,group="tokenwatch"}`, Values: "0x12"},
				{Series: `tokenwatch_consumer_connected{job="tokenwatch",instance="other:9464",group="tokenwatch"}`, Values: "1 1 0 1x9"},
			},
			expect: []expectation{
				{at: "3m", alert: "TokenwatchNotConsuming"},
				{at: "8m", alert: "TokenwatchNotConsuming", firing: []map[string]string{
					{"instance": "localhost:9464", "group": "tokenwatch", "severity": "page", "team": "platform"},
				}},
			},
		},
		ruleScenario{
			name: "a consumer falling further behind opens a ticket",
			series: []inputSeries{
				{Series: `tokenwatch_consumer_lag{topic="auth-events",partition="0"}`, Values: "0+1000x60"},
				{Series: `tokenwatch_consumer_lag{topic="auth-events",partition="1"}`, Values: "0+500x60"},
				{Series: `tokenwatch_consumer_lag{topic="quiet",partition="0"}`, Values: "50000x60"},
			},
			expect: []expectation{
				{at: "5m", alert: "TokenwatchConsumerLagGrowing"},
				{at: "40m", alert: "TokenwatchConsumerLagGrowing", firing: []map[string]string{
					{"topic": "auth-events", "severity": "ticket", "team": "platform"},
				}},
			},
		},
		ruleScenario{
			name: "five per cent of events rejected opens a ticket",
			series: []inputSeries{
				{Series: `tokenwatch_events_decoded_total{` + inst + `,topic="auth-events"}`, Values: steady(1000, 40)},
				{Series: `tokenwatch_events_rejected_total{` + inst + `,topic="auth-events",reason="bad_json"}`, Values: steady(50, 40)},
			},
			expect: []expectation{{at: "30m", alert: "TokenwatchEventsRejected", firing: []map[string]string{
				merge(instLabels, map[string]string{"severity": "ticket", "team": "platform"}),
			}}},
		},
		ruleScenario{
			name: "a handful of rejected events is not a ticket",
			series: []inputSeries{
				{Series: `tokenwatch_events_decoded_total{` + inst + `,topic="auth-events"}`, Values: steady(1000, 40)},
				{Series: `tokenwatch_events_rejected_total{` + inst + `,topic="auth-events",reason="bad_json"}`, Values: steady(2, 40)},
			},
			expect: []expectation{{at: "30m", alert: "TokenwatchEventsRejected"}},
		},
		ruleScenario{
			name: "ClickHouse inserts failing for ten minutes open a ticket",
			series: []inputSeries{
				{Series: `tokenwatch_clickhouse_errors_total{` + inst + `,op="insert"}`, Values: steady(3, 30)},
			},
			expect: []expectation{{at: "20m", alert: "TokenwatchClickHouseErrors", firing: []map[string]string{
				merge(instLabels, map[string]string{"op": "insert", "severity": "ticket", "team": "platform"}),
			}}},
		},
		ruleScenario{
			name: "every push to Alertmanager failing opens a ticket",
			series: []inputSeries{
				{Series: `tokenwatch_alertmanager_pushes_total{` + inst + `,result="error"}`, Values: steady(2, 30)},
				{Series: `tokenwatch_alertmanager_pushes_total{` + inst + `,result="success"}`, Values: "7x30"},
			},
			expect: []expectation{{at: "25m", alert: "TokenwatchAlertmanagerPushFailing", firing: []map[string]string{
				merge(instLabels, map[string]string{"severity": "ticket", "team": "platform"}),
			}}},
		},
		ruleScenario{
			name: "pushes that fail now and then but also succeed are not a ticket",
			series: []inputSeries{
				{Series: `tokenwatch_alertmanager_pushes_total{` + inst + `,result="error"}`, Values: steady(1, 30)},
				{Series: `tokenwatch_alertmanager_pushes_total{` + inst + `,result="success"}`, Values: steady(5, 30)},
			},
			expect: []expectation{{at: "25m", alert: "TokenwatchAlertmanagerPushFailing"}},
		},
	)
	runPromtoolTests(t, files, scenarios)
}
