package store_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/store"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestClusterStatementsParseAndMatchTheGoldenFile: with clickhouse.cluster
// set, every statement migrate runs (local ReplicatedMergeTree tables with
// {shard} and {replica} Keeper paths, Distributed tables over them, the
// materialized view on the local tables, all ON CLUSTER) is parsed by the
// ClickHouse engine's own parser (formatQuery, through the embedded
// engine: a multi-node cluster cannot run here), and equals the golden
// file a reviewer reads. go test ./store -run ClusterStatements -update
// rewrites it.
func TestClusterStatementsParseAndMatchTheGoldenFile(t *testing.T) {
	for _, tc := range []struct {
		golden string
		cfg    config.ClickHouse
	}{
		{"cluster.sql", config.ClickHouse{Database: "tokenwatch", TTLDays: 30, Cluster: "tokenwatch"}},
		{"single.sql", config.ClickHouse{Database: "tokenwatch", TTLDays: 30}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			stmts := store.Statements(tc.cfg)
			got := strings.Join(trimAll(stmts), ";\n\n") + ";\n"
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if got != string(want) {
				t.Errorf("the statements differ from %s (run with -update and review the diff)", path)
			}
			engine := testkit.ClickHouseEngine(t)
			for i, stmt := range stmts {
				out, err := engine.Query("SELECT formatQuery('"+escape(stmt)+"')", "TabSeparatedRaw")
				if err != nil {
					t.Errorf("statement %d does not parse: %v\n%s", i+1, err, stmt)
					continue
				}
				if tc.cfg.Cluster != "" && !strings.Contains(string(out), "ON CLUSTER") {
					t.Errorf("statement %d does not run ON CLUSTER:\n%s", i+1, out)
				}
			}
			if tc.cfg.Cluster == "" {
				return
			}
			all := strings.Join(stmts, "\n")
			for _, want := range []string{
				"ReplicatedMergeTree('/clickhouse/tables/{shard}/tokenwatch/events_local', '{replica}')",
				"ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tokenwatch/findings_local', '{replica}', version)",
				"ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tokenwatch/revocations_local', '{replica}', stored_at)",
				"ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/tokenwatch/sli_minute_local', '{replica}')",
				"TO tokenwatch.sli_minute_local AS",
				"FROM tokenwatch.events_local",
				"ENGINE = Distributed('tokenwatch', 'tokenwatch', events_local,",
				"ENGINE = Distributed('tokenwatch', 'tokenwatch', findings_local, cityHash64(kind, id))",
			} {
				if !strings.Contains(all, want) {
					t.Errorf("no statement has %q", want)
				}
			}
		})
	}
}

func trimAll(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.TrimSpace(s)
	}
	return out
}

func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
}
