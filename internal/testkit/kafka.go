package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

const (
	// KafkaBrokersEnv names a running Kafka (comma-separated host:port) that tests use instead
	// of starting their own; .ci/run can start one with scripts/kafka.sh start and share it
	// across every test binary.
	KafkaBrokersEnv = "TOKENWATCH_KAFKA_BROKERS"
	// KafkaDirEnv is the cache that scripts/kafka.sh fetch fills (libs/ holds the jars).
	KafkaDirEnv = "TOKENWATCH_KAFKA_DIR"

	// kafkaJar is the jar whose presence means the Kafka 4.4 runtime has been fetched.
	kafkaJar = "kafka_2.13-4.4.0.jar"
	// kafkaStartTimeout is generous: Kafka starts in 5-10 s here, but the machine's two cores
	// are shared with compilers and other test binaries.
	kafkaStartTimeout = 2 * time.Minute
	// kafkaTestHeap keeps several test binaries' brokers, running at once under go test, from
	// crowding the machine.
	kafkaTestHeap = "-Xms128m -Xmx512m"
)

// sharedKafka is the one broker of this test binary. It is package state on purpose: starting
// Kafka costs seconds, so every test in the binary shares it, and go test offers no hook at the
// binary's exit short of a TestMain in every package. The broker is not stopped by a Cleanup (the
// first test's Cleanup would stop it under the later tests); the kernel kills it when the binary
// exits (see ownProcess), and the next binary removes its data directory.
var sharedKafka struct {
	once    sync.Once
	brokers []string
	err     error
}

// Kafka returns the bootstrap addresses of a real Apache Kafka 4.4 for integration tests: the
// cluster named by TOKENWATCH_KAFKA_BROKERS if set, else a single KRaft node that this test
// binary starts from the jars fetched by scripts/kafka.sh fetch, on free loopback ports with its
// data in a temporary directory. Without either, the test is skipped (or fails when
// TOKENWATCH_REQUIRE_COMPONENTS=1). Tests sharing the broker should use their own topics (Topic)
// and consumer group ids.
func Kafka(t testing.TB) (brokers []string) {
	t.Helper()
	if env := os.Getenv(KafkaBrokersEnv); env != "" {
		return splitBrokers(env)
	}
	dir := kafkaDir()
	if _, err := os.Stat(filepath.Join(dir, "libs", kafkaJar)); err != nil {
		Require(t, "Apache Kafka 4.4", fmt.Sprintf(
			"no %s in %s/libs: run scripts/kafka.sh fetch, or set %s to a running Kafka",
			kafkaJar, dir, KafkaBrokersEnv))
	}
	sharedKafka.once.Do(func() {
		started := time.Now()
		sharedKafka.brokers, sharedKafka.err = startKafka(dir)
		if sharedKafka.err == nil {
			t.Logf("Apache Kafka 4.4 started at %v in %v", sharedKafka.brokers, time.Since(started).Round(100*time.Millisecond))
		}
	})
	if sharedKafka.err != nil {
		t.Fatalf("starting Apache Kafka 4.4: %v", sharedKafka.err)
	}
	return slices.Clone(sharedKafka.brokers)
}

func splitBrokers(list string) []string {
	var brokers []string
	for _, b := range strings.Split(list, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	return brokers
}

// kafkaDir is the same cache directory scripts/kafka.sh uses.
func kafkaDir() string {
	if dir := os.Getenv(KafkaDirEnv); dir != "" {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "tokenwatch", "kafka")
}

// startKafka runs scripts/kafka.sh run, which formats the storage and execs the broker, so the
// process started here is the JVM itself and stays owned by this binary.
func startKafka(dir string) ([]string, error) {
	script, err := findRepoFile("scripts/kafka.sh")
	if err != nil {
		return nil, err
	}
	ports, err := freeLoopbackPorts(2)
	if err != nil {
		return nil, err
	}
	stateDir, err := makeOwnedTempDir("tokenwatch-kafka-*")
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(stateDir, "kafka.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating the Kafka log: %w", err)
	}
	cmd := exec.Command("bash", script, "run")
	cmd.Env = append(os.Environ(),
		KafkaDirEnv+"="+dir,
		"KAFKA_STATE_DIR="+stateDir,
		"KAFKA_PORT="+strconv.Itoa(ports[0]),
		"KAFKA_CONTROLLER_PORT="+strconv.Itoa(ports[1]),
		"KAFKA_HEAP_OPTS="+kafkaTestHeap,
	)
	proc, err := startOwned(cmd, logFile)
	if err != nil {
		return nil, err
	}

	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	ctx, cancel := context.WithTimeout(context.Background(), kafkaStartTimeout)
	defer cancel()
	if err := waitForKafka(ctx, addr, proc); err != nil {
		proc.kill()
		return nil, fmt.Errorf("%w; last lines of %s:\n%s", err, logPath, tailFile(logPath, 30))
	}
	return []string{addr}, nil
}

// waitForKafka polls until the broker answers a metadata request listing itself: the listener
// can be bound before the broker is unfenced and serves.
func waitForKafka(ctx context.Context, addr string, proc *ownedProcess) error {
	client := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 2 * time.Second}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil && len(md.Brokers) > 0 {
			return nil
		}
		if err == nil {
			err = errors.New("metadata lists no broker yet")
		}
		lastErr = err
		select {
		case <-proc.done:
			return fmt.Errorf("Kafka exited during start-up: %v", proc.err)
		case <-ctx.Done():
			return fmt.Errorf("Kafka did not serve on %s within %v (last error: %v)", addr, kafkaStartTimeout, lastErr)
		case <-tick.C:
		}
	}
}

// Topic returns a topic name of its own for this test, so that tests sharing one broker never
// read each other's messages: the test's name made safe for Kafka, and a random suffix.
func Topic(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("test-")
	for _, r := range t.Name() {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
		if b.Len() >= 180 {
			break
		}
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatalf("making a unique topic name: %v", err)
	}
	return b.String() + "-" + hex.EncodeToString(suffix)
}

// CreateTopic creates topic with the given number of partitions (one replica) and waits until
// every partition has a leader, so that a test's first write does not race the creation.
func CreateTopic(t testing.TB, brokers []string, topic string, partitions int) {
	t.Helper()
	CreateReplicatedTopic(t, brokers, topic, partitions, 1, 0)
}

// CreateReplicatedTopic is CreateTopic with replication factor rf and, when minInsync > 0,
// min.insync.replicas (on a KafkaCluster).
func CreateReplicatedTopic(t testing.TB, brokers []string, topic string, partitions, rf, minInsync int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	tc := kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: rf}
	if minInsync > 0 {
		tc.ConfigEntries = []kafka.ConfigEntry{{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(minInsync)}}
	}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
	if err != nil {
		t.Fatalf("creating topic %q with %d partitions on %v: %v", topic, partitions, brokers, err)
	}
	if err := resp.Errors[topic]; err != nil {
		t.Fatalf("creating topic %q with %d partitions on %v: %v", topic, partitions, brokers, err)
	}
	for {
		ready, err := topicReady(ctx, client, topic, partitions)
		if ready {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %q has no leader for all %d partitions after 30s (last error: %v)", topic, partitions, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func topicReady(ctx context.Context, client *kafka.Client, topic string, partitions int) (bool, error) {
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return false, err
	}
	for _, tp := range md.Topics {
		if tp.Name != topic {
			continue
		}
		if tp.Error != nil {
			return false, tp.Error
		}
		if len(tp.Partitions) != partitions {
			return false, fmt.Errorf("%d of %d partitions known", len(tp.Partitions), partitions)
		}
		for _, p := range tp.Partitions {
			if p.Error != nil || p.Leader.Host == "" {
				return false, fmt.Errorf("partition %d has no leader yet (%v)", p.ID, p.Error)
			}
		}
		return true, nil
	}
	return false, errors.New("topic not in metadata yet")
}
