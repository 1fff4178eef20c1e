package testkit

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func keyedMessages(prefix string, n int) []kafka.Message {
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{
			Key:   fmt.Appendf(nil, "session-%d", i%97),
			Value: fmt.Appendf(nil, "%s-%05d", prefix, i),
		}
	}
	return msgs
}

func values(msgs []kafka.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Value)
	}
	slices.Sort(out)
	return out
}

func TestRealKafkaConsumerGroupReadsEveryMessageAndCommits(t *testing.T) {
	brokers := Kafka(t)
	topic := Topic(t)
	CreateTopic(t, brokers, topic, 6)
	written := keyedMessages("event", 600)
	Produce(t, brokers, topic, written)

	read := ConsumeGroup(t, brokers, topic, topic+"-group", len(written))

	if got, want := values(read), values(written); !slices.Equal(got, want) {
		t.Fatalf("consumer group read %d messages that differ from the %d written", len(got), len(want))
	}
	partitions := make(map[int]bool)
	for _, m := range read {
		partitions[m.Partition] = true
	}
	if len(partitions) != 6 {
		t.Errorf("keyed messages landed in %d partitions, want all 6", len(partitions))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	ends := make([]kafka.OffsetRequest, 6)
	for p := range ends {
		ends[p] = kafka.LastOffsetOf(p)
	}
	listed, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: ends}})
	if err != nil {
		t.Fatalf("listing end offsets of %q: %v", topic, err)
	}
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{
		GroupID: topic + "-group",
		Topics:  map[string][]int{topic: {0, 1, 2, 3, 4, 5}},
	})
	if err != nil {
		t.Fatalf("fetching the group's committed offsets: %v", err)
	}
	commitAt := make(map[int]int64)
	for _, p := range committed.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("committed offset of partition %d: %v", p.Partition, p.Error)
		}
		commitAt[p.Partition] = p.CommittedOffset
	}
	for _, p := range listed.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("end offset of partition %d: %v", p.Partition, p.Error)
		}
		if commitAt[p.Partition] != p.LastOffset {
			t.Errorf("partition %d: committed offset %d, want the end offset %d", p.Partition, commitAt[p.Partition], p.LastOffset)
		}
	}
}

func TestRealKafkaRestartedConsumerGroupResumesAfterCommittedOffsets(t *testing.T) {
	brokers := Kafka(t)
	topic := Topic(t)
	group := topic + "-group"
	CreateTopic(t, brokers, topic, 6)

	before := keyedMessages("before-restart", 300)
	Produce(t, brokers, topic, before)
	if got, want := values(ConsumeGroup(t, brokers, topic, group, len(before))), values(before); !slices.Equal(got, want) {
		t.Fatalf("first member read messages that differ from the %d written before the restart", len(want))
	}

	after := keyedMessages("after-restart", 300)
	Produce(t, brokers, topic, after)
	if got, want := values(ConsumeGroup(t, brokers, topic, group, len(after))), values(after); !slices.Equal(got, want) {
		t.Fatalf("restarted member read %v..., want only the %d messages written after the restart", got[:3], len(want))
	}
}

func TestRealKafkaAutoCreatesUnknownTopicsWithSixPartitions(t *testing.T) {
	if os.Getenv(KafkaBrokersEnv) != "" {
		t.Skipf("%s points at a Kafka whose configuration this test does not own", KafkaBrokersEnv)
	}
	brokers := Kafka(t)
	topic := Topic(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, AllowAutoTopicCreation: true}
	defer w.Close()
	// The first write can race the creation and fail with "unknown topic"; kafka-go retries
	// a few times, and so does this loop.
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = w.WriteMessages(ctx, kafka.Message{Value: []byte("first")}); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("writing to the unknown topic %q: %v", topic, err)
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	if ready, err := topicReady(ctx, client, topic, 6); !ready {
		t.Fatalf("auto-created topic %q is not a ready six-partition topic: %v", topic, err)
	}
}

func TestTopicNamesAreUniqueAndValidForKafka(t *testing.T) {
	valid := regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)
	tests := []struct {
		name string
	}{
		{"plain test name"},
		{"name/with/subtests and spaces: and punctuation!"},
		{"a very long name " + string(slices.Repeat([]byte("x"), 400))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			first, second := Topic(t), Topic(t)
			if first == second {
				t.Errorf("two topics for one test share the name %q", first)
			}
			for _, name := range []string{first, second} {
				if !valid.MatchString(name) {
					t.Errorf("topic name %q is not valid for Kafka", name)
				}
			}
		})
	}
}
