package gen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest"
)

// ProduceConfig says where and how Produce sends events.
type ProduceConfig struct {
	Brokers []string
	Topic   string
	// Format is json (one event per message, the default), otlp_proto or
	// otlp_json (OTLP logs batches, as the Collector's Kafka exporter).
	Format string
	// Live paces events by the wall clock (see Run); otherwise events go as
	// fast as Kafka takes them, with simulated timestamps.
	Live bool
	// Clock paces live mode (nil: the wall clock). A ScaledClock runs
	// traffic time faster than the wall clock, as the demo does.
	Clock Clock
	// BatchSize and BatchTimeout are the kafka-go Writer's batching
	// (defaults 1000 messages, 20 ms).
	BatchSize    int
	BatchTimeout time.Duration
	// OTLPBatch is how many consecutive events one OTLP chunk covers
	// (default 200). Keyed, each message holds the chunk's events of one
	// session; OTLPUnkeyed sends the whole chunk as one unkeyed message,
	// the way the Collector does.
	OTLPBatch   int
	OTLPUnkeyed bool
	// MaxInFlight bounds messages handed to the async writer but not yet
	// acknowledged (default 200000), so a slow broker slows the generator
	// instead of growing memory.
	MaxInFlight int
	// CreateTopic lets the broker create a missing topic.
	CreateTopic bool
	// Progress, when set, is called about every ProgressEvery (default 1 s)
	// and once at the end.
	Progress      func(ProduceProgress)
	ProgressEvery time.Duration
}

// ProduceProgress counts what Produce did so far.
type ProduceProgress struct {
	Events   int64         `json:"events"`   // generated and handed to the writer
	Messages int64         `json:"messages"` // Kafka messages handed to the writer
	Bytes    int64         `json:"bytes"`    // message value bytes
	Acked    int64         `json:"acked"`    // messages the broker acknowledged
	Failed   int64         `json:"failed"`   // messages the writer gave up on
	SimTime  time.Time     `json:"sim_time"` // timestamp of the last event sent
	Elapsed  time.Duration `json:"elapsed"`
}

func (c ProduceConfig) withDefaults() ProduceConfig {
	if c.Format == "" {
		c.Format = "json"
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.BatchTimeout == 0 {
		c.BatchTimeout = 20 * time.Millisecond
	}
	if c.OTLPBatch == 0 {
		c.OTLPBatch = 200
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 200_000
	}
	if c.ProgressEvery == 0 {
		c.ProgressEvery = time.Second
	}
	return c
}

// Validate reports what is wrong with the config.
func (c ProduceConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case len(c.Brokers) == 0:
		return errors.New("produce: no brokers")
	case c.Topic == "":
		return errors.New("produce: no topic")
	case c.BatchSize < 1 || c.OTLPBatch < 1 || c.MaxInFlight < 1:
		return errors.New("produce: batch sizes and in-flight bound must be positive")
	}
	if _, err := encodingOf(c.Format); err != nil {
		return err
	}
	return nil
}

func encodingOf(name string) (ingest.Format, error) {
	f, err := ingest.ParseFormat(name)
	if err != nil || f == ingest.FormatAuto {
		return 0, fmt.Errorf("produce: format %q: want json, otlp_proto or otlp_json", name)
	}
	return f, nil
}

// messageWriter is the part of kafka.Writer Produce uses.
type messageWriter interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
	Close() error
}

// Produce sends every event of g to Kafka with an async kafka-go Writer,
// keyed by session_id (else token_id) and partitioned as the Java client
// does (murmur2), and returns the final counts. It fails when the writer
// could not deliver some messages.
func Produce(ctx context.Context, g *Generator, cfg ProduceConfig, log *slog.Logger) (ProduceProgress, error) {
	if err := cfg.Validate(); err != nil {
		return ProduceProgress{}, err
	}
	cfg = cfg.withDefaults()
	p := &producer{cfg: cfg, log: log}
	w := &kafka.Writer{
		Addr:                   kafka.TCP(cfg.Brokers...),
		Topic:                  cfg.Topic,
		Balancer:               kafka.Murmur2Balancer{},
		BatchSize:              cfg.BatchSize,
		BatchBytes:             16 << 20,
		BatchTimeout:           cfg.BatchTimeout,
		RequiredAcks:           kafka.RequireOne,
		Async:                  true,
		Completion:             p.complete,
		AllowAutoTopicCreation: cfg.CreateTopic,
	}
	p.w = w
	return p.run(ctx, g)
}

type producer struct {
	cfg    ProduceConfig
	log    *slog.Logger
	w      messageWriter
	format ingest.Format

	acked, failed atomic.Int64
	errMu         sync.Mutex
	firstErr      error

	progress ProduceProgress
	start    time.Time
	lastTick time.Time
}

// complete is the writer's completion callback (it runs on the writer's
// goroutines).
func (p *producer) complete(msgs []kafka.Message, err error) {
	if err == nil {
		p.acked.Add(int64(len(msgs)))
		return
	}
	p.failed.Add(int64(len(msgs)))
	p.errMu.Lock()
	if p.firstErr == nil {
		p.firstErr = err
	}
	p.errMu.Unlock()
}

func (p *producer) run(ctx context.Context, g *Generator) (ProduceProgress, error) {
	p.format, _ = encodingOf(p.cfg.Format)
	p.start = time.Now()
	p.lastTick = p.start
	send := p.sendJSON
	if p.format != ingest.FormatJSON {
		send = p.sendOTLP
	}
	var err error
	if p.cfg.Live {
		clock := p.cfg.Clock
		if clock == nil {
			clock = WallClock{}
		}
		err = Run(ctx, g, clock, func(evs []event.Event) error { return send(ctx, evs) })
	} else {
		batch := make([]event.Event, 0, p.cfg.OTLPBatch)
		for b := g.Next(batch); b != nil && err == nil; b = g.Next(batch) {
			err = send(ctx, b)
		}
	}
	closeErr := p.w.Close() // flushes the async batches and waits for completions
	p.report()
	if p.log != nil {
		p.log.Info("produce done", "topic", p.cfg.Topic, "format", p.cfg.Format, "events", p.progress.Events,
			"messages", p.progress.Messages, "acked", p.progress.Acked, "failed", p.progress.Failed, "elapsed", p.progress.Elapsed)
	}
	if err != nil {
		return p.progress, fmt.Errorf("produce to %s: %w", p.cfg.Topic, err)
	}
	if closeErr != nil {
		return p.progress, fmt.Errorf("produce to %s: close writer: %w", p.cfg.Topic, closeErr)
	}
	if n := p.progress.Failed; n > 0 {
		p.errMu.Lock()
		defer p.errMu.Unlock()
		return p.progress, fmt.Errorf("produce to %s: %d of %d messages failed: %w", p.cfg.Topic, n, p.progress.Messages, p.firstErr)
	}
	return p.progress, nil
}

// sendJSON sends one message per event. Keys and values share one buffer
// per call: the writer keeps the slices until it completes, so they are
// never reused, and growing the buffer leaves earlier slices intact.
func (p *producer) sendJSON(ctx context.Context, evs []event.Event) error {
	buf := make([]byte, 0, len(evs)*480)
	msgs := make([]kafka.Message, len(evs))
	for i := range evs {
		e := &evs[i]
		k := len(buf)
		buf = append(buf, e.PartitionKey()...)
		v := len(buf)
		buf = ingest.AppendJSON(buf, e)
		msgs[i] = kafka.Message{Key: buf[k:v:v], Value: buf[v:len(buf):len(buf)]}
		p.progress.Bytes += int64(len(buf) - v)
	}
	return p.write(ctx, evs, msgs)
}

// sendOTLP sends OTLP logs batches: per session within the chunk (keyed),
// or the whole chunk unkeyed.
func (p *producer) sendOTLP(ctx context.Context, evs []event.Event) error {
	var msgs []kafka.Message
	add := func(key []byte, group []event.Event) error {
		v, err := ingest.EncodeOTLP(group, p.format)
		if err != nil {
			return fmt.Errorf("encode %d events as %s: %w", len(group), p.format, err)
		}
		p.progress.Bytes += int64(len(v))
		msgs = append(msgs, kafka.Message{Key: key, Value: v})
		return nil
	}
	if p.cfg.OTLPUnkeyed {
		if err := add(nil, evs); err != nil {
			return err
		}
		return p.write(ctx, evs, msgs)
	}
	var order []string
	groups := map[string][]event.Event{}
	for _, e := range evs {
		k := e.PartitionKey()
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], e)
	}
	for _, k := range order {
		if err := add([]byte(k), groups[k]); err != nil {
			return err
		}
	}
	return p.write(ctx, evs, msgs)
}

func (p *producer) write(ctx context.Context, evs []event.Event, msgs []kafka.Message) error {
	for p.progress.Messages-p.acked.Load()-p.failed.Load() > int64(p.cfg.MaxInFlight) {
		if err := (WallClock{}).Sleep(ctx, time.Millisecond); err != nil {
			return err
		}
	}
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("write %d messages: %w", len(msgs), err)
	}
	p.progress.Events += int64(len(evs))
	p.progress.Messages += int64(len(msgs))
	p.progress.SimTime = evs[len(evs)-1].TS
	if now := time.Now(); p.cfg.Progress != nil && now.Sub(p.lastTick) >= p.cfg.ProgressEvery {
		p.lastTick = now
		p.report()
	}
	return nil
}

func (p *producer) report() {
	p.progress.Acked, p.progress.Failed = p.acked.Load(), p.failed.Load()
	p.progress.Elapsed = time.Since(p.start)
	if p.cfg.Progress != nil {
		p.cfg.Progress(p.progress)
	}
}
