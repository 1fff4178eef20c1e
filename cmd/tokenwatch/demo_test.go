package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenwatch/tokenwatch/embedded/chdb"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
)

// TestDemoRunsTwentySecondsAndStoresCleanTraffic runs the README's demo as a
// user would (its own process: the embedded engine is one per process) and
// reads its --summary-json.
func TestDemoRunsTwentySecondsAndStoresCleanTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for 20 s")
	}
	if p, _ := chdb.LibraryPath(""); p == "" || !fileExists(p) {
		testkit.Require(t, "the embedded ClickHouse engine (libchdb.so)", chdb.FetchHint)
	}
	bin := buildBinary(t)
	summary := filepath.Join(t.TempDir(), "summary.json")
	cmd := exec.Command(bin, "demo", "--duration", "20s", "--summary-json", summary,
		"--clickhouse-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "tokenwatch demo summary") {
		t.Fatalf("demo printed no summary:\n%s", out)
	}
	b, err := os.ReadFile(summary)
	if err != nil {
		t.Fatalf("no summary JSON: %v\n%s", err, out)
	}
	var s demoSummary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("summary JSON: %v\n%s", err, b)
	}
	if s.EventsProduced == 0 || s.Stored == 0 || s.StoredInClickHouse == 0 {
		t.Fatalf("demo stored nothing: %+v\n%s", s, out)
	}
	if s.RedactionViolations != 0 {
		t.Fatalf("clean generated traffic gave %d redaction violations", s.RedactionViolations)
	}
	if s.Rejected != 0 {
		t.Fatalf("clean generated traffic had %d rejections: %v", s.Rejected, s.RejectedByReason)
	}
	if uint64(s.Stored) != s.StoredInClickHouse || s.Consumed != s.MessagesProduced {
		t.Fatalf("produced %d messages, consumed %d, pipeline stored %d, ClickHouse holds %d", s.MessagesProduced, s.Consumed, s.Stored, s.StoredInClickHouse)
	}
	t.Logf("demo: %d events stored, findings %v, finding latency p99 %.3fs\n%s", s.Stored, s.Findings, s.FindingLatency.P99, out)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Size() > 0
}
