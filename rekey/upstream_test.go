package rekey_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/eventtime"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/rekey"
)

// The ingest group's lag per raw partition is the end offset minus its
// committed offset (all of it when it has committed nothing); Lagging
// turns it into the analyze merge's predicate on "<raw> via <keyed>/<k>"
// streams.
func TestUpstreamLagIsTheIngestGroupsUncommittedTail(t *testing.T) {
	brokers := testkit.Kafka(t)
	topic := testkit.Topic(t)
	testkit.CreateTopic(t, brokers, topic, 2)
	var msgs []kafka.Message
	for i := range 5 {
		msgs = append(msgs, kafka.Message{Partition: 0, Value: []byte{byte(i)}})
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: kafka.BalancerFunc(func(kafka.Message, ...int) int { return 0 })}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	group := topic + "-ingest"
	u := &rekey.UpstreamLag{Client: client, Group: group, Topics: []string{topic}}
	lag, err := u.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if lag[topic][0] != 5 || lag[topic][1] != 0 {
		t.Fatalf("before any commit: lag %v, want 5 on partition 0 and 0 on the empty partition 1", lag[topic])
	}
	g, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{ID: group, Brokers: brokers, Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gen, err := g.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := gen.CommitOffsets(map[string]map[int]int64{topic: {0: 3}}); err != nil {
		t.Fatal(err)
	}
	if lag, err = u.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
	if lag[topic][0] != 2 {
		t.Fatalf("after committing offset 3 of 5: lag %d, want 2", lag[topic][0])
	}
	lagging := rekey.Lagging(lag)
	if !lagging(eventtime.Partition{Topic: topic + " via keyed/4", Partition: 0}) ||
		lagging(eventtime.Partition{Topic: topic + " via keyed/4", Partition: 1}) ||
		lagging(eventtime.Partition{Topic: "keyed", Partition: 0}) {
		t.Fatal("Lagging: want only the streams of raw partition 0")
	}
	if k, ok := rekey.KeyedOfStream(eventtime.Partition{Topic: topic + " via keyed/4", Partition: 0}); !ok || k != 4 {
		t.Fatalf("KeyedOfStream: %d, %v; want keyed partition 4", k, ok)
	}
}

// Stream names a merge stream so that RawOfStream and KeyedOfStream read
// its raw topic and keyed partition back.
func TestStreamNamesRoundTrip(t *testing.T) {
	s := rekey.Stream("raw", 2, "keyed", 7)
	if s.Partition != 2 {
		t.Fatalf("stream %v: raw partition %d, want 2", s, s.Partition)
	}
	if k, ok := rekey.KeyedOfStream(s); !ok || k != 7 {
		t.Fatalf("stream %v: keyed partition %d %v, want 7", s, k, ok)
	}
	if topic, ok := rekey.RawOfStream(s); !ok || topic != "raw" {
		t.Fatalf("stream %v: raw topic %q %v", s, topic, ok)
	}
}
