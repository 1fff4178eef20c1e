package rekey

import (
	"fmt"
	"maps"
	"strconv"

	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/event"
)

// Source names one accepted event by where it came from: the raw topic,
// partition and offset of its message, and its index among the message's
// accepted records (an OTLP batch carries many). Redelivered, it has the
// same Source; that is how copies are recognised.
type Source struct {
	Topic     string
	Partition int32
	Offset    int64
	Record    int32
}

// Header names on the keyed topic's records.
const (
	HeaderTopic     = "tw-src-topic"
	HeaderPartition = "tw-src-partition"
	HeaderOffset    = "tw-src-offset"
	HeaderRecord    = "tw-src-record"
)

// Headers carries src on a keyed record.
func Headers(src Source) []kafka.Header {
	return []kafka.Header{
		{Key: HeaderTopic, Value: []byte(src.Topic)},
		{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(src.Partition), 10)},
		{Key: HeaderOffset, Value: strconv.AppendInt(nil, src.Offset, 10)},
		{Key: HeaderRecord, Value: strconv.AppendInt(nil, int64(src.Record), 10)},
	}
}

// SourceOf reads the source back from a keyed record's headers.
func SourceOf(headers []kafka.Header) (Source, error) {
	var src Source
	var seen int
	for _, h := range headers {
		var err error
		switch h.Key {
		case HeaderTopic:
			src.Topic = string(h.Value)
		case HeaderPartition:
			var v int64
			v, err = strconv.ParseInt(string(h.Value), 10, 32)
			src.Partition = int32(v)
		case HeaderOffset:
			src.Offset, err = strconv.ParseInt(string(h.Value), 10, 64)
		case HeaderRecord:
			var v int64
			v, err = strconv.ParseInt(string(h.Value), 10, 32)
			src.Record = int32(v)
		default:
			continue
		}
		if err != nil {
			return Source{}, fmt.Errorf("header %s: %w", h.Key, err)
		}
		seen++
	}
	if seen != 4 || src.Topic == "" {
		return Source{}, fmt.Errorf("keyed record without its source headers (%s, %s, %s, %s)", HeaderTopic, HeaderPartition, HeaderOffset, HeaderRecord)
	}
	return src, nil
}

// Dedup drops the copies of an event that reach one analyze member:
//
//   - Redelivery. After an ingest member crashes between producing and
//     committing, the next one produces the same source range again, and a
//     producer retry can do the same. Each keyed partition receives one
//     source partition's events in source order (one ingest member produces
//     them, in order), so per (source partition, keyed partition) a record
//     at or below the highest source position seen is a copy. 40 bytes per
//     pair: 6 raw × 12 keyed partitions is under 3 KB.
//   - Fan-out. An issue event reaches its token's and its family's
//     partitions, a wide revoke every partition; one member owning several
//     of them gets several copies. Their sources are remembered in a FIFO
//     window of FanoutWindow entries (default 65,536, about 6 MB), which
//     covers the skew between the keyed partitions the event-time merge
//     allows.
//
// Dedup belongs to one goroutine.
type Dedup struct {
	window int
	hwm    map[hwmKey]position
	fanout map[Source]struct{}
	ring   []Source
	next   int
	// Dropped counts copies dropped, by cause.
	Redelivered, FannedOut int64
}

type hwmKey struct {
	topic      string
	src, keyed int32
}

type position struct{ offset, record int64 }

func (p position) after(q position) bool {
	return p.offset > q.offset || p.offset == q.offset && p.record > q.record
}

// NewDedup builds a filter with a fan-out window of window sources (0: the
// default).
func NewDedup(window int) *Dedup {
	if window <= 0 {
		window = 1 << 16
	}
	return &Dedup{window: window, hwm: map[hwmKey]position{}, fanout: map[Source]struct{}{}}
}

// Copy reports whether the event from src, read from keyed partition keyed,
// is a copy of one already seen; fannedOut says whether its route reaches
// more than one keyed partition (RouteOf and Partitioner tell).
func (d *Dedup) Copy(keyed int32, src Source, fannedOut bool) bool {
	k := hwmKey{topic: src.Topic, src: src.Partition, keyed: keyed}
	pos := position{src.Offset, int64(src.Record)}
	if last, ok := d.hwm[k]; ok && !pos.after(last) {
		d.Redelivered++
		return true
	}
	d.hwm[k] = pos
	if !fannedOut {
		return false
	}
	if _, ok := d.fanout[src]; ok {
		d.FannedOut++
		return true
	}
	if len(d.ring) < d.window {
		d.ring = append(d.ring, src)
	} else {
		delete(d.fanout, d.ring[d.next])
		d.ring[d.next] = src
		d.next = (d.next + 1) % d.window
	}
	d.fanout[src] = struct{}{}
	return false
}

// Forget drops the positions of a keyed partition handed to another member:
// its next owner starts from its own view.
func (d *Dedup) Forget(keyed int32) {
	d.retain(func(k int32) bool { return k != keyed })
}

// retain keeps the positions of the keyed partitions keep says, in one pass.
func (d *Dedup) retain(keep func(keyed int32) bool) {
	maps.DeleteFunc(d.hwm, func(k hwmKey, _ position) bool { return !keep(k.keyed) })
}

// SourceOfEvent is the Source of the record-th accepted event of a message.
func SourceOfEvent(s event.Source, record int) Source {
	return Source{Topic: s.Topic, Partition: s.Partition, Offset: s.Offset, Record: int32(record)}
}
