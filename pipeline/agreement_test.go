package pipeline_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwatch/tokenwatch/analyze"
	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
	"github.com/tokenwatch/tokenwatch/pipeline"
)

// serviceSLIs is what the pipeline's sli_minute rows say about one service.
type serviceSLIs struct {
	validations, validationsOK, requests, rejections401, refreshes, refreshesOK, issued, introspections, introspectionErrors uint64
	latencyP95                                                                                                               float64
}

// TestPipelineRowsAgreeWithAnalyzeOnTheSameEvents runs generated traffic
// through Kafka, the pipeline and ClickHouse, and the same events through
// `analyze`; the per-service SLIs must agree (counts exactly, the t-digest
// p95 within 5 %).
func TestPipelineRowsAgreeWithAnalyzeOnTheSameEvents(t *testing.T) {
	h := newHarness(t, 3)
	spec := gen.Default()
	spec.Seed, spec.Duration, spec.Rate, spec.Sessions = 11, 14*time.Minute, 300, 500
	spec.Start = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	spec.AccessTTLMin, spec.AccessTTLMax = 2*time.Minute, 4*time.Minute
	spec.Inject = map[string]int{gen.ScenarioKeyRotationBreak: 1, gen.ScenarioRefreshReuseIdP: 1}

	// The same spec gives the same events: once to Kafka, once to a file.
	g1, err := gen.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	prog, err := gen.Produce(context.Background(), g1, gen.ProduceConfig{Brokers: h.brokers, Topic: h.topic}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	g2, _ := gen.New(spec)
	var ndjson bytes.Buffer
	n, err := gen.WriteNDJSON(g2, &ndjson)
	if err != nil || int64(n) != prog.Events {
		t.Fatalf("file has %d events (err %v), Kafka got %d", n, err, prog.Events)
	}

	c := config.Default()
	c.Kafka = h.kcfg
	c.ClickHouse.Database = h.store.Database()
	c.ClickHouse.BatchRows, c.ClickHouse.BatchInterval = 5000, 200*time.Millisecond
	c.Redaction.Key = "agree"
	c.Pipeline.RebuildWindow = 0
	built, err := pipeline.Build(c, h.store, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer built.Close()
	m := built.Metrics
	group, err := consumer.New(h.kcfg, h.store.StoredOffsets, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	built.Pipeline.SetAcker(group)
	pctx, pcancel := context.WithCancel(context.Background())
	pdone := make(chan struct{})
	go func() { defer close(pdone); _ = built.Pipeline.Run(pctx) }()
	gctx, gcancel := context.WithCancel(context.Background())
	gdone := make(chan struct{})
	go func() { defer close(gdone); _ = group.Run(gctx, built.Pipeline) }()
	deadline := time.Now().Add(2 * time.Minute)
	for built.Pipeline.Stats().Stored < prog.Events && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	gcancel()
	<-gdone
	pcancel()
	<-pdone
	if s := built.Pipeline.Stats(); s.Stored != prog.Events {
		t.Fatalf("pipeline stored %d of %d", s.Stored, prog.Events)
	}

	guard, _ := redact.New(redact.Config{Key: []byte("agree")})
	rep, err := analyze.Run(context.Background(), analyze.Options{Input: &ndjson, Redact: guard})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events.Accepted != prog.Events {
		t.Fatalf("analyze accepted %d of %d", rep.Events.Accepted, prog.Events)
	}

	got := map[string]*serviceSLIs{}
	rows, err := h.store.Conn().Query(context.Background(), `
SELECT service,
  sumIf(events, kind = 'validate'), sumIf(events, kind = 'validate' AND outcome = 'ok'),
  sumIf(events, kind IN ('validate', 'introspect')), sum(rejections_401),
  sumIf(events, kind = 'refresh'), sumIf(events, kind = 'refresh' AND outcome = 'ok'),
  sumIf(events, kind = 'issue' AND outcome = 'ok'),
  sumIf(events, kind = 'introspect'), sumIf(events, kind = 'introspect' AND outcome = 'error'),
  quantilesTDigestMergeIf(0.5, 0.95, 0.99)(latency_q, kind = 'validate')[2]
FROM `+h.store.Database()+`.sli_minute GROUP BY service`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var svc string
		var s serviceSLIs
		var p95 float32
		if err := rows.Scan(&svc, &s.validations, &s.validationsOK, &s.requests, &s.rejections401, &s.refreshes, &s.refreshesOK,
			&s.issued, &s.introspections, &s.introspectionErrors, &p95); err != nil {
			t.Fatal(err)
		}
		s.latencyP95 = float64(p95)
		got[svc] = &s
	}
	rows.Close()
	if len(got) != len(rep.SLIs.ByService) {
		t.Fatalf("ClickHouse has %d services, analyze %d", len(got), len(rep.SLIs.ByService))
	}
	for svc, want := range rep.SLIs.ByService {
		g := got[svc]
		if g == nil {
			t.Fatalf("service %s missing from sli_minute", svc)
		}
		pairs := []struct {
			name       string
			ch, report int64
		}{
			{"validations", int64(g.validations), want.Validations},
			{"ok validations", int64(g.validationsOK), want.ValidationsByOutcome["ok"]},
			{"requests", int64(g.requests), want.Requests},
			{"401s", int64(g.rejections401), want.Rejections401},
			{"refresh attempts", int64(g.refreshes), want.RefreshAttempts},
			{"refresh ok", int64(g.refreshesOK), want.RefreshOK},
			{"issued", int64(g.issued), want.Issued},
			{"introspections", int64(g.introspections), want.Introspections},
			{"introspection errors", int64(g.introspectionErrors), want.IntrospectionErrors},
		}
		for _, p := range pairs {
			if p.ch != p.report {
				t.Errorf("%s %s: ClickHouse %d, analyze %d", svc, p.name, p.ch, p.report)
			}
		}
		if want.ValidationLatencyP95MS != nil {
			if d := math.Abs(g.latencyP95-*want.ValidationLatencyP95MS) / *want.ValidationLatencyP95MS; d > 0.05 {
				t.Errorf("%s latency p95: ClickHouse %.2f ms, analyze %.2f ms (%.1f%% apart)", svc, g.latencyP95, *want.ValidationLatencyP95MS, d*100)
			}
		}
	}
}
