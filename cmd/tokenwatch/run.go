package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/pipeline"
	"github.com/tokenwatch/tokenwatch/rekey"
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
	role := fs.String("role", "", "with fleet.keyed_topic set: run both stages, or only ingest or analyze (the key fleet.role; docs/fleet.md)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := cf.load()
	if err != nil {
		return err
	}
	if *role != "" {
		if c.Fleet.KeyedTopic == "" {
			return usagef("--role needs fleet.keyed_topic (the fleet's internal topic; docs/fleet.md)")
		}
		c.Fleet.Role = *role
		if err := c.Validate(); err != nil {
			return usagef("--role: %v", err)
		}
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
	h := &health{st: st}
	_, stop, err := serveMetrics(c.Metrics.Listen, reg, h, log)
	if err != nil {
		return err
	}
	defer stop()
	svc, err := startService(ctx, c, st, reg, log)
	if err != nil {
		return err
	}
	for _, g := range svc.groups {
		h.addGroup(g)
	}
	if err := awaitJoined(ctx, svc.groups, c.Kafka); err != nil {
		svc.Stop()
		return err
	}
	<-ctx.Done()
	log.Info("stopping: draining and committing")
	svc.Stop()
	s := svc.Pipeline.Stats()
	log.Info("stopped", "consumed", s.Consumed, "stored", s.Stored, "rejected", s.Rejected, "redaction_violations", s.RedactionViolations)
	return nil
}

// awaitJoined waits until every consumer group has joined, up to
// kafka.startup_timeout: a process that cannot reach its brokers exits
// non-zero, saying what it could not reach, instead of retrying for ever
// behind a live health check.
func awaitJoined(ctx context.Context, groups []*consumer.Group, kc config.Kafka) error {
	if kc.StartupTimeout <= 0 {
		return nil
	}
	deadline := time.NewTimer(kc.StartupTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var waiting []*consumer.Group
		for _, g := range groups {
			if !g.Joined() {
				waiting = append(waiting, g)
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-deadline.C:
			g := waiting[0]
			last := "no answer yet"
			if err := g.LastError(); err != nil {
				last = err.Error()
			}
			return fmt.Errorf("kafka: consumer group %s did not join within kafka.startup_timeout (%s) at brokers %s: %s",
				g.GroupID(), kc.StartupTimeout, strings.Join(kc.Brokers, ","), last)
		}
	}
}

// service is the running stages: one consumer group feeding one pipeline,
// or, with fleet.keyed_topic set, the fleet's ingest and analyze stages
// (docs/fleet.md), each its own consumer group and pipeline.
type service struct {
	Pipeline *pipeline.Pipeline // the stage reading the raw topics (or the analyze stage alone)
	Stages   *pipeline.Stages
	stages   []*stage
	groups   []*consumer.Group // one per stage, for /readyz
}

type stage struct {
	cancelG, cancelP context.CancelFunc
	gdone, pdone     chan struct{}
	close            func()
}

// startService wires and starts the stages for c. Stop drains in order: the
// consumer first (so it can hand its partitions over clean), then the
// pipeline's last batch; the ingest stage before the analyze stage.
func startService(ctx context.Context, c config.Config, st *store.Store, reg *prometheus.Registry, log *slog.Logger) (*service, error) {
	s := &service{}
	if c.Fleet.KeyedTopic == "" {
		built, err := pipeline.Build(c, st, reg, log)
		if err != nil {
			return nil, err
		}
		if err := s.start(ctx, built, c.Kafka, st.StoredOffsets, log); err != nil {
			return nil, err
		}
		return s, nil
	}
	if err := ensureKeyedTopic(ctx, c, log); err != nil {
		return nil, err
	}
	roles := []string{config.RoleIngest, config.RoleAnalyze}
	if c.Fleet.Role != config.RoleBoth {
		roles = []string{c.Fleet.Role}
	}
	for _, role := range roles {
		slg := log.With("role", role)
		built, err := pipeline.BuildStage(c, role, st, prometheus.WrapRegistererWith(prometheus.Labels{"role": role}, reg), slg)
		if err != nil {
			s.Stop()
			return nil, err
		}
		kc, stored := c.Kafka, st.StoredOffsets
		if role == config.RoleAnalyze {
			kc.Topics, kc.GroupID, kc.Format = []string{c.Fleet.KeyedTopic}, pipeline.AnalyzeGroupID(c), "json"
			stored = nil // keyed offsets are the group's own
		}
		if err := s.start(ctx, built, kc, stored, slg); err != nil {
			s.Stop()
			return nil, err
		}
	}
	return s, nil
}

func (s *service) start(ctx context.Context, built *pipeline.Built, kc config.Kafka, stored consumer.StoredOffsets, log *slog.Logger) error {
	group, err := consumer.New(kc, stored, built.Metrics, log)
	if err != nil {
		built.Close()
		return err
	}
	built.Pipeline.SetAcker(group)
	group.SetRebuilder(built.Pipeline) // each stage rebuilds what it keeps (the ingest stage nothing)
	if s.Pipeline == nil {
		s.Pipeline, s.Stages = built.Pipeline, built.Stages
	}
	r := &stage{gdone: make(chan struct{}), pdone: make(chan struct{}), close: built.Close}
	pctx, pcancel := context.WithCancel(context.Background())
	r.cancelP = pcancel
	go func() { defer close(r.pdone); _ = built.Pipeline.Run(pctx) }()
	gctx, gcancel := context.WithCancel(ctx)
	r.cancelG = gcancel
	go func() {
		defer close(r.gdone)
		if err := group.Run(gctx, built.Pipeline); err != nil {
			log.Error("kafka consumer stopped", "err", err)
		}
	}()
	s.stages = append(s.stages, r)
	s.groups = append(s.groups, group)
	return nil
}

// Stop drains and stops every stage, in the order they started; safe to
// call once.
func (s *service) Stop() {
	for _, r := range s.stages {
		r.cancelG()
		<-r.gdone
		r.cancelP()
		<-r.pdone
		r.close()
	}
}

// ensureKeyedTopic creates the fleet's keyed topic when it is missing
// (rekey.EnsureTopic).
func ensureKeyedTopic(ctx context.Context, c config.Config, log *slog.Logger) error {
	d, err := consumer.Dialer(c.Kafka)
	if err != nil {
		return err
	}
	f := c.Fleet
	return rekey.EnsureTopic(ctx, d, c.Kafka.Brokers, rekey.TopicConfig{Name: f.KeyedTopic, Partitions: f.KeyedPartitions,
		ReplicationFactor: f.ReplicationFactor, MinInsyncReplicas: f.MinInsyncReplicas, Retention: f.Retention}, log)
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

// serveMetrics serves /metrics, /livez and /readyz (h; nil: never ready)
// on addr (empty: off) and returns the bound address and its stopper.
func serveMetrics(addr string, reg *prometheus.Registry, h *health, log *slog.Logger) (string, func(), error) {
	if addr == "" {
		return "", func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics.listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if h == nil {
		h = &health{}
	}
	mux.HandleFunc("/livez", h.livez)
	mux.HandleFunc("/healthz", h.livez)
	mux.HandleFunc("/readyz", h.readyz)
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
