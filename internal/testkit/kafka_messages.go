package testkit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// Produce writes msgs to topic with kafka-go's Writer (hash-balanced by key, acknowledged by all
// in-sync replicas) and fails the test if any write fails.
func Produce(t testing.TB, brokers []string, topic string, msgs []kafka.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		BatchSize:    1000,
		BatchTimeout: 5 * time.Millisecond,
		RequiredAcks: kafka.RequireAll,
	}
	defer w.Close()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("writing %d messages to %q on %v: %v", len(msgs), topic, brokers, err)
	}
}

// ConsumeGroup joins consumer group groupID on topic and reads n messages with kafka-go's
// low-level consumer group API, the one ingest/kafka uses: one Generation, one partition Reader
// per assigned partition, started at the offset the group had committed (or the first offset).
// It then commits, per partition, the offset after the last message it returned, and leaves the
// group, so that the next member of groupID resumes after these n messages.
func ConsumeGroup(t testing.TB, brokers []string, topic, groupID string, n int) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:               groupID,
		Brokers:          brokers,
		Topics:           []string{topic},
		StartOffset:      kafka.FirstOffset,
		JoinGroupBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("joining consumer group %q on %v: %v", groupID, brokers, err)
	}
	defer group.Close()
	gen := nextGeneration(ctx, t, group, groupID)

	received := make(chan kafka.Message)
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	var readers sync.WaitGroup
	for _, assigned := range gen.Assignments[topic] {
		readers.Add(1)
		gen.Start(func(genCtx context.Context) {
			defer readers.Done()
			// Stop on whichever ends first: this call having read enough, or a rebalance.
			ctx, cancel := context.WithCancel(readCtx)
			defer cancel()
			defer context.AfterFunc(genCtx, cancel)()
			readPartition(ctx, t, brokers, topic, assigned, received)
		})
	}

	var msgs []kafka.Message
	next := make(map[int]int64)
	for len(msgs) < n {
		select {
		case m := <-received:
			msgs = append(msgs, m)
			next[m.Partition] = m.Offset + 1
		case <-ctx.Done():
			stopReading()
			readers.Wait()
			t.Fatalf("consumer group %q read %d of %d messages from %q before timing out", groupID, len(msgs), n, topic)
		}
	}
	// Commit before the readers stop: kafka-go ends the generation, and closes the connection
	// that commits go through, as soon as any function launched by Start returns.
	if err := gen.CommitOffsets(map[string]map[int]int64{topic: next}); err != nil {
		t.Fatalf("committing offsets %v of group %q: %v", next, groupID, err)
	}
	stopReading()
	readers.Wait()
	return msgs
}

// nextGeneration waits for the group's first generation. kafka-go's Next also returns the errors
// of failed join attempts, which are transient (e.g. Group Coordinator Not Available while Kafka
// creates its offsets topic for the first group) and which the group retries after a backoff.
func nextGeneration(ctx context.Context, t testing.TB, group *kafka.ConsumerGroup, groupID string) *kafka.Generation {
	t.Helper()
	for {
		gen, err := group.Next(ctx)
		if err == nil {
			return gen
		}
		if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
			t.Fatalf("waiting for a generation of consumer group %q: %v", groupID, err)
		}
		t.Logf("consumer group %q not joined yet, retrying: %v", groupID, err)
	}
}

func readPartition(ctx context.Context, t testing.TB, brokers []string, topic string, assigned kafka.PartitionAssignment, received chan<- kafka.Message) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   brokers,
		Topic:     topic,
		Partition: assigned.ID,
		MaxWait:   100 * time.Millisecond,
	})
	defer r.Close()
	if err := r.SetOffset(assigned.Offset); err != nil {
		t.Errorf("starting partition %d of %q at offset %d: %v", assigned.ID, topic, assigned.Offset, err)
		return
	}
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				t.Errorf("reading partition %d of %q: %v", assigned.ID, topic, err)
			}
			return
		}
		select {
		case received <- m:
		case <-ctx.Done():
			return
		}
	}
}
