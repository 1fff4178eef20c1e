// Command tokenwatch-bench measures the pipeline end to end on the embedded
// broker and engine, against baselines measured in the same run (the machine
// is noisy; only ratios compare across runs):
//
//   - kafka-go alone: consuming the same messages with the same per-partition
//     readers and doing nothing else (rate and CPU per message);
//   - the pipeline with a store that discards (its own CPU per event, the
//     engine excluded);
//   - the pipeline into the ClickHouse engine (end-to-end events/s);
//
// plus peak RSS and stored bytes per event. `make bench` runs it.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/embedded/broker"
	"github.com/tokenwatch/tokenwatch/embedded/chdb"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/pipeline"
	"github.com/tokenwatch/tokenwatch/rekey"
	"github.com/tokenwatch/tokenwatch/store"
)

func main() {
	n := flag.Int("events", 500_000, "events to pre-load into the broker and consume")
	partitions := flag.Int("partitions", 6, "topic partitions")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	serveBroker := flag.Bool("serve-broker", false, "internal: run only the embedded broker and print its address")
	rebuildSizes := flag.String("rebuild", "1000000,10000000", "events in the rebuild window for the rebuild figures (comma-separated; empty: none)")
	keyedReplay := flag.Int("keyed-replay", 1_000_000, "events in the window for the fleet's rebuild from the keyed topic, compared with the events table's (0: skip)")
	flag.Parse()
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400) // as tokenwatch itself runs (cmd/tokenwatch)
	}
	if *serveBroker {
		// The broker runs in a child process so the CPU this process
		// measures is the consumer's and the pipeline's alone.
		brk, err := broker.Start(context.Background(), broker.Options{Partitions: *partitions, Topics: []string{"bench"}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(strings.Join(brk.Addrs(), ","))
		_, _ = io.Copy(io.Discard, os.Stdin) // until the parent exits
		brk.Close()
		return
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	var sizes []int
	for _, f := range strings.Split(*rebuildSizes, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			fmt.Fprintf(os.Stderr, "tokenwatch-bench: --rebuild: %q is not a positive count of events\n", f)
			os.Exit(2)
		}
		sizes = append(sizes, v)
	}
	if err := run(*n, *partitions, sizes, *keyedReplay); err != nil {
		fmt.Fprintln(os.Stderr, "tokenwatch-bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// cpu is this process's user+system CPU time so far.
func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func peakRSS() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss * 1024
}

type phase struct {
	name string
	wall time.Duration
	cpu  time.Duration
	n    int
}

func (p phase) rate() float64        { return float64(p.n) / p.wall.Seconds() }
func (p phase) cpuPerEvent() float64 { return float64(p.cpu.Nanoseconds()) / float64(p.n) }

func run(n, partitions int, rebuildSizes []int, keyedReplay int) error {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	fmt.Printf("tokenwatch-bench: %d events, %d partitions, GOMAXPROCS=%d\n", n, partitions, runtime.GOMAXPROCS(0))

	addrs, stop, err := startBrokerProcess(partitions)
	if err != nil {
		return err
	}
	defer stop()
	if err := preload(ctx, addrs, n); err != nil {
		return err
	}

	// Baseline: kafka-go's own consume of the same messages, same readers.
	base, err := consumeOnly(ctx, addrs, n)
	if err != nil {
		return err
	}

	// The pipeline with a store that discards: its own CPU per event.
	c := config.Default()
	c.Kafka.Brokers, c.Kafka.Topics, c.Kafka.MaxWait = addrs, []string{"bench"}, 20*time.Millisecond
	c.ClickHouse.BatchRows = 100_000
	c.Pipeline.RebuildWindow = 0
	c.Redaction.Key = "bench"
	own, err := runPipeline(ctx, c, "bench-discard", discard{}, n, quiet)
	if err != nil {
		return err
	}

	// The fleet's two stages (docs/fleet.md), store discarding: the ingest
	// stage publishes every event to the keyed topic, the analyze stage
	// reads it back. What they cost together beyond the single process is
	// the re-keying's own cost (the produce and the second consume).
	fc := c
	fc.Fleet.KeyedTopic, fc.Fleet.KeyedPartitions = "bench-keyed", partitions
	if err := rekey.EnsureTopic(ctx, &kafka.Dialer{}, addrs, rekey.TopicConfig{Name: fc.Fleet.KeyedTopic, Partitions: partitions,
		ReplicationFactor: -1, Retention: time.Hour}, quiet); err != nil {
		return err
	}
	ing, err := runStage(ctx, fc, config.RoleIngest, "fleet ingest stage (publishes keyed copies)", "bench-fleet-ingest", discard{}, n, quiet)
	if err != nil {
		return err
	}
	ac := fc
	ac.Kafka.Topics, ac.Kafka.Format = []string{fc.Fleet.KeyedTopic}, "json"
	ana, err := runStage(ctx, ac, config.RoleAnalyze, "fleet analyze stage (reads the keyed topic)", "bench-fleet-analyze", discard{}, n, quiet)
	if err != nil {
		return err
	}

	// The fleet line (docs/scaling.md): 1, 2 and 3 replicas.
	var fleet []phase
	for r := 1; r <= 3; r++ {
		p, err := runFleet(ctx, c, r, partitions, n, quiet)
		if err != nil {
			return err
		}
		fleet = append(fleet, p)
	}

	// End to end into the ClickHouse engine.
	eng, err := chdb.Open(chdb.Options{Logger: quiet})
	if err != nil {
		return err
	}
	defer eng.Close()
	srv, err := chdb.Serve(ctx, eng, "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer srv.Close()
	c.ClickHouse.Addr, c.ClickHouse.Database = []string{srv.Addr()}, "bench"
	st, err := store.Open(ctx, c.ClickHouse)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return err
	}
	e2e, err := runPipeline(ctx, c, "bench-e2e", st, n, quiet)
	if err != nil {
		return err
	}
	if err := st.Conn().Exec(ctx, "OPTIMIZE TABLE bench.events FINAL"); err != nil {
		fmt.Fprintln(os.Stderr, "optimize:", err)
	}
	// Read straight from the engine: the stored size is the engine's own figure.
	var rows, bytes uint64
	out, err := eng.Query("SELECT sum(rows), sum(data_compressed_bytes) FROM system.parts WHERE database = 'bench' AND table = 'events' AND active", "TabSeparated")
	if err != nil {
		return err
	}
	if _, err := fmt.Sscan(string(out), &rows, &bytes); err != nil {
		return fmt.Errorf("stored size: %q: %w", out, err)
	}
	// The rebuild from the events table (Fleet 3/4): N events in the
	// window, replayed into the detectors as a member taking partitions
	// over does, bounded by pipeline.rebuild_max_events.
	var rebuilds []rebuildPhase
	for _, size := range rebuildSizes {
		r, err := runRebuild(ctx, c, eng, srv.Addr(), size)
		if err != nil {
			return err
		}
		rebuilds = append(rebuilds, r)
	}
	// The same window replayed from the keyed topic, as the fleet's
	// analyze stage rebuilds (item 1 of Fleet 3/4: both ways, one run).
	var keyed []rebuildPhase
	if keyedReplay > 0 {
		r, err := runKeyedReplay(ctx, c, partitions, keyedReplay, quiet)
		if err != nil {
			return err
		}
		keyed = append(keyed, r)
	}
	fmt.Printf("\n%-44s %12s %14s %16s\n", "phase", "events/s", "CPU ns/event", "wall")
	for _, p := range append([]phase{base, own, ing, ana}, append(fleet, e2e)...) {
		fmt.Printf("%-44s %12.0f %14.0f %16s\n", p.name, p.rate(), p.cpuPerEvent(), p.wall.Round(time.Millisecond))
	}
	fmt.Printf("\nratios (same run):\n")
	fmt.Printf("  end-to-end rate / kafka-go consume rate        %.3f   (target: e2e >= 250k ev/s on 2 cores)\n", e2e.rate()/base.rate())
	fmt.Printf("  pipeline CPU per event / kafka-go CPU per msg  %.2fx  (pipeline own CPU %.2f µs/event; target <= 3 µs)\n",
		own.cpuPerEvent()/base.cpuPerEvent(), own.cpuPerEvent()/1000)
	rekey := ing.cpuPerEvent() + ana.cpuPerEvent() - own.cpuPerEvent()
	fmt.Printf("  re-keying's own CPU per event / kafka-go       %.2fx  (fleet stages together minus the single process: %.2f µs/event)\n",
		rekey/base.cpuPerEvent(), rekey/1000)
	fmt.Printf("  fleet CPU per event, 2 and 3 replicas / 1      %.2fx, %.2fx  (flat: the work per event does not grow with replicas)\n",
		fleet[1].cpuPerEvent()/fleet[0].cpuPerEvent(), fleet[2].cpuPerEvent()/fleet[0].cpuPerEvent())
	fmt.Printf("  stored bytes per event                         %.1f B  (target <= 32 B)\n", float64(bytes)/float64(max(rows, 1)))
	fmt.Printf("  peak RSS                                       %.0f MiB\n", float64(peakRSS())/(1<<20))
	if len(rebuilds) > 0 {
		fmt.Printf("\nrebuild from the events table (pipeline.rebuild_max_events %d):\n", c.Pipeline.RebuildMaxEvents)
		fmt.Printf("%-14s %10s %12s %14s %12s %14s\n", "in window", "replayed", "events/s", "CPU ns/event", "wall", "state heap")
		for _, r := range rebuilds {
			fmt.Printf("%-14d %10d %12.0f %14.0f %12s %11.0f MiB\n", r.window, r.n, r.rate(), r.cpuPerEvent(), r.wall.Round(time.Millisecond), float64(r.heap)/(1<<20))
		}
	}
	if len(keyed) > 0 {
		fmt.Printf("\nrebuild from the keyed topic (the fleet's analyze stage; bound lifted to the window):\n")
		fmt.Printf("%-14s %10s %12s %14s %12s %14s\n", "in window", "replayed", "events/s", "CPU ns/event", "wall", "heap")
		for _, r := range keyed {
			fmt.Printf("%-14d %10d %12.0f %14.0f %12s %11.0f MiB\n", r.window, r.n, r.rate(), r.cpuPerEvent(), r.wall.Round(time.Millisecond), float64(r.heap)/(1<<20))
			for _, t := range rebuilds {
				if t.window == r.window {
					fmt.Printf("  keyed topic / events table, same window      %.2fx wall, %.2fx CPU per event\n",
						r.wall.Seconds()/t.wall.Seconds(), r.cpuPerEvent()/t.cpuPerEvent())
				}
			}
		}
	}
	return nil
}

type rebuildPhase struct {
	phase
	window int
	heap   uint64
}

// runRebuild stores window synthetic events (30 minutes of validations,
// issues and refreshes over 6 partitions) in a database of their own, and
// replays them into fresh detectors the way Pipeline.rebuild does: the
// bound first (ReplayStart), then the events in ts order. heap is what
// the detectors' state grew by.
func runRebuild(ctx context.Context, c config.Config, eng *chdb.Engine, addr string, window int) (rebuildPhase, error) {
	rc := c.ClickHouse
	rc.Addr, rc.Database = []string{addr}, "rebuild"+strconv.Itoa(window)
	st, err := store.Open(ctx, rc)
	if err != nil {
		return rebuildPhase{}, err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return rebuildPhase{}, err
	}
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	insert := fmt.Sprintf(`INSERT INTO %[1]s.events (ts, kind, outcome, service, issuer, region, token_id, session_id, subject, client_id,
 family_id, iat, exp, latency_ms, token_bytes, topic, partition, offset, record)
SELECT t, multiIf(number %% 16 = 0, 'issue', number %% 64 = 9, 'refresh', 'validate'), 'ok',
 ['api', 'orders', 'billing'][number %% 3 + 1], 'https://idp.example', 'eu-west-1',
 concat('t', toString(intDiv(number, 16))), concat('s', toString(intDiv(number, 128))),
 concat('u', toString(intDiv(number, 128) %% 100000)), 'web', concat('f', toString(intDiv(number, 128))),
 t, t + toIntervalMinute(15), 3.5, 900, 'bench', number %% 6, intDiv(number, 6), 0
FROM (SELECT number, toDateTime64('%[2]s', 3, 'UTC') + toIntervalMillisecond(intDiv(number * 1800000, %[3]d)) AS t FROM numbers(%[3]d))`,
		rc.Database, base.Format("2006-01-02 15:04:05"), window)
	if _, err := eng.Query(insert, "TabSeparated"); err != nil {
		return rebuildPhase{}, fmt.Errorf("rebuild: store %d events: %w", window, err)
	}
	stages, err := pipeline.BuildStages(c, prometheus.NewRegistry())
	if err != nil {
		return rebuildPhase{}, err
	}
	parts := []int32{0, 1, 2, 3, 4, 5}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start, c0 := time.Now(), cpu()
	from, _, err := st.ReplayStart(ctx, "bench", parts, base, c.Pipeline.RebuildMaxEvents)
	if err != nil {
		return rebuildPhase{}, err
	}
	n, err := st.ReplayEvents(ctx, "bench", parts, from, stages.Replay)
	if err != nil {
		return rebuildPhase{}, err
	}
	p := phase{name: "rebuild", wall: time.Since(start), cpu: cpu() - c0, n: n}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(stages)
	_ = st.Conn().Exec(ctx, "DROP DATABASE "+rc.Database)
	return rebuildPhase{phase: p, window: window, heap: after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)}, nil
}

// startBrokerProcess runs the embedded broker in a child process (this
// binary with --serve-broker) and returns its address.
func startBrokerProcess(partitions int) ([]string, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(self, "--serve-broker", "--partitions", strconv.Itoa(partitions))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, nil, fmt.Errorf("broker process: %w", err)
	}
	stop := func() { stdin.Close(); _ = cmd.Wait() }
	return strings.Split(strings.TrimSpace(line), ","), stop, nil
}

// preload generates n events and appends them to the broker, keyed by session.
func preload(ctx context.Context, brokers []string, n int) error {
	spec := gen.Default()
	// Traffic time long enough for every scenario to be placed; the preload
	// stops at n events.
	spec.Rate, spec.Sessions, spec.Duration = 20000, 20000, 30*time.Minute
	spec.Start = time.Now().Add(-spec.Duration) // recent, or the table's TTL drops it at OPTIMIZE
	spec.Inject, _ = gen.ParseInject("all=2")
	g, err := gen.New(spec)
	if err != nil {
		return err
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: "bench", Balancer: kafka.Murmur2Balancer{}, BatchSize: 5000, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	start := time.Now()
	sent := 0
	msgs := make([]kafka.Message, 0, 5000)
	buf := make([]event.Event, 0, 5000)
	for sent < n {
		b := g.Next(buf[:0])
		if b == nil {
			return fmt.Errorf("generator ran out after %d events", sent)
		}
		msgs = msgs[:0]
		for i := range b {
			if sent+len(msgs) >= n {
				break
			}
			msgs = append(msgs, kafka.Message{Key: []byte(b[i].PartitionKey()), Value: ingest.AppendJSON(nil, &b[i])})
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return err
		}
		sent += len(msgs)
	}
	fmt.Printf("preloaded %d messages in %s\n", sent, time.Since(start).Round(time.Millisecond))
	return nil
}

// consumeOnly reads every message with the consumer's own readers and a
// sink that only counts: the kafka-go baseline.
func consumeOnly(ctx context.Context, brokers []string, n int) (phase, error) {
	c := config.Default().Kafka
	c.Brokers, c.Topics, c.GroupID, c.MaxWait = brokers, []string{"bench"}, "bench-baseline", 20*time.Millisecond
	m := newMetrics()
	g, err := consumer.New(c, nil, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return phase{}, err
	}
	s := &countSink{want: n, done: make(chan struct{})}
	runtime.GC()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start, c0 := time.Now(), cpu()
	go func() { _ = g.Run(cctx, s) }()
	select {
	case <-s.done:
	case <-time.After(5 * time.Minute):
		return phase{}, fmt.Errorf("baseline consumed only %d of %d", s.n.Load(), n)
	}
	return phase{name: "kafka-go consume only (baseline)", wall: time.Since(start), cpu: cpu() - c0, n: n}, nil
}

func runPipeline(ctx context.Context, c config.Config, group string, st pipeline.StoreReplayer, n int, log *slog.Logger) (phase, error) {
	name := "pipeline into ClickHouse engine (end to end)"
	if _, ok := st.(discard); ok {
		name = "pipeline, store discards (own CPU)"
	}
	return runStage(ctx, c, "", name, group, st, n, log)
}

// runStage runs one pipeline (role: "" for the single process, or a fleet
// stage) until it has stored (acknowledged) n events.
func runStage(ctx context.Context, c config.Config, role, name, group string, st pipeline.StoreReplayer, n int, log *slog.Logger) (phase, error) {
	runtime.GC()
	start, c0 := time.Now(), cpu()
	s, err := startStage(ctx, c, role, group, st, log)
	if err != nil {
		return phase{}, err
	}
	defer s.stop()
	deadline := time.Now().Add(10 * time.Minute)
	for s.built.Pipeline.Stats().Stored < int64(n) {
		if time.Now().After(deadline) {
			return phase{}, fmt.Errorf("%s: stored only %d of %d", group, s.built.Pipeline.Stats().Stored, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return phase{name: name, wall: time.Since(start), cpu: cpu() - c0, n: n}, nil
}

// stage is one running pipeline and its consumer group member.
type stage struct {
	built *pipeline.Built
	stop  func()
}

func startStage(ctx context.Context, c config.Config, role, group string, st pipeline.StoreReplayer, log *slog.Logger) (*stage, error) {
	c.Kafka.GroupID = group
	reg := prometheus.NewRegistry()
	built, err := pipeline.BuildStage(c, role, st, reg, log)
	if err != nil {
		return nil, err
	}
	g, err := consumer.New(c.Kafka, nil, built.Metrics, log)
	if err != nil {
		built.Close()
		return nil, err
	}
	built.Pipeline.SetAcker(g)
	pctx, pcancel := context.WithCancel(ctx)
	gctx, gcancel := context.WithCancel(ctx)
	pdone, gdone := make(chan struct{}), make(chan struct{})
	go func() { defer close(pdone); _ = built.Pipeline.Run(pctx) }()
	go func() { defer close(gdone); _ = g.Run(gctx, built.Pipeline) }()
	return &stage{built: built, stop: func() {
		gcancel()
		<-gdone
		pcancel()
		<-pdone
		built.Close()
	}}, nil
}

// runFleet runs replicas replicas the way `tokenwatch run` with a keyed
// topic does (each an ingest and an analyze stage, in two consumer groups)
// until the ingest members have stored n events and the analyze members
// have taken n: the events/s and the CPU per event of the whole fleet. On
// two cores more replicas do not raise the rate; a CPU cost per event that
// stays flat as replicas are added is the sign that it scales on more cores.
// The wall time includes the groups' joins.
func runFleet(ctx context.Context, c config.Config, replicas, partitions, n int, log *slog.Logger) (phase, error) {
	fc := c
	fc.Fleet.KeyedTopic, fc.Fleet.KeyedPartitions = fmt.Sprintf("bench-keyed-%d", replicas), partitions
	fc.Fleet.AnalyzeGroupID = fmt.Sprintf("bench-fleet%d-analyze", replicas)
	if err := rekey.EnsureTopic(ctx, &kafka.Dialer{}, c.Kafka.Brokers, rekey.TopicConfig{Name: fc.Fleet.KeyedTopic, Partitions: partitions,
		ReplicationFactor: -1, Retention: time.Hour}, log); err != nil {
		return phase{}, err
	}
	ac := fc
	ac.Kafka.Topics, ac.Kafka.Format = []string{fc.Fleet.KeyedTopic}, "json"
	runtime.GC()
	start, c0 := time.Now(), cpu()
	var ingest, analyze []*stage
	defer func() {
		for _, s := range append(ingest, analyze...) {
			s.stop()
		}
	}()
	for range replicas {
		s, err := startStage(ctx, fc, config.RoleIngest, fmt.Sprintf("bench-fleet%d-ingest", replicas), discard{}, log)
		if err != nil {
			return phase{}, err
		}
		ingest = append(ingest, s)
		a, err := startStage(ctx, ac, config.RoleAnalyze, fc.Fleet.AnalyzeGroupID, discard{}, log)
		if err != nil {
			return phase{}, err
		}
		analyze = append(analyze, a)
	}
	stored := func(ss []*stage) (sum int64) {
		for _, s := range ss {
			sum += s.built.Pipeline.Stats().Stored
		}
		return sum
	}
	deadline := time.Now().Add(10 * time.Minute)
	for stored(ingest) < int64(n) || stored(analyze) < int64(n) {
		if time.Now().After(deadline) {
			return phase{}, fmt.Errorf("fleet of %d: ingest stored %d, analyze took %d of %d", replicas, stored(ingest), stored(analyze), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return phase{name: fmt.Sprintf("fleet, %d replica(s), both stages each", replicas), wall: time.Since(start), cpu: cpu() - c0, n: n}, nil
}
