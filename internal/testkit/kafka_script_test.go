package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestKafkaScriptStartsReportsAndStopsABackgroundBroker runs scripts/kafka.sh the way a developer
// or .ci/run does (start, status, stop), on ports and a state directory of its own.
func TestKafkaScriptStartsReportsAndStopsABackgroundBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kafka of its own; skipped with -short")
	}
	dir := kafkaDir()
	if _, err := os.Stat(filepath.Join(dir, "libs", kafkaJar)); err != nil {
		Require(t, "Apache Kafka 4.4", "run scripts/kafka.sh fetch")
	}
	script, err := findRepoFile("scripts/kafka.sh")
	if err != nil {
		t.Fatal(err)
	}
	ports, err := freeLoopbackPorts(2)
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	env := append(os.Environ(),
		KafkaDirEnv+"="+dir,
		"KAFKA_STATE_DIR="+t.TempDir(),
		"KAFKA_PORT="+strconv.Itoa(ports[0]),
		"KAFKA_CONTROLLER_PORT="+strconv.Itoa(ports[1]),
		"KAFKA_HEAP_OPTS="+kafkaTestHeap,
	)
	run := func(command string) (string, int) {
		cmd := exec.Command("bash", script, command)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		if err != nil {
			t.Fatalf("running kafka.sh %s: %v", command, err)
		}
		return string(out), 0
	}
	t.Cleanup(func() { run("stop") })

	started := time.Now()
	if out, code := run("start"); code != 0 || !strings.Contains(out, "serving on "+addr) {
		t.Fatalf("kafka.sh start exited %d:\n%s", code, out)
	}
	t.Logf("kafka.sh start took %v", time.Since(started).Round(100*time.Millisecond))
	if out, code := run("status"); code != 0 || !strings.Contains(out, "running") {
		t.Fatalf("kafka.sh status of a started broker exited %d:\n%s", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := (&kafka.Client{Addr: kafka.TCP(addr)}).Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil || len(md.Brokers) != 1 || fmt.Sprintf("%s:%d", md.Brokers[0].Host, md.Brokers[0].Port) != addr {
		t.Fatalf("broker started by kafka.sh does not advertise %s: %+v, %v", addr, md, err)
	}

	if out, code := run("stop"); code != 0 {
		t.Fatalf("kafka.sh stop exited %d:\n%s", code, out)
	}
	if out, code := run("status"); code != 1 {
		t.Fatalf("kafka.sh status of a stopped broker exited %d, want 1:\n%s", code, out)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("something still answers on %s after kafka.sh stop", addr)
	}
}
