package dashboards

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite deploy/grafana from the generator")

// deployDir is where the committed, generated Grafana files live.
var deployDir = filepath.Join("..", "deploy", "grafana")

func TestCommittedGrafanaFilesMatchTheGenerator(t *testing.T) {
	if *update {
		written, err := WriteDir(deployDir, Options{})
		if err != nil {
			t.Fatalf("updating %s: %v", deployDir, err)
		}
		t.Logf("wrote %d files", len(written))
	}
	files, err := Files(Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(deployDir, filepath.FromSlash(name)))
		if err != nil {
			t.Errorf("%s: %v (run `go test ./dashboards -update`)", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("deploy/grafana/%s differs from what the generator makes; run `go test ./dashboards -update` and review the diff", name)
		}
	}
	// A board that the generator no longer makes must not linger in the
	// directory Grafana loads.
	committed, err := filepath.Glob(filepath.Join(deployDir, DashboardsDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range committed {
		name := filepath.ToSlash(filepath.Join(DashboardsDir, filepath.Base(path)))
		if _, ok := files[name]; !ok {
			t.Errorf("deploy/grafana/%s is not generated any more; delete it", name)
		}
	}
}
