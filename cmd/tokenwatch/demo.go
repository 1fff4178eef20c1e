package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"golang.org/x/term"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/embedded/broker"
	"github.com/tokenwatch/tokenwatch/embedded/chdb"
	"github.com/tokenwatch/tokenwatch/eval"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/store"
)

// demoTopic is the embedded broker's topic.
const demoTopic = "auth-events"

func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "[--duration 60s] [--rate 5000] [--summary-json PATH]", `
Run tokenwatch end to end in one process: an in-process Kafka-protocol broker,
the ClickHouse engine in-process (libchdb; 'make setup' fetches it), the traffic
generator (with attacks and benign look-alikes), and the full pipeline: decoding,
redaction guard, SLIs, detectors, ClickHouse storage, offset commits.

While it runs it shows a live status (a one-screen view on a terminal, plain lines
otherwise). At the end (--duration, or Ctrl-C) it prints a summary: events
produced, consumed, stored, rejected by reason, redaction violations, findings by
kind scored against the generator's ground truth, and the latency from an
event's append to Kafka to its finding stored in ClickHouse. ClickHouse stays
reachable at --clickhouse-listen while it runs (try curl), and /metrics at
--metrics-listen.`, stdout, stderr)
	var g genFlags
	g.register(fs, 5000, "all=1")
	summaryPath := fs.String("summary-json", "", "write the summary as JSON to this file")
	chListen := fs.String("clickhouse-listen", "127.0.0.1:8123", "where the embedded ClickHouse answers (HTTP interface); a busy port falls back to a free one")
	metricsListen := fs.String("metrics-listen", "127.0.0.1:9464", "where /metrics is served; a busy port falls back to a free one")
	format := fs.String("format", "json", "message format the generator sends: json, otlp_proto or otlp_json")
	partitions := fs.Int("partitions", 6, "partitions of the demo topic")
	badMessages := fs.Int("bad-messages", 0, "also send this many malformed messages (to see rejections)")
	leaks := fs.Int("leaks", 0, "also send this many events that carry a raw JWT (to see the redaction guard)")
	dataDir := fs.String("data", "", "keep the engine's data here (default: a temporary directory)")
	speed := fs.Float64("speed", 0, "traffic time runs this many times faster than the wall clock (event timestamps end at now); --rate stays events per wall-clock second; 0: enough for 25 minutes of traffic, at least 10x")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tty := false
	if f, ok := stdout.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	logw := stderr
	var logBuf *syncBuffer
	if tty {
		logBuf = &syncBuffer{}
		logw = logBuf // keep the status screen clean; logs are shown at the end
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn}))

	fmt.Fprintln(stdout, "starting the embedded ClickHouse engine…")
	eng, err := chdb.Open(chdb.Options{DataDir: *dataDir, Logger: log})
	if err != nil {
		return err
	}
	defer eng.Close()
	// The engine outlives Ctrl-C: the pipeline flushes into it on the way out.
	srv, err := chdb.Serve(context.Background(), eng, freeOr(*chListen))
	if err != nil {
		return err
	}
	defer srv.Close()
	brk, err := broker.Start(ctx, broker.Options{Partitions: *partitions, Topics: []string{demoTopic}, Logger: log})
	if err != nil {
		return err
	}
	defer brk.Close()

	if *speed == 0 {
		// The longest scenarios need about 22 minutes of traffic to play out.
		*speed = max(10, float64(25*time.Minute)/float64(max(g.duration, time.Second)))
	}
	if *speed < 1 {
		return usagef("--speed: want 1 or more (or 0 for automatic), got %v", *speed)
	}
	// Traffic time runs --speed times faster than the wall clock and ends
	// now, so a few minutes hold every scenario (most need 5-17 minutes of
	// traffic time to play out) and no timestamp lies in the future.
	traffic := time.Duration(float64(g.duration) * *speed)
	spec, err := g.spec(time.Now().Add(-traffic))
	if err != nil {
		return err
	}
	spec.Rate = g.rate / *speed
	// The generator needs at least 2 minutes of traffic time; the demo stops
	// at --duration all the same. Scenarios too long to play out in the run
	// are left out, and said so.
	spec.Duration = max(traffic, 2*time.Minute)
	dropped := fitScenarios(&spec)
	if len(dropped) > 0 {
		fmt.Fprintf(stdout, "scenarios left out (too long to play out in %s of traffic; raise --duration or --speed): %s\n", traffic, strings.Join(dropped, ", "))
	}
	c := config.Default()
	c.Kafka.Brokers, c.Kafka.Topics, c.Kafka.GroupID, c.Kafka.MaxWait = brk.Addrs(), []string{demoTopic}, "tokenwatch-demo", 20*time.Millisecond
	c.Kafka.Format = *format
	c.ClickHouse.Addr, c.ClickHouse.Database = []string{srv.Addr()}, "tokenwatch"
	c.ClickHouse.BatchInterval = 200 * time.Millisecond
	c.ClickHouse.Compression = "lz4"
	c.Redaction.Key = "demo-key"
	c.Detect.NATEgressRanges = spec.NATPrefixes()
	c.Metrics.Listen = freeOr(*metricsListen)
	if err := c.Validate(); err != nil {
		return err
	}
	st, err := store.Open(ctx, c.ClickHouse)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	h := &health{st: st}
	metricsAddr, stopMetrics, err := serveMetrics(c.Metrics.Listen, reg, h, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	svc, err := startService(context.Background(), c, st, reg, log)
	if err != nil {
		return err
	}
	for _, g := range svc.groups {
		h.addGroup(g)
	}
	rec := &findingRecorder{latest: map[string]finding.Finding{}}
	svc.Pipeline.SetNotifier(rec)

	gn, err := gen.New(spec)
	if err != nil {
		return err
	}
	var prog gen.ProduceProgress
	var progMu sync.Mutex
	genCtx, stopGen := context.WithTimeout(ctx, g.duration)
	defer stopGen()
	genDone := make(chan error, 1)
	go func() {
		clock := gen.NewScaledClock(spec.Start, *speed)
		p, err := gen.Produce(genCtx, gn, gen.ProduceConfig{Brokers: brk.Addrs(), Topic: demoTopic, Format: *format, Live: true, Clock: clock,
			Progress: func(p gen.ProduceProgress) { progMu.Lock(); prog = p; progMu.Unlock() }}, log)
		progMu.Lock()
		prog = p
		progMu.Unlock()
		genDone <- err
	}()
	extra, err := sendExtras(ctx, brk.Addrs(), *badMessages, *leaks)
	if err != nil {
		return err
	}

	started := time.Now()
	view := &statusView{out: stdout, tty: tty, chURL: srv.URL(), metrics: metricsAddr, duration: g.duration}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var genErr error
	interrupted := false
loop:
	for {
		select {
		case genErr = <-genDone:
			if genCtx.Err() != nil && ctx.Err() == nil {
				genErr = nil // --duration reached
			}
			break loop
		case <-ctx.Done():
			interrupted = true
			stopGen()
			genErr = <-genDone
			break loop
		case <-tick.C:
			progMu.Lock()
			p := prog
			progMu.Unlock()
			view.draw(time.Since(started), p, svc.Pipeline.Stats(), rec.counts())
		}
	}
	if genErr != nil && !interrupted {
		fmt.Fprintf(stderr, "generator: %v\n", genErr)
	}
	// Let the pipeline catch up with everything the broker acknowledged.
	progMu.Lock()
	produced := prog
	progMu.Unlock()
	want := produced.Messages + int64(extra)
	catchUp := time.Now().Add(30 * time.Second)
	for svc.Pipeline.Stats().Consumed < want && time.Now().Before(catchUp) {
		time.Sleep(50 * time.Millisecond)
	}
	svc.Stop()
	stats := svc.Pipeline.Stats()

	sum := demoSummary{
		Duration:            time.Since(started).Round(time.Millisecond).String(),
		Interrupted:         interrupted,
		EventsProduced:      produced.Events + int64(*leaks),
		MessagesProduced:    produced.Messages + int64(extra),
		Consumed:            stats.Consumed,
		Accepted:            stats.Accepted,
		Stored:              stats.Stored,
		Rejected:            stats.Rejected,
		RejectedByReason:    stats.RejectedByReason,
		RedactionViolations: stats.RedactionViolations,
		ClickHouseURL:       srv.URL(),
	}
	if err := st.Conn().QueryRow(context.Background(), "SELECT count() FROM tokenwatch.events").Scan(&sum.StoredInClickHouse); err != nil {
		return fmt.Errorf("counting stored events: %w", err)
	}
	findings := rec.all()
	sum.Findings = map[string]int{}
	for _, f := range findings {
		sum.Findings[string(f.Kind)]++
	}
	sum.FindingLatency = latencySummary(svc.Pipeline.FindingLatencies())
	res := eval.Evaluate(gn.Truth(), findings)
	sum.Detection = res
	printSummary(stdout, sum, res)
	if logBuf != nil && logBuf.Len() > 0 {
		fmt.Fprintf(stderr, "\nwarnings logged during the run:\n%s", logBuf.String())
	}
	if *summaryPath != "" {
		b, err := json.MarshalIndent(sum, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*summaryPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "summary written to %s\n", *summaryPath)
	}
	return nil
}

// fitScenarios drops injected scenarios that cannot play out within the
// spec's duration, and returns their names.
func fitScenarios(spec *gen.Spec) []string {
	var dropped []string
	for name, n := range spec.Inject {
		if n == 0 {
			continue
		}
		one := *spec
		one.Inject = map[string]int{name: n}
		if err := one.Validate(); err != nil {
			dropped = append(dropped, name)
			delete(spec.Inject, name)
		}
	}
	sort.Strings(dropped)
	return dropped
}

// freeOr returns addr when it can be bound now, else the same host on a free port.
func freeOr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return addr
	}
	host, _, _ := net.SplitHostPort(addr)
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, "0")
}

// sendExtras sends the optional malformed messages and leaking events.
func sendExtras(ctx context.Context, brokers []string, bad, leaks int) (int, error) {
	if bad == 0 && leaks == 0 {
		return 0, nil
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: demoTopic, BatchTimeout: 10 * time.Millisecond}
	defer w.Close()
	var msgs []kafka.Message
	for i := 0; i < bad; i++ {
		msgs = append(msgs, kafka.Message{Value: []byte(fmt.Sprintf(`{"ts":"not a time","kind":"validate","n":%d}`, i))})
	}
	// A JWT-shaped credential built at run time (header {"alg":"none"}), so no
	// literal token sits in the source.
	jwt := "eyJhbGciOiJub25lIn0" + "." + "eyJzdWIiOiJkZW1vIn0" + "." + "c2lnbmF0dXJl"
	for i := 0; i < leaks; i++ {
		e := event.Event{TS: time.Now().UTC(), Kind: event.KindValidate, Outcome: event.OK, Service: "legacy-gateway",
			TokenID: fmt.Sprintf("%016x", 0xfeed0000+i), Reason: "Authorization: Bearer " + jwt}
		msgs = append(msgs, kafka.Message{Value: ingest.AppendJSON(nil, &e)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		return 0, fmt.Errorf("sending extra messages: %w", err)
	}
	return len(msgs), nil
}

// findingRecorder keeps the newest state of every finding (the pipeline
// notifies it as Alertmanager would be).
type findingRecorder struct {
	mu     sync.Mutex
	latest map[string]finding.Finding
}

func (r *findingRecorder) Notify(f finding.Finding) {
	r.mu.Lock()
	r.latest[f.ID] = f
	r.mu.Unlock()
}

func (r *findingRecorder) all() []finding.Finding {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]finding.Finding, 0, len(r.latest))
	for _, f := range r.latest {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (r *findingRecorder) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, f := range r.latest {
		out[string(f.Kind)]++
	}
	return out
}

// syncBuffer collects logs while the status screen owns the terminal.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 64<<10 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) Len() int { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Len() }

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
