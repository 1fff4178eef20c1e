package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestMigratePrintShowsTheClusterStatementsWithoutConnecting: an operator
// reviews what migrate would run on a cluster; nothing listens at the
// configured address, and nothing needs to.
func TestMigratePrintShowsTheClusterStatementsWithoutConnecting(t *testing.T) {
	out, err := exec.Command(buildBinary(t), "migrate", "--print", "--set", "clickhouse.addr=127.0.0.1:1",
		"--set", "clickhouse.cluster=prod", "--set", "clickhouse.database=tw").CombinedOutput()
	if err != nil {
		t.Fatalf("migrate --print: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{
		"CREATE DATABASE IF NOT EXISTS tw ON CLUSTER 'prod';",
		"ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/tw/events_local', '{replica}')",
		"ENGINE = Distributed('prod', 'tw', findings_local, cityHash64(kind, id));",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q in:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "ON CLUSTER 'prod'"); n != strings.Count(s, ";\n\n") {
		t.Errorf("%d statements, %d of them ON CLUSTER", strings.Count(s, ";\n\n"), n)
	}
}
