package rekey

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/sli"
)

// Publisher writes accepted events to the keyed topic, in the order they
// are handed in, with acks=all. One goroutine writes, synchronously, and
// retries a failed write until it succeeds, before the next: each keyed
// partition then receives a source partition's events in source order,
// which the copy filter relies on (an out-of-order retry would look like a
// redelivered copy). Wait says when everything handed in before a Mark is
// acknowledged, so the raw offsets are committed only after that.
type Publisher struct {
	w    *kafka.Writer
	part *Partitioner
	log  *slog.Logger

	in chan []kafka.Message

	mu      sync.Mutex
	handed  uint64 // messages handed in
	written uint64 // messages acknowledged, in order
	changed chan struct{}
	done    chan struct{}
	stop    chan struct{}

	pending []kafka.Message // being filled by Publish (the caller's goroutine)
	scratch []int32
}

// PublisherConfig names the keyed topic.
type PublisherConfig struct {
	Brokers    []string
	Topic      string
	Partitions int // of the keyed topic
	Transport  *kafka.Transport
	// BatchSize is how many messages go in one write (default 2000).
	BatchSize int
}

// NewPublisher starts a publisher; Close stops it.
func NewPublisher(cfg PublisherConfig, log *slog.Logger) (*Publisher, error) {
	if cfg.Topic == "" || cfg.Partitions <= 0 || len(cfg.Brokers) == 0 {
		return nil, errors.New("rekey: the keyed topic needs brokers, a name and its partition count")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 2000
	}
	w := &kafka.Writer{
		Addr:         kafka.TCP(cfg.Brokers...),
		Topic:        cfg.Topic,
		RequiredAcks: kafka.RequireAll,
		BatchSize:    cfg.BatchSize,
		BatchTimeout: 2 * time.Millisecond,
		Compression:  kafka.Lz4,
		// The partition is chosen by RouteOf and Partitioner, set on the
		// message before it is handed to the writer.
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition }),
	}
	if cfg.Transport != nil {
		w.Transport = cfg.Transport
	}
	p := &Publisher{w: w, part: NewPartitioner(cfg.Partitions), log: log,
		in: make(chan []kafka.Message, 64), changed: make(chan struct{}), done: make(chan struct{}), stop: make(chan struct{})}
	go p.run()
	return p, nil
}

// Publish hands one accepted event in: the record-th accepted event of its
// message (e.Src). It is buffered until Mark.
func (p *Publisher) Publish(e *event.Event, record int) {
	p.scratch = p.part.Partitions(RouteOf(e), p.scratch[:0])
	value := ingest.AppendJSON(nil, e)
	headers := Headers(SourceOfEvent(e.Src, record))
	for _, part := range p.scratch {
		p.pending = append(p.pending, kafka.Message{Partition: int(part), Value: value, Headers: headers})
	}
	if facts, ok := TokenFactsOf(e); ok {
		if tp := p.part.TokenPartition(facts.Token); !slices.Contains(p.scratch, tp) {
			v, _ := json.Marshal(facts) // plain strings and times: cannot fail
			p.pending = append(p.pending, kafka.Message{Partition: int(tp), Value: v,
				Headers: []kafka.Header{{Key: HeaderKind, Value: []byte(KindTokenFacts)}}})
		}
	}
}

// HeaderKind marks a keyed record that is not an event; its value names
// what it is (KindRevocationPartial).
const (
	HeaderKind            = "tw-kind"
	KindRevocationPartial = "revocation-partial"
	KindTokenFacts        = "token-facts"
	KindAggregatePartial  = "aggregate-partial"
)

// PublishAggregate hands in one minute's partial aggregates of one keyed
// partition (detect.Partial) for dest, the partition whose owner merges
// them; Mark sends them. One member publishes a partition's partials in
// minute order, and they reach each dest in that order.
func (p *Publisher) PublishAggregate(dest int32, x any) error {
	value, err := json.Marshal(x)
	if err != nil {
		return err
	}
	p.pending = append(p.pending, kafka.Message{Partition: int(dest), Value: value,
		Headers: []kafka.Header{{Key: HeaderKind, Value: []byte(KindAggregatePartial)}}})
	return nil
}

// PublishPartial hands in one partial result of a broadcast revoke, for the
// partition whose owner merges the revoke's partials, and sends it at once
// (partials are rare: one per owned partition per broadcast revoke).
func (p *Publisher) PublishPartial(x sli.RevocationPartial) error {
	value, err := json.Marshal(x)
	if err != nil {
		return err
	}
	p.pending = append(p.pending, kafka.Message{Partition: int(p.part.RevokeOwner(x.Revoke.ID)), Value: value,
		Headers: []kafka.Header{{Key: HeaderKind, Value: []byte(KindRevocationPartial)}}})
	p.Mark()
	return nil
}

// Mark sends what was published since the last Mark and returns a mark to
// Wait on. It blocks while the writer is far behind (back-pressure).
func (p *Publisher) Mark() uint64 {
	p.mu.Lock()
	p.handed += uint64(len(p.pending))
	mark := p.handed
	p.mu.Unlock()
	if len(p.pending) > 0 {
		p.in <- p.pending
		p.pending = nil
	}
	return mark
}

// Wait returns once every message handed in before mark is acknowledged
// by the brokers (acks=all), or ctx ends.
func (p *Publisher) Wait(ctx context.Context, mark uint64) error {
	for {
		p.mu.Lock()
		written, ch := p.written, p.changed
		p.mu.Unlock()
		if written >= mark {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *Publisher) run() {
	defer close(p.done)
	for msgs := range p.in {
		b := backoff.NewExponentialBackOff()
		b.InitialInterval, b.MaxInterval = 100*time.Millisecond, 10*time.Second
		for {
			err := p.w.WriteMessages(context.Background(), msgs...)
			if err == nil {
				break
			}
			wait := b.NextBackOff()
			p.log.Warn("writing to the keyed topic failed, retrying; raw offsets stay uncommitted until it succeeds",
				"topic", p.w.Topic, "messages", len(msgs), "retry_in", wait, "err", err)
			select {
			case <-time.After(wait):
				continue
			case <-p.stop:
				// Stopping: what was not written is not acknowledged, so
				// its raw offsets stay uncommitted and are read again.
				p.log.Error("keyed topic unreachable at shutdown; the unwritten events will be read again", "messages", len(msgs))
			}
			for range p.in { // drain without writing
			}
			return
		}
		p.mu.Lock()
		p.written += uint64(len(msgs))
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
}

// Close writes what was marked and stops; a write still failing is given
// up (its events' raw offsets were never acknowledged).
func (p *Publisher) Close() error {
	close(p.stop)
	close(p.in)
	<-p.done
	return p.w.Close()
}
