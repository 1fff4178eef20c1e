package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwatch/tokenwatch/alerts"
	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/dashboards"
	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/slo"
	"github.com/tokenwatch/tokenwatch/store"
)

type amAlert struct {
	Labels map[string]string `json:"labels"`
	Status struct {
		State string `json:"state"`
	} `json:"status"`
}

func activeAlerts(t *testing.T, am string) []amAlert {
	t.Helper()
	resp, err := http.Get(am + "/api/v2/alerts?active=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []amAlert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// tokenwatchStack is the pipeline running in this test process against real
// Kafka and the ClickHouse engine, serving /metrics.
type tokenwatchStack struct {
	brokers     []string
	topic       string
	metricsAddr string
	svc         *service
}

func startStack(t *testing.T, mutate func(*config.Config)) *tokenwatchStack {
	t.Helper()
	brokers := testkit.Kafka(t)
	topic := testkit.Topic(t)
	testkit.CreateTopic(t, brokers, topic, 3)
	addr, db := testkit.ClickHouse(t)
	c := config.Default()
	c.Kafka.Brokers, c.Kafka.Topics, c.Kafka.GroupID, c.Kafka.MaxWait = brokers, []string{topic}, "e2e-"+topic, 50*time.Millisecond
	c.ClickHouse.Addr, c.ClickHouse.Database = []string{addr}, db
	c.ClickHouse.BatchInterval = 200 * time.Millisecond
	c.Redaction.Key = "e2e"
	c.Metrics.Listen = "127.0.0.1:0"
	if mutate != nil {
		mutate(&c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, c.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	h := &health{st: st}
	maddr, stop, err := serveMetrics(c.Metrics.Listen, reg, h, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	svc, err := startService(ctx, c, st, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	for _, g := range svc.groups {
		h.addGroup(g)
	}
	// The real service, on real Kafka and ClickHouse: /readyz turns 200
	// once its consumer group has joined.
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + maddr + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), "kafka: ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz still %d after a minute:\n%s", resp.StatusCode, body)
			}
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return &tokenwatchStack{brokers: brokers, topic: topic, metricsAddr: maddr, svc: svc}
}

// produce sends generated traffic (simulated time, as fast as Kafka takes
// it) and waits until the pipeline has stored it.
func (s *tokenwatchStack) produce(t *testing.T, spec gen.Spec) {
	t.Helper()
	g, err := gen.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	before := s.svc.Pipeline.Stats().Consumed
	p, err := gen.Produce(context.Background(), g, gen.ProduceConfig{Brokers: s.brokers, Topic: s.topic}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for s.svc.Pipeline.Stats().Consumed < before+p.Messages {
		if time.Now().After(deadline) {
			t.Fatalf("pipeline consumed %d of %d", s.svc.Pipeline.Stats().Consumed-before, p.Messages)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKeyRotationBreakPagesThroughRealPrometheusAndAlertmanager: real
// Prometheus scrapes tokenwatch and evaluates the generated rules while the
// generator injects a key-rotation break; the burn-rate page reaches real
// Alertmanager, and so does the detector's finding.
func TestKeyRotationBreakPagesThroughRealPrometheusAndAlertmanager(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Kafka, Prometheus and Alertmanager")
	}
	am := testkit.Alertmanager(t, "")
	stack := startStack(t, func(c *config.Config) { c.Alertmanager.URLs = []string{am} })

	rules, err := alerts.Rules(slo.Default(), alerts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := rules.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	prom := testkit.Prometheus(t, fmt.Sprintf(`
global: {scrape_interval: 1s, evaluation_interval: 1s}
alerting:
  alertmanagers: [{static_configs: [{targets: [%q]}]}]
scrape_configs:
  - job_name: tokenwatch
    static_configs: [{targets: [%q]}]
`, mustHost(t, am), stack.metricsAddr), dir)

	// Healthy traffic first, so the counters have a baseline in Prometheus.
	healthy := gen.Default()
	healthy.Seed, healthy.Start, healthy.Duration, healthy.Rate = 7, time.Now().Add(-40*time.Minute).Truncate(time.Millisecond), 2*time.Minute, 300
	stack.produce(t, healthy)
	time.Sleep(3 * time.Second)
	broken := healthy
	broken.Seed, broken.Start, broken.Duration = 8, healthy.Start.Add(3*time.Minute), 15*time.Minute
	broken.Inject = map[string]int{gen.ScenarioKeyRotationBreak: 1}
	stack.produce(t, broken)

	var page, finding bool
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && !(page && finding) {
		for _, a := range activeAlerts(t, am) {
			switch a.Labels["alertname"] {
			case alerts.SLOAlertName("token-validation"):
				if a.Labels["severity"] == "page" && a.Labels["team"] != "" {
					page = true
				}
			case alerts.FindingAlertName("key_rotation_break"):
				finding = true
			}
		}
		time.Sleep(time.Second)
	}
	if !page {
		t.Errorf("the burn-rate page never reached Alertmanager; Prometheus alerts: %s", promGet(t, prom, "/api/v1/alerts"))
	}
	if !finding {
		t.Errorf("the key_rotation_break finding never reached Alertmanager; active: %+v", activeAlerts(t, am))
	}

	// Every PromQL expression of the dashboards runs on this Prometheus.
	boards, err := dashboards.Generate(dashboards.Options{SLO: slo.Default()})
	if err != nil {
		t.Fatal(err)
	}
	exprs := dashboards.PromQueries(boards)
	withData := 0
	for _, expr := range exprs {
		resp, err := http.Get(prom + "/api/v1/query?query=" + url.QueryEscape(expr))
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err != nil || r.Status != "success" {
			t.Errorf("dashboard PromQL failed on real Prometheus: %s: %v %s", expr, err, r.Error)
			continue
		}
		if len(r.Data.Result) > 0 {
			withData++
		}
	}
	if len(exprs) == 0 || withData == 0 {
		t.Errorf("%d dashboard PromQL expressions, %d returned data", len(exprs), withData)
	}
	t.Logf("%d dashboard PromQL expressions ran on real Prometheus, %d with data", len(exprs), withData)
}

func mustHost(t *testing.T, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func promGet(t *testing.T, prom, path string) string {
	t.Helper()
	resp, err := http.Get(prom + path)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
