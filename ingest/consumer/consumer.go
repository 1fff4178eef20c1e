// Package consumer reads Kafka with a kafka-go consumer group, one reader per
// assigned partition. It decides where each partition starts (the group's
// committed offset, or past what ClickHouse already holds), hands messages
// on in partition order, and commits only offsets the caller reports stored.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/metrics"
)

// Message is one Kafka record, named by where it came from.
type Message struct {
	Src   event.Source
	Key   []byte
	Value []byte
	// Time is the broker's append time (or the producer's create time),
	// the start of the append-to-finding latency.
	Time time.Time
	// Lag is how many messages of the partition the broker held past this
	// chunk when it was fetched (set on a chunk's last message).
	Lag int64
	// Headers are the record's headers (the keyed topic carries the
	// event's source in them).
	Headers []kafka.Header
}

// Sink receives what the consumer reads. Deliver may block: that is the
// back-pressure that keeps memory bounded when ClickHouse is slow. Drain
// returns once everything delivered so far is stored (and reported through
// Group.Ack), so a partition handed to another member is handed over clean.
type Sink interface {
	Deliver(ctx context.Context, msgs []Message) error
	Drain(ctx context.Context) error
}

// Assignment is an optional part of a Sink: told, each generation and before
// the readers start, which partitions this member reads now and which it
// no longer reads (the event-time merge holds its watermark for each).
type Assignment interface {
	Assigned(ctx context.Context, topic string, partitions []int32) error
	Revoked(ctx context.Context, topic string, partitions []int32) error
	// Backlog reports a partition's lag as its reader starts, before
	// anything is delivered.
	Backlog(ctx context.Context, topic string, partition int32, lag int64) error
}

// Rebuilder replays stored history of partitions this member takes over
// into the stateful stages, before their readers start.
type Rebuilder interface {
	Rebuild(ctx context.Context, topic string, partitions []int32) error
}

// StoredOffsets reports the highest offset per topic/partition that the
// store already holds; the consumer starts after it.
type StoredOffsets func(ctx context.Context, topics []string) (map[string]map[int32]int64, error)

// Group is a running consumer group member.
type Group struct {
	cfg    config.Kafka
	dialer *kafka.Dialer
	stored StoredOffsets
	m      *metrics.Pipeline
	log    *slog.Logger
	// rebuild, when set, is called with each generation's newly owned partitions.
	rebuild Rebuilder
	prev    map[string]map[int]bool

	mu       sync.Mutex
	gen      *kafka.Generation
	owned    map[string]map[int]bool
	pending  map[string]map[int]int64 // acked but not yet committed
	lastSeen map[string]map[int]int64
	lastErr  error // the last failure to join, until a join succeeds
}

// New prepares a member; Run joins the group.
func New(cfg config.Kafka, stored StoredOffsets, m *metrics.Pipeline, log *slog.Logger) (*Group, error) {
	d, err := Dialer(cfg)
	if err != nil {
		return nil, err
	}
	// The consumer's series exist from the start, at 0, so an alert on
	// them can fire for a process that never reaches its brokers.
	m.Connected.WithLabelValues(cfg.GroupID).Set(0)
	for _, t := range cfg.Topics {
		m.Consumed.WithLabelValues(t)
	}
	return &Group{cfg: cfg, dialer: d, stored: stored, m: m, log: log,
		pending: map[string]map[int]int64{}, lastSeen: map[string]map[int]int64{}}, nil
}

// Run consumes until ctx ends. Each generation: compute start offsets, start
// one reader per partition, and when the generation ends (rebalance or
// shutdown) drain the sink and commit before letting go of the partitions.
func (g *Group) Run(ctx context.Context, sink Sink) error {
	start := kafka.FirstOffset
	if g.cfg.StartOffset == "latest" {
		start = kafka.LastOffset
	}
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                    g.cfg.GroupID,
		Brokers:               g.cfg.Brokers,
		Dialer:                g.dialer,
		Topics:                g.cfg.Topics,
		StartOffset:           start,
		SessionTimeout:        g.cfg.SessionTimeout,
		RebalanceTimeout:      g.cfg.SessionTimeout,
		HeartbeatInterval:     3 * time.Second,
		WatchPartitionChanges: true,
		JoinGroupBackoff:      time.Second,
		ErrorLogger:           kafka.LoggerFunc(func(f string, a ...any) { g.log.Debug("kafka group", "detail", fmt.Sprintf(f, a...)) }),
	})
	if err != nil {
		return fmt.Errorf("kafka consumer group %s: %w", g.cfg.GroupID, err)
	}
	defer cg.Close()
	// Rejoining backs off exponentially with jitter (up to 30 s), so a
	// fleet that lost its brokers together does not knock in step.
	join := backoff.NewExponentialBackOff()
	join.InitialInterval, join.MaxInterval = 500*time.Millisecond, 30*time.Second
	for {
		gen, err := cg.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait := join.NextBackOff()
			g.mu.Lock()
			g.lastErr = err
			g.mu.Unlock()
			g.log.Warn("kafka consumer group: joining failed, retrying", "group", g.cfg.GroupID, "retry_in", wait, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			continue
		}
		join.Reset()
		if err := g.runGeneration(ctx, gen, sink); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

func (g *Group) runGeneration(ctx context.Context, gen *kafka.Generation, sink Sink) error {
	stored, err := g.storedWithRetry(ctx)
	if err != nil {
		return err
	}
	owned := map[string]map[int]bool{}
	g.mu.Lock()
	g.gen = gen
	g.owned = owned
	g.lastErr = nil
	g.mu.Unlock()
	g.m.Connected.WithLabelValues(g.cfg.GroupID).Set(1)

	g.announce(ctx, gen, sink)
	g.rebuildNew(ctx, gen)
	// Readers run outside gen.Start: kafka-go ends the generation (and closes
	// the connection commits use) as soon as any Start function returns, and
	// the readers must stop before the final drain and commit.
	rctx, stopReaders := context.WithCancel(ctx)
	defer stopReaders()
	var readers sync.WaitGroup
	var assigned []string
	for topic, parts := range gen.Assignments {
		owned[topic] = map[int]bool{}
		for _, p := range parts {
			owned[topic][p.ID] = true
			offset := p.Offset
			if s, ok := stored[topic][int32(p.ID)]; ok && (offset < 0 || offset <= s) {
				// ClickHouse already holds up to s: a crash hit between
				// insert and commit. Start after it.
				offset = s + 1
			}
			assigned = append(assigned, topic+"/"+strconv.Itoa(p.ID)+"@"+offsetName(offset))
			topic, part := topic, p.ID
			readers.Add(1)
			go func() { defer readers.Done(); g.readPartition(rctx, topic, part, offset, sink) }()
		}
	}
	g.log.Info("kafka partitions assigned", "generation", gen.ID, "partitions", assigned)
	// The generation ends on a rebalance or at shutdown; either way, hand
	// the partitions over clean: stop reading, store everything read,
	// commit, and only then let kafka-go move on.
	done := make(chan struct{})
	gen.Start(func(gctx context.Context) {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
			case <-ctx.Done():
			case <-t.C:
				g.commit()
				continue
			}
			stopReaders()
			readers.Wait()
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			if err := sink.Drain(dctx); err != nil {
				g.log.Warn("drain before handing partitions over failed; the next owner resumes from what ClickHouse holds", "err", err)
			}
			cancel()
			g.commit()
			g.mu.Lock()
			g.gen = nil
			g.mu.Unlock()
			g.m.Connected.WithLabelValues(g.cfg.GroupID).Set(0)
			return
		}
	})
	<-done
	return nil
}

// SetRebuilder names who rebuilds state for partitions this member takes over.
func (g *Group) SetRebuilder(r Rebuilder) { g.rebuild = r }

// announce tells a sink that wants to know which partitions it reads now
// and which it no longer reads.
func (g *Group) announce(ctx context.Context, gen *kafka.Generation, sink Sink) {
	a, ok := sink.(Assignment)
	if !ok {
		return
	}
	for topic, parts := range g.prev {
		var gone []int32
		for p := range parts {
			if !hasPartition(gen.Assignments[topic], p) {
				gone = append(gone, int32(p))
			}
		}
		if len(gone) > 0 {
			_ = a.Revoked(ctx, topic, gone)
		}
	}
	for topic, parts := range gen.Assignments {
		ids := make([]int32, 0, len(parts))
		for _, p := range parts {
			ids = append(ids, int32(p.ID))
		}
		_ = a.Assigned(ctx, topic, ids)
	}
}

func hasPartition(parts []kafka.PartitionAssignment, id int) bool {
	for _, p := range parts {
		if p.ID == id {
			return true
		}
	}
	return false
}

// rebuildNew replays history for partitions this member did not own in the
// previous generation. A failure is logged, not fatal: detection then starts
// cold for those partitions, which is what a consumer without a store does.
func (g *Group) rebuildNew(ctx context.Context, gen *kafka.Generation) {
	owned := map[string]map[int]bool{}
	for topic, parts := range gen.Assignments {
		owned[topic] = map[int]bool{}
		var fresh []int32
		for _, p := range parts {
			owned[topic][p.ID] = true
			if !g.prev[topic][p.ID] {
				fresh = append(fresh, int32(p.ID))
			}
		}
		if g.rebuild != nil && len(fresh) > 0 {
			if err := g.rebuild.Rebuild(ctx, topic, fresh); err != nil {
				g.log.Warn("rebuilding detector state failed; detection starts cold for these partitions", "topic", topic, "partitions", fresh, "err", err)
			}
		}
	}
	g.prev = owned
}

func offsetName(o int64) string {
	switch o {
	case kafka.FirstOffset:
		return "earliest"
	case kafka.LastOffset:
		return "latest"
	}
	return strconv.FormatInt(o, 10)
}

func (g *Group) storedWithRetry(ctx context.Context) (map[string]map[int32]int64, error) {
	if g.stored == nil {
		return nil, nil
	}
	b := backoff.NewExponentialBackOff() // with jitter
	b.InitialInterval, b.MaxInterval = 200*time.Millisecond, 15*time.Second
	for {
		s, err := g.stored(ctx, g.cfg.Topics)
		if err == nil {
			return s, nil
		}
		wait := b.NextBackOff()
		g.m.CHErrors.WithLabelValues("stored_offsets").Inc()
		g.log.Warn("reading stored offsets from ClickHouse failed, retrying", "err", err, "backoff", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		g.m.CHRetries.WithLabelValues("stored_offsets").Inc()
	}
}

func (g *Group) readPartition(ctx context.Context, topic string, part int, offset int64, sink Sink) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   g.cfg.Brokers,
		Topic:     topic,
		Partition: part,
		Dialer:    g.dialer,
		MinBytes:  1,
		MaxBytes:  1 << 20, // kafka-go's default; 16 MiB fetches cost the broker more than they save (bench)
		MaxWait:   g.cfg.MaxWait,
	})
	defer r.Close()
	if err := r.SetOffset(offset); err != nil {
		g.log.Error("kafka: cannot seek", "topic", topic, "partition", part, "offset", offset, "err", err)
		return
	}
	lag := g.m.Lag.WithLabelValues(topic, strconv.Itoa(part))
	consumed := g.m.Consumed.WithLabelValues(topic)
	if a, ok := sink.(Assignment); ok {
		// A partition with a backlog holds back the event-time watermark
		// until it delivers, however slow its first fetch.
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if n, err := r.ReadLag(lctx); err == nil {
			lag.Set(float64(n))
			_ = a.Backlog(ctx, topic, int32(part), n)
		}
		cancel()
	}
	// A chunk is at most 512 messages or 256 KiB: an OTLP batch carries
	// hundreds of events, and a chunk is what the event-time gate lets
	// through at once, so a chunk of 512 batches would carry minutes of a
	// low-rate partition past the others.
	const chunk, chunkBytes = 512, 256 << 10
	buf := make([]Message, 0, chunk)
	for ctx.Err() == nil {
		// Block for the first message, then take what is already buffered.
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				g.log.Warn("kafka fetch failed", "topic", topic, "partition", part, "err", err)
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		buf = append(buf[:0], toMessage(m))
		size := len(m.Value)
		// Then gather what arrives within a few milliseconds: one timer per
		// chunk rather than per message keeps the fetch cost per event low.
		cctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
		for len(buf) < chunk && size < chunkBytes {
			m, err := r.FetchMessage(cctx)
			if err != nil {
				break
			}
			buf = append(buf, toMessage(m))
			size += len(m.Value)
		}
		cancel()
		consumed.Add(float64(len(buf)))
		buf[len(buf)-1].Lag = r.Stats().Lag
		lag.Set(float64(buf[len(buf)-1].Lag))
		if err := sink.Deliver(ctx, buf); err != nil {
			return
		}
		buf = make([]Message, 0, chunk)
	}
}

func toMessage(m kafka.Message) Message {
	return Message{
		Src:     event.Source{Topic: m.Topic, Partition: int32(m.Partition), Offset: m.Offset},
		Key:     m.Key,
		Value:   m.Value,
		Time:    m.Time,
		Headers: m.Headers,
	}
}

// Joined reports whether the member is in a generation of its group now
// (false before the first join and while rejoining).
func (g *Group) Joined() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen != nil
}

// LastError is the last failure to join the group (nil once joined).
func (g *Group) LastError() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastErr
}

// GroupID is the consumer group this member joins.
func (g *Group) GroupID() string { return g.cfg.GroupID }

// Ack records that everything up to and including last is stored for a
// partition; the offset is committed with the next commit tick.
func (g *Group) Ack(topic string, partition int32, last int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending[topic] == nil {
		g.pending[topic] = map[int]int64{}
	}
	if cur, ok := g.pending[topic][int(partition)]; !ok || last+1 > cur {
		g.pending[topic][int(partition)] = last + 1
	}
}

// commit sends the acked offsets of partitions this member owns now.
func (g *Group) commit() {
	g.mu.Lock()
	gen := g.gen
	offsets := map[string]map[int]int64{}
	for topic, parts := range g.pending {
		for p, off := range parts {
			if g.owned[topic][p] {
				if offsets[topic] == nil {
					offsets[topic] = map[int]int64{}
				}
				offsets[topic][p] = off
			}
		}
	}
	g.pending = map[string]map[int]int64{}
	g.mu.Unlock()
	if gen == nil || len(offsets) == 0 {
		return
	}
	if err := gen.CommitOffsets(offsets); err != nil {
		// Not fatal: ClickHouse holds the data, and the next owner starts
		// past it. Keep the offsets for the next try.
		g.log.Warn("kafka offset commit failed; will retry", "err", err)
		g.mu.Lock()
		for topic, parts := range offsets {
			for p, off := range parts {
				if g.pending[topic] == nil {
					g.pending[topic] = map[int]int64{}
				}
				if off > g.pending[topic][p] {
					g.pending[topic][p] = off
				}
			}
		}
		g.mu.Unlock()
		return
	}
	for topic, parts := range offsets {
		for p, off := range parts {
			g.m.Committed.WithLabelValues(topic, strconv.Itoa(p)).Set(float64(off))
		}
	}
}
