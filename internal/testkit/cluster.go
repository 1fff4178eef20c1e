package testkit

import (
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// KafkaCluster is a KRaft cluster of several nodes (each a broker and a controller) that
// scripts/kafka.sh cluster-start runs for one test, on loopback ports and a state directory of
// its own, for the failover tests that kill and restart a broker. The internal topics have
// replication factor 3 and min.insync.replicas 2 (with three nodes or more).
type KafkaCluster struct {
	// Brokers are the bootstrap addresses of every node.
	Brokers []string
	t       testing.TB
	script  string
	env     []string
}

// StartKafkaCluster starts a cluster of nodes nodes with scripts/kafka.sh cluster-start and stops
// it when the test ends. Without the Kafka 4.4 jars (scripts/kafka.sh fetch) or Java the test is
// skipped, or fails when TOKENWATCH_REQUIRE_COMPONENTS=1.
func StartKafkaCluster(t testing.TB, nodes int) *KafkaCluster {
	t.Helper()
	dir := kafkaDir()
	if _, err := os.Stat(filepath.Join(dir, "libs", kafkaJar)); err != nil {
		Require(t, "Apache Kafka 4.4", "run scripts/kafka.sh fetch")
	}
	if _, err := exec.LookPath("java"); err != nil {
		Require(t, "Java (for Apache Kafka 4.4)", "run scripts/setup.sh --all")
	}
	script, err := findRepoFile("scripts/kafka.sh")
	if err != nil {
		t.Fatal(err)
	}
	base, err := freePortBlock(nodes)
	if err != nil {
		t.Fatal(err)
	}
	c := &KafkaCluster{t: t, script: script, env: append(os.Environ(),
		KafkaDirEnv+"="+dir,
		"KAFKA_CLUSTER_DIR="+t.TempDir(),
		"KAFKA_CLUSTER_PORT="+strconv.Itoa(base),
		"KAFKA_HEAP_OPTS="+kafkaTestHeap,
	)}
	for i := range nodes {
		c.Brokers = append(c.Brokers, "127.0.0.1:"+strconv.Itoa(base+i))
	}
	t.Cleanup(func() { c.run("cluster-stop", "") })
	started := time.Now()
	c.run("cluster-start", "", strconv.Itoa(nodes))
	t.Logf("Kafka 4.4 cluster of %d nodes on %v started in %v", nodes, c.Brokers, time.Since(started).Round(100*time.Millisecond))
	return c
}

// Kill kills node (1-based) with SIGKILL, as a crash.
func (c *KafkaCluster) Kill(node int) {
	c.t.Helper()
	c.run("cluster-stop", strconv.Itoa(node), "KAFKA_SIGNAL=KILL")
}

// Restart starts the nodes that are not running and waits until each serves.
func (c *KafkaCluster) Restart() {
	c.t.Helper()
	c.run("cluster-start", "")
}

func (c *KafkaCluster) run(command, node string, more ...string) {
	c.t.Helper()
	args := []string{c.script, command}
	env := c.env
	for _, m := range more {
		if strings.Contains(m, "=") {
			env = append(env, m)
		} else {
			args = append(args, m)
		}
	}
	if node != "" {
		env = append(env, "KAFKA_NODE="+node)
	}
	cmd := exec.Command("bash", args...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("kafka.sh %s: %v\n%s", command, err, out)
	}
}

// freePortBlock finds a base port b such that b .. b+n-1 (the brokers) and b+100 .. b+100+n-1
// (the controllers, as kafka.sh places them) are free on loopback. It looks below Linux's
// ephemeral range (32768 and up by default), where the other tests' client connections would take
// a port between this check and the broker's bind.
func freePortBlock(n int) (int, error) {
	for range 200 {
		base := 20000 + mrand.IntN(12000-100-n)
		free := true
		for i := range n {
			for _, p := range []int{base + i, base + 100 + i} {
				l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
				if err != nil {
					free = false
					break
				}
				l.Close()
			}
		}
		if free {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no block of %d free loopback ports (and the same +100) found between 20000 and 32000", n)
}
