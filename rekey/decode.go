package rekey

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/eventtime"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/sli"
)

// Decoder reads the keyed topic for the analyze stage: each record is one
// event as JSON v1 with its source in headers. A redelivered copy is
// dropped here and counted; one fanned out to several partitions this
// member owns is counted and marked (event.Source.Copy): the detectors skip
// it, the revocation tracker of each partition takes it.
type Decoder struct {
	json    *ingest.Decoder
	part    *Partitioner
	dedup   *Dedup
	dropped *prometheus.CounterVec
	scratch []int32
	// partials receives the partial results of broadcast revokes that
	// the keyed topic carries besides events; muted while replaying.
	partials func(x sli.RevocationPartial, replay bool)
	facts    func(partition int32, f sli.TokenFacts)
	aggs     func(value []byte, replay bool) error
	muted    bool
}

// SetAggregateSink names who merges the partial aggregates read from the
// keyed topic (the detect engine, where this member owns them); value is
// the record as PublishAggregate wrote it.
func (d *Decoder) SetAggregateSink(fn func(value []byte, replay bool) error) { d.aggs = fn }

// SetTokenFactsSink names who learns the token facts the keyed topic
// carries for the tokens refreshes issued (the revocation tracker's Learn),
// with the keyed partition they were read from (the token's).
func (d *Decoder) SetTokenFactsSink(fn func(partition int32, f sli.TokenFacts)) { d.facts = fn }

// SetPartialSink names who merges the partial results of broadcast revokes
// read from the keyed topic (the analyze stage's Stages.Partial).
func (d *Decoder) SetPartialSink(fn func(x sli.RevocationPartial, replay bool)) { d.partials = fn }

// Owned names the keyed partitions this member reads now: the copy
// filter's positions for the others are forgotten. Kept, they outlived the
// handover, and when the partition came back to this member (after a
// rebalance through other members) every record up to where this member
// had read it before, in the history its rebuild replays and live, was
// taken for a redelivery and dropped: the new tracker of the partition
// missed a broadcast revoke or the acceptances after it.
func (d *Decoder) Owned(partitions []int32) {
	d.dedup.retain(func(k int32) bool { return slices.Contains(partitions, k) })
}

// Mute marks what is decoded until Mute(false) as replayed history.
func (d *Decoder) Mute(on bool) { d.muted = on }

// NewDecoder is for a keyed topic of partitions partitions; the copy
// counter goes on reg (nil: none).
func NewDecoder(partitions int, reg prometheus.Registerer) (*Decoder, error) {
	dec, err := ingest.NewDecoder(ingest.FormatJSON)
	if err != nil {
		return nil, err
	}
	d := &Decoder{json: dec, part: NewPartitioner(partitions), dedup: NewDedup(0),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_rekey_copies_dropped_total",
			Help: "Keyed records dropped before the detectors because this member had seen the event: redelivered (an ingest member produced a range again) or fanned_out (reached several partitions this member owns).",
		}, []string{"cause"})}
	if reg != nil {
		if err := reg.Register(d.dropped); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Decode refuses a record without its message: the source is in headers.
func (d *Decoder) Decode(src event.Source, _ []byte, out []event.Event) ([]event.Event, []error) {
	return out, []error{fmt.Errorf("topic %s partition %d offset %d: keyed records are read with their headers", src.Topic, src.Partition, src.Offset)}
}

// DecodeMessage decodes one keyed record and drops it when it is a copy.
func (d *Decoder) DecodeMessage(m *consumer.Message, out []event.Event) ([]event.Event, []error) {
	if kind := headerValue(m.Headers, HeaderKind); kind != "" {
		return out, d.decodeOther(m, kind)
	}
	src, err := SourceOf(m.Headers)
	if err != nil {
		return out, []error{&ingest.Error{Src: m.Src, Format: ingest.FormatJSON, Record: -1, Reason: ingest.ReasonMissingField,
			Field: "header " + HeaderTopic, Problem: err.Error(), Expected: "the source headers the ingest stage writes"}}
	}
	n := len(out)
	out, errs := d.json.Decode(m.Src, m.Value, out)
	if len(out) == n {
		return out, errs
	}
	e := &out[n]
	d.scratch = d.part.Partitions(RouteOf(e), d.scratch[:0])
	e.Src.Fanned = len(d.scratch) > 1
	before := d.dedup.Redelivered
	if d.dedup.Copy(m.Src.Partition, src, len(d.scratch) > 1) {
		if d.dedup.Redelivered > before {
			d.dropped.WithLabelValues("redelivered").Inc()
			return out[:n], errs
		}
		// Seen on another keyed partition this member owns: the
		// detectors skip it, the partition's revocation tracker takes it.
		d.dropped.WithLabelValues("fanned_out").Inc()
		e.Src.Copy = true
	}
	return out, errs
}

// MergePartition names the stream a keyed record belongs to for the
// analyze stage's event-time merge: its raw partition as carried by this
// keyed partition. A raw partition's events reach each keyed partition in
// their own order (one ingest member publishes them in order), but not
// across keyed partitions, which are read at different speeds; so each
// (raw partition, keyed partition) pair is a stream with its own watermark.
func (d *Decoder) MergePartition(m *consumer.Message) (eventtime.Partition, bool) {
	src, err := SourceOf(m.Headers)
	if err != nil {
		return eventtime.Partition{}, false
	}
	return Stream(src.Topic, src.Partition, m.Src.Topic, m.Src.Partition), true
}

// Stream names the merge stream of raw partition rawPart of rawTopic as
// carried by keyed partition keyedPart of keyedTopic.
func Stream(rawTopic string, rawPart int32, keyedTopic string, keyedPart int32) eventtime.Partition {
	return eventtime.Partition{Topic: rawTopic + streamVia + keyedTopic + "/" + strconv.Itoa(int(keyedPart)), Partition: rawPart}
}

// decodeOther handles a keyed record that is not an event.
func (d *Decoder) decodeOther(m *consumer.Message, kind string) []error {
	bad := func(problem string) []error {
		return []error{&ingest.Error{Src: m.Src, Format: ingest.FormatJSON, Record: -1, Reason: ingest.ReasonInvalidValue,
			Field: "header " + HeaderKind, Problem: problem, Expected: "a record the ingest or analyze stage writes"}}
	}
	if kind == KindTokenFacts {
		var f sli.TokenFacts
		if err := json.Unmarshal(m.Value, &f); err != nil || f.Token == "" {
			return bad(fmt.Sprintf("not token facts (%v)", err))
		}
		if d.facts != nil {
			d.facts(m.Src.Partition, f) // history or not, the tracker's index wants it
		}
		return nil
	}
	if kind == KindAggregatePartial {
		if d.aggs == nil {
			return nil
		}
		if err := d.aggs(m.Value, d.muted); err != nil {
			return bad(fmt.Sprintf("not a partial aggregate (%v)", err))
		}
		return nil
	}
	if kind != KindRevocationPartial {
		return bad("unknown kind " + strconv.Quote(kind))
	}
	var x sli.RevocationPartial
	if err := json.Unmarshal(m.Value, &x); err != nil || x.Revoke.ID == "" || x.Partitions <= 0 {
		return bad(fmt.Sprintf("not a revocation partial (%v)", err))
	}
	if d.partials != nil {
		d.partials(x, d.muted)
	}
	return nil
}

func headerValue(headers []kafka.Header, key string) string {
	for _, h := range headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
