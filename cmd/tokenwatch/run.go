package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/pipeline"
	"github.com/tokenwatch/tokenwatch/store"
)

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf configFlags
	fs := newFlags("run", "[--config FILE] [--set key=value ...]", `
Consume auth events from Kafka, compute the SLIs, run the detectors, store
events, SLIs and findings in ClickHouse, push findings to Alertmanager and serve
/metrics. Offsets are committed only after ClickHouse has the data. Stop with
SIGINT/SIGTERM: it flushes, commits and exits.

Run 'tokenwatch migrate' once first. See docs/config.md for every key.`, stdout, stderr)
	cf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := cf.load()
	if err != nil {
		return err
	}
	log := newLogger(c.Log, stderr)
	st, err := store.Open(ctx, c.ClickHouse)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := checkSchema(ctx, st); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	_, stop, err := serveMetrics(c.Metrics.Listen, reg, log)
	if err != nil {
		return err
	}
	defer stop()
	svc, err := startService(ctx, c, st, reg, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("stopping: draining and committing")
	svc.Stop()
	s := svc.Pipeline.Stats()
	log.Info("stopped", "consumed", s.Consumed, "stored", s.Stored, "rejected", s.Rejected, "redaction_violations", s.RedactionViolations)
	return nil
}

// service is a running consumer group feeding a pipeline.
type service struct {
	Pipeline *pipeline.Pipeline
	Stages   *pipeline.Stages
	cancelG  context.CancelFunc
	cancelP  context.CancelFunc
	gdone    chan struct{}
	pdone    chan struct{}
	closers  []func()
}

// startService wires and starts the stages for c. Stop drains in order: the
// consumer first (so it can hand its partitions over clean), then the
// pipeline's last batch.
func startService(ctx context.Context, c config.Config, st *store.Store, reg *prometheus.Registry, log *slog.Logger) (*service, error) {
	built, err := pipeline.Build(c, st, reg, log)
	if err != nil {
		return nil, err
	}
	group, err := consumer.New(c.Kafka, st.StoredOffsets, built.Metrics, log)
	if err != nil {
		built.Close()
		return nil, err
	}
	built.Pipeline.SetAcker(group)
	group.SetRebuilder(built.Pipeline)
	s := &service{Pipeline: built.Pipeline, Stages: built.Stages, gdone: make(chan struct{}), pdone: make(chan struct{}), closers: []func(){built.Close}}
	pctx, pcancel := context.WithCancel(context.Background())
	s.cancelP = pcancel
	go func() { defer close(s.pdone); _ = built.Pipeline.Run(pctx) }()
	gctx, gcancel := context.WithCancel(ctx)
	s.cancelG = gcancel
	go func() {
		defer close(s.gdone)
		if err := group.Run(gctx, built.Pipeline); err != nil {
			log.Error("kafka consumer stopped", "err", err)
		}
	}()
	return s, nil
}

// Stop drains and stops; safe to call once.
func (s *service) Stop() {
	s.cancelG()
	<-s.gdone
	s.cancelP()
	<-s.pdone
	for _, c := range s.closers {
		c()
	}
}

func checkSchema(ctx context.Context, st *store.Store) error {
	var v uint32
	err := st.Conn().QueryRow(ctx, "SELECT max(version) FROM "+st.Database()+".schema_migrations").Scan(&v)
	if err != nil || int(v) < store.SchemaVersion() {
		return fmt.Errorf("ClickHouse database %s is not at schema version %d (run `tokenwatch migrate` first)", st.Database(), store.SchemaVersion())
	}
	return nil
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serveMetrics serves /metrics on addr (empty: off) and returns the bound
// address and its stopper.
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (string, func(), error) {
	if addr == "" {
		return "", func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics.listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("serving /metrics", "addr", ln.Addr().String())
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
