package rekey

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
)

// Replayer reads back what an analyze member's new partitions held before
// the group's committed offsets, so the member rebuilds the state of their
// keys from the records the previous owner already processed. The keyed
// topic is the analyze stage's changelog: Kafka Streams reuses a source
// topic as a table's changelog the same way ("source topic optimization"),
// and it costs no second topic and no second write per event. The events
// table cannot serve here: it is keyed by raw partitions, and which keyed
// partition an event went to is a function of its fields, not a column.
type Replayer struct {
	// Brokers and Dialer reach the cluster; Transport is for the group's
	// committed offsets.
	Brokers   []string
	Dialer    *kafka.Dialer
	Transport kafka.RoundTripper
	// Group is the analyze stage's consumer group.
	Group string
	// Window is how far back, by the records' append time, reading starts
	// from the last record the previous owner processed.
	Window time.Duration
	// MaxRecords bounds what one rebuild reads, shared over its partitions:
	// the newest records are read when the window holds more.
	MaxRecords int64
}

// ReplayMessages hands fn each record of partitions from about Window
// before the group's committed offset up to it, partition by partition, in
// offset order. A partition the group has committed nothing on has
// nothing to replay. It returns how many records it read.
func (r *Replayer) ReplayMessages(ctx context.Context, topic string, partitions []int32, fn func(*consumer.Message)) (int, error) {
	if len(partitions) == 0 {
		return 0, nil
	}
	committed, err := r.committed(ctx, topic, partitions)
	if err != nil {
		return 0, err
	}
	per := r.MaxRecords / int64(len(partitions))
	if per <= 0 {
		per = 1
	}
	n := 0
	for _, p := range partitions {
		end, ok := committed[p]
		if !ok || end <= 0 {
			continue
		}
		k, err := r.replayPartition(ctx, topic, p, end, per, fn)
		n += k
		if err != nil {
			return n, fmt.Errorf("replay keyed partition %s/%d up to offset %d: %w", topic, p, end, err)
		}
	}
	return n, nil
}

func (r *Replayer) committed(ctx context.Context, topic string, partitions []int32) (map[int32]int64, error) {
	parts := make([]int, len(partitions))
	for i, p := range partitions {
		parts[i] = int(p)
	}
	c := &kafka.Client{Addr: kafka.TCP(r.Brokers...), Transport: r.Transport, Timeout: 10 * time.Second}
	res, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: r.Group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("committed offsets of group %s on %s: %w", r.Group, topic, err)
	}
	if res.Error != nil {
		return nil, fmt.Errorf("committed offsets of group %s on %s: %w", r.Group, topic, res.Error)
	}
	out := map[int32]int64{}
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("committed offset of group %s on %s/%d: %w", r.Group, topic, p.Partition, p.Error)
		}
		out[int32(p.Partition)] = p.CommittedOffset
	}
	return out, nil
}

// replayPartition reads [start, end) of one partition, where start is the
// first record appended Window before the record at end-1, or end-max if
// that is later.
func (r *Replayer) replayPartition(ctx context.Context, topic string, p int32, end, max int64, fn func(*consumer.Message)) (int, error) {
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: r.Brokers, Topic: topic, Partition: int(p), Dialer: r.Dialer,
		MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 250 * time.Millisecond})
	defer rd.Close()
	if err := rd.SetOffset(end - 1); err != nil {
		return 0, err
	}
	last, err := rd.ReadMessage(ctx)
	if err != nil {
		return 0, fmt.Errorf("read the last processed record: %w", err)
	}
	if last.Offset != end-1 {
		// Compacted or expired under us: start where the log does.
		return 0, errors.New("the last processed record is gone (retention)")
	}
	if err := rd.SetOffsetAt(ctx, last.Time.Add(-r.Window)); err != nil {
		return 0, fmt.Errorf("find the offset at %s: %w", last.Time.Add(-r.Window), err)
	}
	if start := rd.Offset(); start < end-max {
		if err := rd.SetOffset(end - max); err != nil {
			return 0, err
		}
	}
	n := 0
	for {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			return n, err
		}
		if m.Offset >= end {
			return n, nil
		}
		n++
		fn(&consumer.Message{Src: event.Source{Topic: topic, Partition: p, Offset: m.Offset}, Key: m.Key, Value: m.Value,
			Time: m.Time, Headers: m.Headers})
		if m.Offset == end-1 {
			return n, nil
		}
	}
}
