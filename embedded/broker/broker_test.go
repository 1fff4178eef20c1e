package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/internal/testkit"
)

func startBroker(t *testing.T, opts Options) *Broker {
	t.Helper()
	b, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting the embedded broker: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

func numberedMessages(prefix string, n int) []kafka.Message {
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{
			Key:   fmt.Appendf(nil, "session-%d", i%1013),
			Value: fmt.Appendf(nil, "%s-%05d", prefix, i),
		}
	}
	return msgs
}

func sortedValues(msgs []kafka.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Value)
	}
	slices.Sort(out)
	return out
}

func partitionCount(t *testing.T, addrs []string, topic string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(addrs...)}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatalf("reading metadata of %q: %v", topic, err)
	}
	for _, tp := range md.Topics {
		if tp.Name == topic && tp.Error == nil {
			return len(tp.Partitions)
		}
	}
	return 0
}

func TestConsumerGroupResumesFromCommittedOffsetsAfterRestart(t *testing.T) {
	const topic = "auth-events"
	b := startBroker(t, Options{Partitions: 6, Topics: []string{topic}})
	addrs := b.Addrs()
	written := numberedMessages("event", 10_000)
	testkit.Produce(t, addrs, topic, written)

	// The first member stops part-way and commits; the restarted member must read exactly
	// the rest: nothing lost, nothing read twice.
	first := testkit.ConsumeGroup(t, addrs, topic, "tokenwatch", 4_000)
	rest := testkit.ConsumeGroup(t, addrs, topic, "tokenwatch", 6_000)

	seen := make(map[string]bool, len(written))
	for _, m := range append(first, rest...) {
		if seen[string(m.Value)] {
			t.Fatalf("message %s was read again after the restart", m.Value)
		}
		seen[string(m.Value)] = true
	}
	if got, want := sortedValues(append(first, rest...)), sortedValues(written); !slices.Equal(got, want) {
		t.Fatalf("the two members read %d distinct messages, want the %d written", len(got), len(want))
	}
	partitions := make(map[int]bool)
	for _, m := range append(first, rest...) {
		partitions[m.Partition] = true
	}
	if len(partitions) != 6 {
		t.Errorf("keyed messages were read from %d partitions, want all 6", len(partitions))
	}

	// A member joining after everything was committed finds nothing old to read.
	latest := numberedMessages("after-everything-committed", 10)
	testkit.Produce(t, addrs, topic, latest)
	if got, want := sortedValues(testkit.ConsumeGroup(t, addrs, topic, "tokenwatch", 10)), sortedValues(latest); !slices.Equal(got, want) {
		t.Fatalf("after full commit the group read %v, want only the 10 new messages", got)
	}
}

func TestTopicsCreatedOnFirstWriteGetTheConfiguredPartitions(t *testing.T) {
	tests := []struct {
		name       string
		partitions int
		want       int
	}{
		{"zero partitions means the default six", 0, DefaultPartitions},
		{"an explicit count is honoured", 3, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, Options{Partitions: tc.partitions})
			w := &kafka.Writer{Addr: kafka.TCP(b.Addrs()...), Topic: "created-on-write", AllowAutoTopicCreation: true}
			defer w.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("first")}); err != nil {
				t.Fatalf("writing to a new topic: %v", err)
			}
			if got := partitionCount(t, b.Addrs(), "created-on-write"); got != tc.want {
				t.Errorf("topic created on first write has %d partitions, want %d", got, tc.want)
			}
		})
	}
}

func TestBrokerRestartedOnItsDataDirKeepsMessagesAndCommittedOffsets(t *testing.T) {
	const topic = "auth-events"
	dir := t.TempDir()
	b, err := Start(context.Background(), Options{Topics: []string{topic}, DataDir: dir})
	if err != nil {
		t.Fatalf("starting the embedded broker: %v", err)
	}
	addrs := b.Addrs()
	testkit.Produce(t, addrs, topic, numberedMessages("before-restart", 100))
	testkit.ConsumeGroup(t, addrs, topic, "tokenwatch", 60)
	b.Close()

	restarted := startBroker(t, Options{Topics: []string{topic}, DataDir: dir})
	got := testkit.ConsumeGroup(t, restarted.Addrs(), topic, "tokenwatch", 40)
	all := sortedValues(numberedMessages("before-restart", 100))
	for _, m := range got {
		if _, found := slices.BinarySearch(all, string(m.Value)); !found {
			t.Fatalf("restarted broker returned %s, which was never written", m.Value)
		}
	}
	if len(got) != 40 {
		t.Fatalf("restarted broker gave the group %d messages, want the 40 not committed", len(got))
	}
}

func TestStartRefusesOptionsThatCannotMakeABroker(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		field string
	}{
		{"negative partition count", Options{Partitions: -1}, "Partitions"},
		{"port beyond the TCP range", Options{Port: 70000}, "Port"},
		{"negative port", Options{Port: -5}, "Port"},
		{"blank topic name", Options{Topics: []string{"auth-events", " "}}, "Topics[1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Start(context.Background(), tc.opts)
			if err == nil {
				b.Close()
				t.Fatalf("Start accepted %+v", tc.opts)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name the field %s", err, tc.field)
			}
		})
	}
}

func TestStartListensOnTheRequestedLoopbackPort(t *testing.T) {
	ports, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, Options{Port: ports})
	if got, want := b.Addrs(), []string{fmt.Sprintf("127.0.0.1:%d", ports)}; !slices.Equal(got, want) {
		t.Errorf("Addrs() = %v, want %v", got, want)
	}
}
