package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
)

// buildBinary compiles tokenwatch once per test binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tokenwatch")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func engineCount(t *testing.T, sql string) int {
	t.Helper()
	out, err := testkit.ClickHouseEngine(t).Query(sql, "TabSeparated")
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("%s: %q: %v", sql, out, err)
	}
	return n
}

func produceEvents(t *testing.T, brokers []string, topic string, from, n int) {
	t.Helper()
	base := time.Now().UTC().Add(-time.Hour)
	msgs := make([]kafka.Message, 0, n)
	for i := from; i < from+n; i++ {
		e := event.Event{TS: base.Add(time.Duration(i) * time.Millisecond), Kind: event.KindValidate, Outcome: event.OK,
			Service: fmt.Sprintf("svc-%d", i%5), TokenID: fmt.Sprintf("%016x", i), SessionID: fmt.Sprintf("%012x", i%997),
			LatencyMS: 1.5, HasLatency: true, RequestID: fmt.Sprintf("req-%d", i)}
		msgs = append(msgs, kafka.Message{Key: []byte(e.SessionID), Value: ingest.AppendJSON(nil, &e)})
	}
	testkit.Produce(t, brokers, topic, msgs)
}

// TestSIGKILLMidStreamLosesAndDuplicatesNothing kills `tokenwatch run` with
// SIGKILL several times while it consumes, restarting it each time. The
// stored events must equal the produced ones: none lost, none twice.
func TestSIGKILLMidStreamLosesAndDuplicatesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it several times")
	}
	brokers := testkit.Kafka(t)
	topic := testkit.Topic(t)
	testkit.CreateTopic(t, brokers, topic, 4)
	addr, db := testkit.ClickHouse(t)
	bin := buildBinary(t)
	common := []string{
		"--set", "kafka.brokers=" + strings.Join(brokers, ","), "--set", "kafka.topics=" + topic,
		"--set", "kafka.group_id=crash-" + topic, "--set", "kafka.max_wait=50ms",
		"--set", "clickhouse.addr=" + addr, "--set", "clickhouse.database=" + db,
		"--set", "clickhouse.batch_rows=1500", "--set", "clickhouse.batch_interval=100ms",
		"--set", "metrics.listen=127.0.0.1:0", "--set", "redaction.key=test",
	}
	if out, err := exec.Command(bin, append([]string{"migrate"}, common...)...).CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	const total = 60000
	produceEvents(t, brokers, topic, 0, total/2)
	stored := func() int { return engineCount(t, "SELECT count() FROM "+db+".events") }

	start := func() (*exec.Cmd, *bytes.Buffer) {
		var logs bytes.Buffer
		cmd := exec.Command(bin, append([]string{"run"}, common...)...)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &logs
	}
	kills := 0
	for round := 0; round < 4; round++ {
		before := stored()
		cmd, logs := start()
		if round == 1 {
			produceEvents(t, brokers, topic, total/2, total/2) // more arrives while it runs
		}
		deadline := time.Now().Add(90 * time.Second)
		for stored() < before+3000 && stored() < total && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if stored() >= total {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			break
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		kills++
		if stored() == before {
			t.Fatalf("round %d stored nothing before the kill; logs:\n%s", round, logs.String())
		}
	}
	// The last run finishes the stream and stops gracefully.
	cmd, logs := start()
	deadline := time.Now().Add(2 * time.Minute)
	for stored() < total && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // anything extra (a duplicate) would land now
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("graceful stop exited with %v; logs:\n%s", err, logs.String())
	}
	if kills < 2 {
		t.Fatalf("only %d SIGKILLs happened mid-stream; the test proves nothing", kills)
	}
	if n := stored(); n != total {
		t.Fatalf("stored %d events after %d SIGKILLs, produced %d", n, kills, total)
	}
	if n := engineCount(t, "SELECT uniqExact(request_id) FROM "+db+".events"); n != total {
		t.Fatalf("%d distinct events stored, want %d", n, total)
	}
	if n := engineCount(t, "SELECT count() FROM (SELECT partition, offset FROM "+db+".events GROUP BY partition, offset HAVING count() > 1)"); n != 0 {
		t.Fatalf("%d offsets stored twice", n)
	}
	t.Logf("%d SIGKILLs, %d events stored exactly once", kills, total)
	_ = os.Remove(bin)
}
