// Package pipeline joins the stages: Kafka messages in, decoded and redacted
// events merged across partitions by event time (package eventtime) through
// the SLIs and detectors, batches into ClickHouse, and only then offsets back
// to Kafka. One goroutine processes (so the stateful stages
// need no locks), one inserts; a bounded queue between them is the
// back-pressure that stops the consumer when ClickHouse is slow or down.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/eventtime"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/metrics"
	"github.com/tokenwatch/tokenwatch/rekey"
	"github.com/tokenwatch/tokenwatch/store"
)

// Decoder turns one message into events; a bad record is an error that
// names the message and the field, and its good siblings still come back.
type Decoder interface {
	Decode(src event.Source, value []byte, out []event.Event) ([]event.Event, []error)
}

// MessageDecoder is a Decoder that reads the whole message, headers
// included (the keyed topic's records carry their source there).
type MessageDecoder interface {
	DecodeMessage(m *consumer.Message, out []event.Event) ([]event.Event, []error)
}

// SourcePartitioner is a MessageDecoder whose messages carry events of
// other partitions (the keyed topic carries each event's raw source): the
// event-time merge then keeps a watermark per source partition, read from
// the message, since each source partition's events arrive in its own
// order whichever keyed partition carries them. The consumer's own
// partitions are not tracked by the merge then.
type SourcePartitioner interface {
	MergePartition(m *consumer.Message) (eventtime.Partition, bool)
}

// Publisher hands every accepted event on to the keyed topic (the fleet's
// ingest stage, package rekey). A batch's raw offsets are acknowledged only
// once Wait says everything published before its Mark is written.
type Publisher interface {
	Publish(e *event.Event, record int)
	Mark() uint64
	Wait(ctx context.Context, mark uint64) error
}

// Dedup recognises a copy of an event already accepted (a producer retry,
// a redelivery upstream): it is neither stored nor observed again.
type Dedup interface {
	Seen(e *event.Event) bool
}

// Guard replaces leaked credentials in place and names the fields it changed.
type Guard interface {
	Apply(e *event.Event) []string
}

// Observer sees every accepted event in event-time order, merged across the
// partitions being read (the SLIs, the detectors). Tick advances their
// event-time clock to the watermark. Replay feeds a stored event only to
// rebuild state: nothing it produces is counted or sent again. Flush ends
// the input (shutdown): what is pending is reported with what is known.
type Observer interface {
	Observe(e *event.Event)
	Replay(e *event.Event)
	Tick(now time.Time)
	Flush()
}

// LateCounter is an observer that counts the events it could no longer take
// into account, by stage (they are still stored and counted per minute).
type LateCounter interface {
	LateEvents() map[string]int64
}

// Replayer reads stored events back, to rebuild state for partitions this
// member takes over.
type Replayer interface {
	// StoredEventTime is, per partition, the event time its stored
	// events reached (absent: nothing stored).
	StoredEventTime(ctx context.Context, topic string, partitions []int32) (map[int32]time.Time, error)
	ReplayEvents(ctx context.Context, topic string, partitions []int32, since time.Time, fn func(*event.Event)) (int, error)
}

// BoundedReplayer is an optional part of a Replayer: where a replay of at
// most max events from since must start (since, or later when the window
// holds more), and how many the window holds.
type BoundedReplayer interface {
	ReplayStart(ctx context.Context, topic string, partitions []int32, since time.Time, max int) (time.Time, int, error)
}

// Muter is an optional part of a MessageDecoder whose records carry more
// than events (the fleet's partial results): muted while a rebuild decodes
// history.
type Muter interface{ Mute(on bool) }

// MessageReplayer reads back the records a consumer group processed on
// partitions before its committed offsets (the fleet's analyze stage
// rebuilds from the keyed topic, rekey.Replayer).
type MessageReplayer interface {
	ReplayMessages(ctx context.Context, topic string, partitions []int32, fn func(*consumer.Message)) (int, error)
}

// Store is where batches go.
type Store interface {
	InsertEvents(ctx context.Context, b *store.Batch) error
	InsertFindings(ctx context.Context, fs []finding.Finding) error
	InsertRevocations(ctx context.Context, rs []store.Revocation) error
}

// Acker learns which offsets are stored (the consumer commits them).
type Acker interface {
	Ack(topic string, partition int32, last int64)
}

// Notifier is told of every change of a finding (Alertmanager); it must not block.
type Notifier interface {
	Notify(f finding.Finding)
}

// Forwarder writes a message to a side topic (dead letters, quarantine).
type Forwarder interface {
	Forward(ctx context.Context, m consumer.Message, why string) error
}

// Config tunes batching.
type Config struct {
	BatchRows         int
	BatchInterval     time.Duration
	MaxPendingBatches int
	RetryInitial      time.Duration
	RetryMax          time.Duration
	// LabelCap bounds the emitter label of redaction violations.
	LabelCap int
	// RebuildWindow is how much stored history is replayed into the
	// detectors when partitions are taken over (0: no rebuild).
	RebuildWindow time.Duration
	// RebuildMaxEvents bounds one rebuild's replay: the latest this many
	// events of the window (0: the whole window).
	RebuildMaxEvents int
	// ShutdownGrace bounds how long a stop waits for ClickHouse to take the
	// last batch (default 2m).
	ShutdownGrace time.Duration
	// EventTime tunes the merge of the partitions by event time.
	EventTime eventtime.Config
	// KeyedPartitions is the fleet's keyed topic's partition count in the
	// analyze stage (0: not the fleet's analyze stage).
	KeyedPartitions int
	// MaxEventAhead and MaxEventAge bound the ts of an event accepted from
	// a raw topic, against the wall clock (0: no bound; a ts before 1900,
	// which the events table cannot hold, is always rejected); Format
	// names the raw topics' format in those rejections.
	MaxEventAhead, MaxEventAge time.Duration
	Format                     ingest.Format
	// MaxMessageBytes and MaxExtraBytes bound a raw message and an event's
	// extra fields (0: no bound).
	MaxMessageBytes, MaxExtraBytes int
}

// tooLarge rejects a raw message over Config.MaxMessageBytes, before it is
// decoded.
func (p *Pipeline) tooLarge(m *consumer.Message) error {
	if p.srcParts != nil || p.cfg.MaxMessageBytes <= 0 || len(m.Value) <= p.cfg.MaxMessageBytes {
		return nil
	}
	return &ingest.Error{Src: m.Src, Format: p.cfg.Format, Record: -1, Reason: ingest.ReasonTooLarge,
		Problem:  fmt.Sprintf("the message is %d bytes", len(m.Value)),
		Expected: fmt.Sprintf("at most pipeline.max_message_bytes (%d)", p.cfg.MaxMessageBytes)}
}

// extraTooLarge rejects an event whose fields outside the contract take
// more than Config.MaxExtraBytes.
func (p *Pipeline) extraTooLarge(m *consumer.Message, record int, e *event.Event) error {
	if p.srcParts != nil || p.cfg.MaxExtraBytes <= 0 || len(e.Extra) == 0 {
		return nil
	}
	n := 0
	for k, v := range e.Extra {
		n += len(k) + len(v)
	}
	if n <= p.cfg.MaxExtraBytes {
		return nil
	}
	return p.recordError(m, record, "extra", ingest.ReasonTooLarge,
		fmt.Sprintf("%d fields outside the contract take %d bytes", len(e.Extra), n),
		fmt.Sprintf("at most pipeline.max_extra_bytes (%d)", p.cfg.MaxExtraBytes))
}

// recordError is the rejection of one decoded event of m (the record-th of
// an OTLP batch; a JSON message holds one).
func (p *Pipeline) recordError(m *consumer.Message, record int, field string, reason ingest.Reason, problem, want string) error {
	if p.cfg.Format != ingest.FormatOTLPProto && p.cfg.Format != ingest.FormatOTLPJSON {
		record = -1
	}
	return &ingest.Error{Src: m.Src, Format: p.cfg.Format, Record: record, Field: field, Reason: reason,
		Problem: problem, Expected: want}
}

// oldestStorable is the earliest ts the events table's DateTime64 holds.
var oldestStorable = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)

// implausibleTime rejects an event whose ts lies outside the plausible
// window (Config.MaxEventAhead, MaxEventAge): stored as sent it would sit
// in the future of every dashboard, or be dropped by the retention at once;
// stored otherwise it would be altered. The analyze stage's events were
// checked by the ingest stage.
func (p *Pipeline) implausibleTime(m *consumer.Message, record int, e *event.Event, now time.Time) error {
	if p.srcParts != nil {
		return nil
	}
	var problem, want string
	switch {
	case e.TS.Before(oldestStorable):
		problem, want = "ts "+e.TS.UTC().Format(time.RFC3339)+" is before 1900", "an RFC 3339 time of the event"
	case p.cfg.MaxEventAhead > 0 && e.TS.After(now.Add(p.cfg.MaxEventAhead)):
		problem = "ts " + e.TS.UTC().Format(time.RFC3339) + " is " + e.TS.Sub(now).Round(time.Second).String() + " ahead of this host's clock"
		want = "at most pipeline.max_event_ahead (" + p.cfg.MaxEventAhead.String() + ") ahead"
	case p.cfg.MaxEventAge > 0 && e.TS.Before(now.Add(-p.cfg.MaxEventAge)):
		problem = "ts " + e.TS.UTC().Format(time.RFC3339) + " is older than the events table keeps"
		want = "at most pipeline.max_event_age (" + p.cfg.MaxEventAge.String() + ") old"
	default:
		return nil
	}
	return p.recordError(m, record, "ts", ingest.ReasonInvalidValue, problem, want)
}

// Options are the pipeline's collaborators; nil ones are off.
type Options struct {
	Decoder    Decoder
	Dedup      Dedup
	Publisher  Publisher
	Guard      Guard
	Observers  []Observer
	Store      Store
	Acker      Acker
	Notifier   Notifier
	DeadLetter Forwarder
	Quarantine Forwarder
	Replayer   Replayer
	// MessageReplayer, with a MessageDecoder, rebuilds from the records
	// themselves in place of Replayer.
	MessageReplayer MessageReplayer
	// OnAssigned, with a SourcePartitioner (the fleet's analyze stage),
	// hears which partitions this member reads now, on the processing
	// goroutine.
	OnAssigned func(partitions []int32)
	// Upstream, with a SourcePartitioner (the fleet's analyze stage), tells
	// what lies before this stage (rekey.UpstreamLag), polled every
	// upstreamPoll: a merge stream whose raw partition the ingest group has
	// not caught up with, or whose keyed partition's reader here is stalled
	// behind the partition's end, holds the watermark while silent, up to
	// the merge's LaggingTimeout.
	Upstream func(ctx context.Context) (Upstream, error)
	// OnLag, with a SourcePartitioner, hears how far behind its end each
	// partition's reader is: as it starts, then after each chunk.
	OnLag   func(partition int32, lag int64)
	Metrics *metrics.Pipeline
	Log     *slog.Logger
}

// Stats are the running totals the demo summary prints.
type Stats struct {
	Consumed            int64            `json:"consumed"`
	Accepted            int64            `json:"accepted"`
	Stored              int64            `json:"stored"`
	Rejected            int64            `json:"rejected"`
	RejectedByReason    map[string]int64 `json:"rejected_by_reason"`
	RedactionViolations int64            `json:"redaction_violations"`
	FindingsStored      int64            `json:"findings_stored"`
	InsertRetries       int64            `json:"insert_retries"`
}

// Pipeline is the running join of the stages.
type Pipeline struct {
	cfg Config
	o   Options

	stop    <-chan struct{} // Run's ctx.Done: unblocks a flush stuck on a full queue
	stuck   []*item
	in      chan delivery
	drains  chan chan error
	calls   chan func()
	work    chan *item
	emitter *labelCap

	// owned by the processing goroutine
	batch      *store.Batch
	findings   map[string]finding.Finding
	triggers   map[string]time.Time
	revs       []store.Revocation
	decoded    []event.Event
	merge      *eventtime.Merger
	srcParts   SourcePartitioner // nil: merge by the consumed partitions
	msgDec     MessageDecoder    // nil: the decoder reads values only
	keyedTopic string            // the topic a SourcePartitioner's messages come from
	ownedKeyed []int32           // the keyed partitions this member reads
	// catchUp holds the keyed partitions taken with a backlog, until their
	// reader has delivered up to the end they had (-1: not known yet).
	catchUp map[int32]int64
	rawLag  map[string]map[int32]int64 // the ingest group's lag, last read
	// delivered is, per keyed partition this analyze member reads, the
	// offset after the last one delivered; polled is what it was at the
	// last Upstream poll.
	delivered, polled map[int32]int64
	trigger           time.Time // append time of the event being observed
	batchStart        time.Time
	lateSeen          map[string]int64 // stage late counts already exported
	forced            int64            // merge's forced releases already exported

	consumed, accepted, stored, rejected, violations, findingsStored, retries atomic.Int64
	reasonsMu                                                                 sync.Mutex
	reasons                                                                   map[string]int64
	latencies                                                                 []time.Duration
	logLimit                                                                  rateLimit
	unlogged                                                                  unlogged
}

// maxLatencySamples bounds the finding-latency samples kept for the summary.
const maxLatencySamples = 100_000

type item struct {
	batch    *store.Batch
	findings []finding.Finding
	triggers []time.Time
	revs     []store.Revocation
	barrier  chan error
	mark     uint64 // the publisher's mark at this batch's end
}

// New builds a pipeline; Run starts it.
func New(cfg Config, o Options) (*Pipeline, error) {
	if o.Decoder == nil || o.Store == nil || o.Metrics == nil {
		return nil, errors.New("pipeline: decoder, store and metrics are required")
	}
	if cfg.BatchRows <= 0 || cfg.BatchInterval <= 0 || cfg.MaxPendingBatches <= 0 {
		return nil, errors.New("pipeline: batch_rows, batch_interval and max_pending_batches must be positive")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 2 * time.Minute
	}
	if cfg.EventTime.Lateness <= 0 {
		cfg.EventTime.Lateness = 30 * time.Second
	}
	p := &Pipeline{
		cfg: cfg, o: o,
		in:       make(chan delivery, 16),
		drains:   make(chan chan error),
		calls:    make(chan func()),
		work:     make(chan *item, cfg.MaxPendingBatches),
		emitter:  newLabelCap(max(cfg.LabelCap, 1)),
		batch:    store.NewBatch(cfg.BatchRows),
		findings: map[string]finding.Finding{},
		triggers: map[string]time.Time{},
		reasons:  map[string]int64{},
		lateSeen: map[string]int64{},
	}
	p.srcParts, _ = o.Decoder.(SourcePartitioner)
	p.delivered, p.polled = map[int32]int64{}, map[int32]int64{}
	p.catchUp = map[int32]int64{}
	p.msgDec, _ = o.Decoder.(MessageDecoder)
	cfg.EventTime.Discover = p.srcParts != nil
	p.merge = eventtime.New(cfg.EventTime, p.observe)
	if cfg.KeyedPartitions > 0 && o.Metrics != nil {
		for _, k := range aggregatedKinds {
			o.Metrics.PartialView.WithLabelValues(k).Set(0)
		}
		// Not on the aggregates yet (#26, item 3): a service accepting
		// other audiences is judged on this member's keyed partitions.
		o.Metrics.PartialView.WithLabelValues(partialAudienceKind).Set(1)
		o.Log.Warn("audience_misuse (a service accepting tokens of other audiences) is judged per analyze member on the events of its keyed partitions: each member that sees such a validation opens the service's finding (one id, one row in the store) with its own share of the count; the per-token shape is exact",
			"kind", partialAudienceKind)
	}
	return p, nil
}

// observe hands one event, released by the merge in event-time order, to
// every observer (a replayed one only to rebuild their state).
func (p *Pipeline) observe(src eventtime.Partition, e *event.Event, appended time.Time, late, replay bool) {
	if wasCopy := e.Src.Copy; p.srcParts != nil && p.o.Dedup != nil && (e.Src.Fanned || !wasCopy) && p.contentCopy(e) {
		// The fleet's analyze stage: a copy from another source (a
		// producer's retry onto another raw partition, which another
		// ingest member read) reaches the same keyed partitions. The
		// filter runs here, in event-time order: before the merge, the
		// keyed partitions and the ingest members behind them are read
		// minutes apart, and a window over arrival order would forget a
		// slow stream's events as soon as it saw them.
		if !replay && !wasCopy { // a retried fanned-out event counts once, at its first keyed copy
			p.o.Metrics.Duplicates.WithLabelValues(p.keyedTopic).Inc()
		}
		return
	}
	if replay {
		for _, o := range p.o.Observers {
			o.Replay(e)
		}
		return
	}
	if late {
		p.o.Metrics.Late.WithLabelValues("merge").Inc()
		if p.logLimit.allow(time.Now()) {
			p.o.Log.Warn("event arrived behind the merged partitions' watermark by more than the lateness; stored and counted per minute, but windows already closed do not see it",
				"topic", src.Topic, "partition", src.Partition, "ts", e.TS, "watermark", p.merge.Watermark(), "lateness", p.cfg.EventTime.Lateness)
		}
	}
	p.trigger = appended
	for _, o := range p.o.Observers {
		o.Observe(e)
	}
	p.trigger = time.Time{}
}

// contentCopy applies the content filter in the analyze stage. An event
// fanned out to several keyed partitions (an issue, a broadcast revoke) is
// a copy only when its content was seen on the same keyed partition (a
// retry's copy, even one the decoder marked Copy as a fan-out copy): seen
// on another one, it is that partition's share, which its revocation
// tracker needs, so it is marked Copy (the detectors skip it) and kept.
// Dropping it lost a broadcast revoke at a partition whenever the
// decoder's fan-out window no longer held its first copy (a keyed
// partition read minutes after the others, or a member that restarted),
// and with it that partition's residual acceptances.
func (p *Pipeline) contentCopy(e *event.Event) bool {
	if !e.Src.Fanned {
		return p.o.Dedup.Seen(e)
	}
	here := *e
	here.RequestID += "\x00keyed " + strconv.Itoa(int(e.Src.Partition))
	if p.o.Dedup.Seen(&here) {
		return true // a retry's copy on this very keyed partition
	}
	if p.o.Dedup.Seen(e) {
		e.Src.Copy = true
	}
	return false
}

// SetAcker names who learns of stored offsets (the consumer group, built
// after the pipeline because it delivers to it).
func (p *Pipeline) SetAcker(a Acker) { p.o.Acker = a }

// SetNotifier names who hears of every finding change (Alertmanager).
func (p *Pipeline) SetNotifier(n Notifier) { p.o.Notifier = n }

// Deliver hands consumed messages in; it blocks while the pipeline is full,
// and while the messages' partition runs ahead of the others in event time
// with the merge buffer filling up (the partition's back-pressure).
func (p *Pipeline) Deliver(ctx context.Context, msgs []consumer.Message) error {
	if len(msgs) > 0 {
		src := eventtime.Partition{Topic: msgs[0].Src.Topic, Partition: msgs[0].Src.Partition}
		for ch := p.merge.Gate(src); ch != nil; ch = p.merge.Gate(src) {
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second): // ask again: the partitions holding it back may have gone idle
			}
		}
	}
	d := delivery{msgs: msgs}
	if p.cfg.EventTime.MaxAhead > 0 {
		// The gate judges a partition by what the merge has seen: a
		// partition may have one chunk on its way, not a queue of them,
		// or a partition read faster runs minutes ahead before the gate
		// sees it (16 queued chunks are 8,000 events).
		d.done = make(chan struct{})
	}
	select {
	case p.in <- d:
	case <-ctx.Done():
		return ctx.Err()
	}
	if d.done == nil {
		return nil
	}
	select {
	case <-d.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// delivery is one chunk of a partition's messages handed to the processing
// goroutine; done, when set, is closed once they are processed.
type delivery struct {
	msgs []consumer.Message
	done chan struct{}
}

// take processes a delivery.
func (p *Pipeline) take(d delivery) {
	p.process(d.msgs)
	if d.done != nil {
		close(d.done)
	}
}

// Assigned tells the event-time merge which partitions this member now
// reads, before their readers start: each holds the watermark back until it
// delivers or goes idle, so its first events are not late.
func (p *Pipeline) Assigned(ctx context.Context, topic string, partitions []int32) error {
	if p.srcParts != nil {
		return p.onLoop(ctx, func() {
			p.keyedTopic = topic // read by observe, on this goroutine
			p.ownedKeyed = slices.Clone(partitions)
			elsewhere := func(k int32, _ int64) bool { return !slices.Contains(partitions, k) } // read elsewhere now
			maps.DeleteFunc(p.catchUp, elsewhere)
			maps.DeleteFunc(p.delivered, elsewhere)
			if p.o.OnAssigned != nil {
				p.o.OnAssigned(partitions)
			}
		})
	}
	return p.onLoop(ctx, func() {
		now := time.Now()
		for _, part := range partitions {
			p.merge.Assign(eventtime.Partition{Topic: topic, Partition: part}, now)
		}
	})
}

// aggregatedKinds keep state per service, kid, client or subject, which no
// key of the fleet owns: they judge every keyed partition's partial
// aggregates at their owners (docs/fleet.md, "Aggregates"), so
// tokenwatch_detectors_partial_view reads 0 for each in the analyze stage.
var aggregatedKinds = []string{"clock_skew", "key_rotation_break", "refresh_anomaly_rate"}

// partialAudienceKind is the detector still judged on a member's share.
const partialAudienceKind = "audience_misuse_accepts"

// Backlog tells the merge a partition's reader starts with a backlog: it
// holds the watermark back until it delivers.
func (p *Pipeline) Backlog(ctx context.Context, topic string, partition int32, lag int64) error {
	if p.srcParts != nil {
		return p.onLoop(ctx, func() {
			if p.o.OnLag != nil {
				p.o.OnLag(partition, lag)
			}
			if lag <= 0 {
				delete(p.catchUp, partition)
				return
			}
			// Until its reader has read what the partition held when it
			// was taken (its end, learnt at the next upstream poll), every
			// raw partition's stream through it may still deliver, however
			// far behind the streams already heard: each holds the
			// watermark back (up to LaggingTimeout).
			if _, ok := p.catchUp[partition]; !ok {
				p.catchUp[partition] = -1
			}
			// Merger.Backlog makes a stream not heard yet known, as Expect does.
			for topic, parts := range p.rawLag {
				for rp := range parts {
					p.merge.Backlog(rekey.Stream(topic, rp, p.keyedTopic, partition), lag, time.Now())
				}
			}
		})
	}
	return p.onLoop(ctx, func() {
		p.merge.Backlog(eventtime.Partition{Topic: topic, Partition: partition}, lag, time.Now())
	})
}

// Revoked tells the merge these partitions are read elsewhere now.
func (p *Pipeline) Revoked(ctx context.Context, topic string, partitions []int32) error {
	if p.srcParts != nil {
		return nil
	}
	return p.onLoop(ctx, func() {
		for _, part := range partitions {
			p.merge.Revoke(eventtime.Partition{Topic: topic, Partition: part})
		}
	})
}

// onLoop runs fn on the processing goroutine.
func (p *Pipeline) onLoop(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case p.calls <- func() { fn(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Rebuild replays the stored recent history of partitions this member just
// took over into the stateful stages, so a replay or a slow revocation that
// began under the previous owner is still seen. It runs on the processing
// goroutine, before the partitions' readers start.
func (p *Pipeline) Rebuild(ctx context.Context, topic string, partitions []int32) error {
	if p.cfg.RebuildWindow <= 0 || len(partitions) == 0 {
		return nil
	}
	rebuild := p.rebuild
	switch {
	case p.o.MessageReplayer != nil && p.msgDec != nil:
		rebuild = p.rebuildFromRecords
	case p.o.Replayer == nil:
		return nil
	}
	var err error
	if lerr := p.onLoop(ctx, func() { err = rebuild(ctx, topic, partitions) }); lerr != nil {
		return lerr
	}
	return err
}

func (p *Pipeline) rebuild(ctx context.Context, topic string, partitions []int32) error {
	// Look back from the event time the stored events reached, not from the
	// wall clock: a backfill of day-old events needs day-old state. The
	// partitions' stored events reached different event times (each was
	// stored as read); up to the lowest of them the history is complete
	// and replays straight into the stages. Past it, the stored events
	// go through the merge, muted, so the live events of the partitions
	// behind still meet them in ts order.
	start := time.Now()
	reached, err := p.o.Replayer.StoredEventTime(ctx, topic, partitions)
	if err != nil {
		return fmt.Errorf("rebuild state of %s %v: %w", topic, partitions, err)
	}
	if len(reached) == 0 {
		return nil // nothing stored yet: nothing to rebuild
	}
	var earliest time.Time
	for _, t := range reached {
		if earliest.IsZero() || t.Before(earliest) {
			earliest = t
		}
	}
	since, low := earliest.Add(-p.cfg.RebuildWindow), earliest
	if len(reached) < len(partitions) {
		// A partition with nothing stored has reached nothing: all stored
		// history goes through the merge.
		low = time.Time{}
	}
	low = p.straightTo(low)
	if b, ok := p.o.Replayer.(BoundedReplayer); ok && p.cfg.RebuildMaxEvents > 0 {
		from, total, err := b.ReplayStart(ctx, topic, partitions, since, p.cfg.RebuildMaxEvents)
		if err != nil {
			return fmt.Errorf("rebuild state of %s %v: %w", topic, partitions, err)
		}
		if from.After(since) {
			p.o.Log.Warn("the rebuild window holds more events than pipeline.rebuild_max_events: replaying the latest of them",
				"topic", topic, "partitions", partitions, "in_window", total, "replayed", p.cfg.RebuildMaxEvents, "window_from", since, "from", from)
			since = from
		}
	}
	now := time.Now()
	var merged int
	lastLog, seen := time.Now(), 0
	n, err := p.o.Replayer.ReplayEvents(ctx, topic, partitions, since, func(e *event.Event) {
		if p.replayOne(eventtime.Partition{Topic: topic, Partition: e.Src.Partition}, e, low, now) {
			merged++
		}
		if seen++; seen%4096 == 0 && time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			p.o.Log.Info("rebuilding detector state from ClickHouse", "topic", topic, "partitions", partitions,
				"events", seen, "reached", e.TS, "took", time.Since(start).Round(time.Second))
		}
	})
	p.merge.Advance(now)
	if err != nil {
		return fmt.Errorf("rebuild state of %s %v: %w", topic, partitions, err)
	}
	p.o.Log.Info("detector state rebuilt from ClickHouse", "topic", topic, "partitions", partitions, "events", n,
		"from", since, "complete_to", low, "merged_past_it", merged, "window", p.cfg.RebuildWindow,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// rebuildFromRecords replays the records the group processed on the
// partitions before its committed offsets (the previous owner's share) into
// the stateful stages, muted: decoded as live records are (copies dropped),
// then the last RebuildWindow of event time in ts order. The records after
// the committed offsets come live, so each event is judged once.
func (p *Pipeline) rebuildFromRecords(ctx context.Context, topic string, partitions []int32) error {
	start := time.Now()
	if m, ok := p.msgDec.(Muter); ok {
		m.Mute(true) // what the records carry besides events is history too
		defer m.Mute(false)
	}
	// Each event with the merge stream its record belongs to (a raw
	// partition as this keyed partition carries it).
	var evs []event.Event
	var streams []eventtime.Partition
	n, err := p.o.MessageReplayer.ReplayMessages(ctx, topic, partitions, func(m *consumer.Message) {
		k := len(evs)
		evs, _ = p.msgDec.DecodeMessage(m, evs) // a record refused now was refused and counted when first read
		src := p.mergePartition(m)
		for range evs[k:] {
			streams = append(streams, src)
		}
	})
	if err != nil {
		return fmt.Errorf("rebuild state of %s %v: %w", topic, partitions, err)
	}
	order := make([]int, len(evs))
	reached := map[eventtime.Partition]time.Time{}
	for i := range order {
		order[i] = i
		if evs[i].TS.After(reached[streams[i]]) {
			reached[streams[i]] = evs[i].TS
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return evs[a].TS.Compare(evs[b].TS) })
	// The streams reached different event times (a raw partition read
	// faster than another reached the keyed topic ahead of it): up to the
	// lowest, the history is complete and replays straight into the
	// stages; past it, it goes through the merge, muted, so the live
	// events of the streams behind meet it in ts order.
	var low, newest time.Time
	for _, t := range reached {
		if low.IsZero() || t.Before(low) {
			low = t
		}
		newest = maxTime(newest, t)
	}
	cut := newest.Add(-p.cfg.RebuildWindow)
	low = p.straightTo(low)
	now := time.Now()
	var replayed, merged int
	for _, i := range order {
		e := &evs[i]
		if e.TS.Before(cut) {
			continue
		}
		if p.replayOne(streams[i], e, low, now) {
			merged++
		}
		replayed++
	}
	p.merge.Advance(now)
	p.o.Log.Info("detector state rebuilt from the records processed before the committed offsets", "topic", topic,
		"partitions", partitions, "records", n, "events", replayed, "complete_to", low, "merged_past_it", merged,
		"window", p.cfg.RebuildWindow, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// straightTo caps the history a rebuild replays straight into the stages at
// the event time the merge has released. A member that already reads other
// partitions holds their events in the merge up to its watermark: history
// past it replays through the merge, so it meets them in ts order. Fed
// straight, it would move the stages' clocks past the held events, which
// would then arrive late (a revoke late is lost). A member that holds
// nothing yet has nothing to meet.
func (p *Pipeline) straightTo(low time.Time) time.Time {
	s := p.merge.Stats()
	if s.Watermark.IsZero() && s.Buffered == 0 {
		return low
	}
	if s.Watermark.Before(low) {
		return s.Watermark
	}
	return low
}

// replayOne feeds one event of history to the stages: straight when it is
// not after straight, else through the merge, muted (then it says true).
func (p *Pipeline) replayOne(src eventtime.Partition, e *event.Event, straight, now time.Time) (merged bool) {
	if !e.TS.After(straight) {
		for _, o := range p.o.Observers {
			o.Replay(e)
		}
		return false
	}
	p.merge.AddReplay(src, e, now)
	return true
}

// mergePartition is the event-time stream a message belongs to: its
// partition, or what the decoder says it carries (the fleet's analyze
// stage: a raw partition via a keyed partition).
func (p *Pipeline) mergePartition(m *consumer.Message) eventtime.Partition {
	s, _ := p.streamOf(m)
	return s
}

// streamOf is mergePartition, and whether the message can carry events:
// a keyed record without source headers (a partial, token facts) cannot.
func (p *Pipeline) streamOf(m *consumer.Message) (eventtime.Partition, bool) {
	if p.srcParts != nil {
		if s, ok := p.srcParts.MergePartition(m); ok {
			return s, true
		}
		return eventtime.Partition{Topic: m.Src.Topic, Partition: m.Src.Partition}, false
	}
	return eventtime.Partition{Topic: m.Src.Topic, Partition: m.Src.Partition}, true
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Drain returns once everything delivered before it is stored and acked.
func (p *Pipeline) Drain(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case p.drains <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Finding is the detectors' sink: it keeps the newest state of each finding
// until the next flush, and tells the notifier at once.
func (p *Pipeline) Finding(f finding.Finding) {
	p.findings[f.ID] = f
	if _, ok := p.triggers[f.ID]; !ok && !p.trigger.IsZero() {
		p.triggers[f.ID] = p.trigger
	}
	if p.o.Notifier != nil {
		p.o.Notifier.Notify(f)
	}
}

// Revocation is the SLI tracker's sink for finished revocation results.
func (p *Pipeline) Revocation(rows []store.Revocation) {
	p.revs = append(p.revs, rows...)
}

// Stats returns the running totals.
func (p *Pipeline) Stats() Stats {
	p.reasonsMu.Lock()
	by := make(map[string]int64, len(p.reasons))
	for k, v := range p.reasons {
		by[k] = v
	}
	p.reasonsMu.Unlock()
	return Stats{
		Consumed: p.consumed.Load(), Accepted: p.accepted.Load(), Stored: p.stored.Load(),
		Rejected: p.rejected.Load(), RejectedByReason: by, RedactionViolations: p.violations.Load(),
		FindingsStored: p.findingsStored.Load(), InsertRetries: p.retries.Load(),
	}
}

// FindingLatencies returns the measured append-to-stored latencies of
// findings (the first store of each finding state), unsorted.
func (p *Pipeline) FindingLatencies() []time.Duration {
	p.reasonsMu.Lock()
	defer p.reasonsMu.Unlock()
	return append([]time.Duration(nil), p.latencies...)
}

// Run processes until ctx ends, then flushes what it holds. It returns once
// the last batch is stored (or the store gave up after shutdownGrace).
func (p *Pipeline) Run(ctx context.Context) error {
	p.stop = ctx.Done()
	// Inserts outlive ctx a little so a graceful stop can flush.
	ictx, icancel := context.WithCancel(context.Background())
	defer icancel()
	inserted := make(chan struct{})
	go func() { defer close(inserted); p.insertLoop(ictx) }()
	if p.o.Upstream != nil {
		go p.pollUpstream(ctx)
	}

	tick := time.NewTicker(p.cfg.BatchInterval / 2)
	defer tick.Stop()
	for {
		select {
		case d := <-p.in:
			p.take(d)
			if p.batch.Len() >= p.cfg.BatchRows {
				p.flush(nil)
			}
		case done := <-p.drains:
			p.drainInput()
			p.flush(done)
		case fn := <-p.calls:
			fn()
		case now := <-tick.C:
			p.merge.Advance(now)
			p.dedupLow()
			wm := p.merge.Watermark()
			for _, o := range p.o.Observers {
				o.Tick(wm)
			}
			p.exportLate()
			p.logUnlogged(now)
			// A batch of messages without rows (rejected, or keyed records
			// that carry no event) is flushed too: it stores nothing, and
			// its offsets are committed.
			if (p.batch.Len() > 0 || p.batch.Tracked() > 0 || len(p.findings) > 0 || len(p.revs) > 0) && now.Sub(p.batchStart) >= p.cfg.BatchInterval {
				p.flush(nil)
			} else if p.batch.Len() == 0 && (len(p.findings) > 0 || len(p.revs) > 0) {
				p.flush(nil)
			}
		case <-ctx.Done():
			p.drainInput()
			p.finish()
			p.shutdown(icancel, inserted)
			return nil
		}
	}
}

// Upstream is what the fleet's analyze stage learns of the stages before it.
type Upstream struct {
	// Raw says whether a merge stream's raw partition has events the
	// ingest group has not committed.
	Raw func(eventtime.Partition) bool
	// RawLag is the ingest group's lag by raw topic and partition (every
	// raw partition, 0 included).
	RawLag map[string]map[int32]int64
	// KeyedEnds are the keyed topic's end offsets by partition.
	KeyedEnds map[int32]int64
	// KeyedOf is the keyed partition carrying a merge stream.
	KeyedOf func(eventtime.Partition) (int32, bool)
}

// applyUpstream marks the merge streams that wait for something upstream:
// their raw partition's backlog at the ingest stage, or their keyed
// partition's reader, stalled (behind the partition's end, and nothing
// delivered since the last poll: a broker died and its partitions'
// leaders are moving). A stalled partition's revocation tracker stops
// following the member's watermark (OnLag) until it delivers again.
func (p *Pipeline) applyUpstream(u Upstream) {
	stalled := map[int32]bool{}
	for _, k := range p.ownedKeyed {
		next, was := p.delivered[k], p.polled[k]
		if next != was {
			continue // delivered since the last poll
		}
		if end, ok := u.KeyedEnds[k]; !ok && u.KeyedEnds != nil {
			// Its end is unknown: the broker that led it died and its
			// leader is moving. Whatever it holds comes once a new leader
			// serves it.
			stalled[k] = true
		} else if ok && end > next {
			stalled[k] = true
			if p.o.OnLag != nil {
				p.o.OnLag(k, end-next)
			}
		}
	}
	p.polled = maps.Clone(p.delivered)
	for k, end := range p.catchUp {
		if end < 0 {
			if e, ok := u.KeyedEnds[k]; ok {
				p.catchUp[k] = e
			}
		} else if p.delivered[k] >= end {
			delete(p.catchUp, k) // read what was there when it was taken
		}
	}
	if u.RawLag != nil {
		p.rawLag = u.RawLag
	}
	p.expectStreams(func(k int32, lag int64) bool {
		_, catchingUp := p.catchUp[k]
		return lag > 0 || catchingUp
	})
	p.merge.SetLagging(func(s eventtime.Partition) bool {
		if u.KeyedOf == nil {
			return u.Raw != nil && u.Raw(s)
		}
		k, ok := u.KeyedOf(s)
		if !ok || !slices.Contains(p.ownedKeyed, k) {
			return false // read elsewhere now: its new owner waits for it
		}
		_, catchingUp := p.catchUp[k]
		return catchingUp || stalled[k] || u.Raw != nil && u.Raw(s)
	})
}

// expectStreams makes the merge wait for the streams of the keyed
// partitions this member owns whose raw partition's lag upstream, or whose
// keyed partition, want says is worth waiting for, whether they delivered
// yet or not: a stream the merge has not heard of cannot hold the
// watermark back, and the first events of a raw partition whose ingest
// member started late, or of a keyed partition taken over with a backlog,
// were late when they came (docs/fleet.md, "Failover").
func (p *Pipeline) expectStreams(want func(keyed int32, rawLag int64) bool) {
	if p.keyedTopic == "" {
		return
	}
	now := time.Now()
	for topic, parts := range p.rawLag {
		for rp, lag := range parts {
			for _, k := range p.ownedKeyed {
				if want(k, lag) {
					p.merge.Expect(rekey.Stream(topic, rp, p.keyedTopic, k), now)
				}
			}
		}
	}
}

// logUnlogged says, at most once a second (and at shutdown: zero now), how
// many rejections the log's rate limit kept out and where they are, per
// partition, so every rejected message can still be found by its offset.
func (p *Pipeline) logUnlogged(now time.Time) {
	if p.unlogged.total == 0 || (!now.IsZero() && now.Sub(p.unlogged.last) < time.Second) {
		return
	}
	p.unlogged.last = now
	n, spans := p.unlogged.take()
	p.o.Log.Warn("rejected messages not logged one by one (at most 10 lines a second); the rejections are in tokenwatch_events_rejected_total and, with kafka.dead_letter_topic, in that topic",
		"count", n, "offsets", strings.Join(spans, ", "))
}

// upstreamPoll is how often the analyze stage reads the ingest group's lag.
const upstreamPoll = 2 * time.Second

// pollUpstream hands the merge, every upstreamPoll, which streams have a
// backlog upstream (Options.Upstream). A failed read keeps the last answer.
func (p *Pipeline) pollUpstream(ctx context.Context) {
	t := time.NewTicker(upstreamPoll)
	defer t.Stop()
	var lastErr time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		lagging, err := p.o.Upstream(rctx)
		cancel()
		if err != nil {
			if time.Since(lastErr) > time.Minute {
				lastErr = time.Now()
				p.o.Log.Warn("reading the ingest group's lag failed; the event-time merge keeps its last answer", "err", err)
			}
			continue
		}
		select {
		case p.calls <- func() { p.applyUpstream(lagging) }:
		case <-ctx.Done():
			return
		}
	}
}

// finish ends the input at shutdown: the merge releases what it holds, and
// the stages report what is pending with what is known (revocations whose
// horizon has not passed are marked truncated, as analyze reports them at
// the end of a file), so it is stored with the last batch.
func (p *Pipeline) finish() {
	p.logUnlogged(time.Time{})
	p.merge.Flush()
	for _, o := range p.o.Observers {
		o.Flush()
	}
	p.exportLate()
	s := p.merge.Stats()
	p.o.Log.Info("event time at shutdown", "watermark", s.Watermark, "released", s.Released, "reordered", s.Reordered,
		"late", s.Late, "forced_early", s.Forced)
}

// exportLate moves the merge's state and the stages' late counts onto
// /metrics, with a line in the log when they grew (counted in full, logged
// at most once a tick).
func (p *Pipeline) exportLate() {
	s := p.merge.Stats()
	if !s.Watermark.IsZero() {
		p.o.Metrics.Watermark.Set(float64(s.Watermark.UnixMilli()) / 1000)
	}
	p.o.Metrics.MergeBuffered.Set(float64(s.Buffered))
	p.o.Metrics.MergeIdle.Set(float64(s.Idle))
	if d := s.Forced - p.forced; d > 0 {
		p.o.Metrics.MergeForced.Add(float64(d))
		p.forced = s.Forced
		p.o.Log.Warn("merge buffer full: events released before the watermark reached them; the partitions behind will arrive late (raise pipeline.merge_buffer)",
			"forced", d, "buffered", s.Buffered, "watermark", s.Watermark)
	}
	for _, o := range p.o.Observers {
		lc, ok := o.(LateCounter)
		if !ok {
			continue
		}
		for stage, n := range lc.LateEvents() {
			if d := n - p.lateSeen[stage]; d > 0 {
				p.o.Metrics.Late.WithLabelValues(stage).Add(float64(d))
				p.lateSeen[stage] = n
				p.o.Log.Warn("late events: behind the event time this stage had reached by more than its lateness; stored and counted per minute, but its closed windows do not see them",
					"stage", stage, "new", d, "total", n, "watermark", p.merge.Watermark())
			}
		}
	}
}

// shutdown hands the last batch to the inserter and waits for it, for at
// most ShutdownGrace: with ClickHouse down the pipeline still stops, and
// what it could not store stays uncommitted, to be read again.
func (p *Pipeline) shutdown(icancel context.CancelFunc, inserted <-chan struct{}) {
	gctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownGrace)
	defer cancel()
	grace := gctx.Done() // stays closed once the grace is over
	done := make(chan error, 1)
	for _, it := range p.stuck {
		select {
		case p.work <- it:
		case <-grace:
		}
	}
	it := p.takeBatch(done)
	select {
	case p.work <- it:
		select {
		case <-done:
		case <-grace:
			p.o.Log.Error("shutdown: ClickHouse did not take the last batch in time; its offsets stay uncommitted and will be read again", "grace", p.cfg.ShutdownGrace)
		}
	case <-grace:
		p.o.Log.Error("shutdown: ClickHouse is not taking batches; the pending ones stay uncommitted and will be read again", "grace", p.cfg.ShutdownGrace)
	}
	icancel()
	close(p.work)
	<-inserted
}

// drainInput processes what is already queued without blocking.
func (p *Pipeline) drainInput() {
	for {
		select {
		case d := <-p.in:
			p.take(d)
		default:
			return
		}
	}
}

func (p *Pipeline) process(msgs []consumer.Message) {
	if p.batch.Len() == 0 && len(p.findings) == 0 {
		p.batchStart = time.Now()
	}
	p.consumed.Add(int64(len(msgs)))
	now := time.Now()
	for i := range msgs {
		m := &msgs[i]
		src, events := p.streamOf(m)
		if events {
			// A record that carries no event (the keyed topic's partials
			// and token facts) says nothing of a stream's liveness: heard,
			// the keyed partition's own stream, which never has an event,
			// held the watermark for as long as partials kept coming.
			p.merge.Heard(src, now)
		}
		if err := p.tooLarge(m); err != nil {
			p.reject(m, err)
			p.o.Metrics.Decoded.WithLabelValues(m.Src.Topic).Inc()
			p.batch.Track(m.Src) // its offset is done
			continue
		}
		var errs []error
		if p.msgDec != nil {
			p.decoded, errs = p.msgDec.DecodeMessage(m, p.decoded[:0])
		} else {
			p.decoded, errs = p.o.Decoder.Decode(m.Src, m.Value, p.decoded[:0])
		}
		for _, err := range errs {
			p.reject(m, err)
		}
		if n := len(p.decoded) + len(errs); n > 0 {
			p.o.Metrics.Decoded.WithLabelValues(m.Src.Topic).Add(float64(n))
		}
		if len(p.decoded) == 0 {
			p.batch.Track(m.Src)
			continue
		}
		kept, bad := 0, 0
		for j := range p.decoded {
			e := &p.decoded[j]
			err := p.implausibleTime(m, j, e, now)
			if err == nil {
				err = p.extraTooLarge(m, j, e)
			}
			if err != nil {
				p.reject(m, err)
				bad++
				continue
			}
			if p.o.Guard != nil {
				if leaked := p.o.Guard.Apply(e); len(leaked) > 0 {
					p.violations.Add(1)
					p.o.Metrics.RedactionViolation.WithLabelValues(p.emitter.value(e.Service)).Inc()
					p.o.Log.Warn("raw credential replaced by a keyed hash", "topic", m.Src.Topic, "partition", m.Src.Partition,
						"offset", m.Src.Offset, "service", e.Service, "fields", leaked)
					if p.o.Quarantine != nil {
						if err := p.o.Quarantine.Forward(context.Background(), *m, "redaction_violation"); err != nil {
							p.o.Log.Error("quarantine topic write failed", "err", err)
						}
					}
				}
			}
			if p.o.Dedup != nil && p.srcParts == nil && p.o.Dedup.Seen(e) {
				p.o.Metrics.Duplicates.WithLabelValues(m.Src.Topic).Inc()
				continue
			}
			kept++
			p.batch.Add(e)
			if p.o.Publisher != nil {
				p.o.Publisher.Publish(e, j)
			}
			p.merge.Add(src, e, m.Time, now)
			p.accepted.Add(1)
		}
		p.o.Metrics.Accepted.WithLabelValues(m.Src.Topic).Add(float64(len(p.decoded) - bad))
		if kept == 0 {
			p.batch.Track(m.Src) // every event a copy: its offset is still done
		}
	}
	if len(msgs) > 0 {
		// A delivery is one chunk of one partition; its last message
		// carries the partition's lag.
		last := &msgs[len(msgs)-1]
		if p.srcParts == nil {
			p.merge.Backlog(eventtime.Partition{Topic: last.Src.Topic, Partition: last.Src.Partition}, last.Lag, now)
		} else {
			p.delivered[last.Src.Partition] = last.Src.Offset + 1
			if p.o.OnLag != nil {
				p.o.OnLag(last.Src.Partition, last.Lag)
			}
		}
	}
	p.merge.Advance(now)
	p.dedupLow()
}

// dedupLow tells the copy filter how far the slowest partition has reached
// (ingest/dedup's SetLow): a copy on another partition, read minutes ahead
// on a backlog, is still recognised.
func (p *Pipeline) dedupLow() {
	if l, ok := p.o.Dedup.(interface{ SetLow(time.Time) }); ok {
		l.SetLow(p.merge.Watermark())
	}
}

func (p *Pipeline) reject(m *consumer.Message, err error) {
	reason := "invalid"
	var de *ingest.Error
	if errors.As(err, &de) {
		reason = string(de.Reason)
	}
	p.rejected.Add(1)
	p.reasonsMu.Lock()
	p.reasons[reason]++
	p.reasonsMu.Unlock()
	p.o.Metrics.Rejected.WithLabelValues(m.Src.Topic, reason).Inc()
	if p.logLimit.allow(time.Now()) {
		p.o.Log.Warn("message rejected", "reason", reason, "err", err.Error())
	} else {
		p.unlogged.add(m.Src.Topic, m.Src.Partition, m.Src.Offset)
	}
	if p.o.DeadLetter != nil {
		if ferr := p.o.DeadLetter.Forward(context.Background(), *m, err.Error()); ferr != nil {
			p.o.Log.Error("dead-letter write failed", "topic", m.Src.Topic, "partition", m.Src.Partition, "offset", m.Src.Offset, "err", ferr)
		} else {
			p.o.Metrics.DeadLettered.Inc()
		}
	}
}

// flush hands the current batch to the inserter; it blocks when
// MaxPendingBatches are already waiting (back-pressure).
func (p *Pipeline) flush(barrier chan error) {
	it := p.takeBatch(barrier)
	select {
	case p.work <- it:
	case <-p.stop:
		// Stopping while ClickHouse does not take batches: shutdown tries
		// this one again within its grace.
		p.stuck = append(p.stuck, it)
	}
}

// takeBatch moves what the pipeline holds into a work item.
func (p *Pipeline) takeBatch(barrier chan error) *item {
	it := &item{batch: p.batch, revs: p.revs, barrier: barrier}
	if p.o.Publisher != nil {
		it.mark = p.o.Publisher.Mark()
	}
	for id, f := range p.findings {
		it.findings = append(it.findings, f)
		it.triggers = append(it.triggers, p.triggers[id])
	}
	p.batch = store.NewBatch(p.cfg.BatchRows)
	p.findings = map[string]finding.Finding{}
	p.triggers = map[string]time.Time{}
	p.revs = nil
	p.batchStart = time.Now()
	return it
}

func (p *Pipeline) insertLoop(ctx context.Context) {
	for it := range p.work {
		start := time.Now()
		err := p.retry(ctx, "insert_events", func() error { return p.o.Store.InsertEvents(ctx, it.batch) })
		if err == nil && len(it.findings) > 0 {
			err = p.retry(ctx, "insert_findings", func() error { return p.o.Store.InsertFindings(ctx, it.findings) })
			if err == nil {
				now := time.Now()
				p.findingsStored.Add(int64(len(it.findings)))
				p.reasonsMu.Lock()
				for _, t := range it.triggers {
					if !t.IsZero() {
						d := now.Sub(t)
						p.o.Metrics.FindingLatency.Observe(d.Seconds())
						if len(p.latencies) < maxLatencySamples {
							p.latencies = append(p.latencies, d)
						}
					}
				}
				p.reasonsMu.Unlock()
			}
		}
		if err == nil && len(it.revs) > 0 {
			err = p.retry(ctx, "insert_revocations", func() error { return p.o.Store.InsertRevocations(ctx, it.revs) })
		}
		if err == nil && p.o.Publisher != nil {
			err = p.o.Publisher.Wait(ctx, it.mark) // the keyed copies are acknowledged too
		}
		if err == nil {
			n := it.batch.Len()
			if n > 0 {
				p.o.Metrics.BatchRows.Observe(float64(n))
				p.o.Metrics.FlushSeconds.Observe(time.Since(start).Seconds())
			}
			p.stored.Add(int64(n))
			p.o.Metrics.Stored.Add(float64(n))
			if p.o.Acker != nil {
				for _, r := range it.batch.Ranges() {
					p.o.Acker.Ack(r.Topic, r.Partition, r.Last)
				}
			}
		}
		if it.barrier != nil {
			it.barrier <- err
		}
	}
}

// retry runs op until it succeeds or ctx ends, backing off exponentially.
// It never drops the batch: a stopped pipeline leaves its offsets
// uncommitted, so the data is read again.
func (p *Pipeline) retry(ctx context.Context, op string, fn func() error) error {
	// Exponential with jitter (cenkalti/backoff's ±50 %), so replicas that
	// lost ClickHouse together do not come back in step.
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = p.cfg.RetryInitial, p.cfg.RetryMax
	for attempt := 0; ; attempt++ {
		wait := b.NextBackOff()
		err := fn()
		if err == nil {
			return nil
		}
		p.o.Metrics.CHErrors.WithLabelValues(op).Inc()
		if ctx.Err() != nil {
			return fmt.Errorf("%s: gave up at shutdown: %w", op, err)
		}
		p.o.Log.Warn("ClickHouse write failed, retrying", "op", op, "attempt", attempt+1, "backoff", wait, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: gave up at shutdown: %w", op, err)
		case <-time.After(wait):
		}
		p.retries.Add(1)
		p.o.Metrics.CHRetries.WithLabelValues(op).Inc()
	}
}
