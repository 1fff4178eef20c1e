package alerts

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokenwatch/tokenwatch/slo"
)

var update = flag.Bool("update", false, "rewrite the golden rule files and deploy/prometheus/rules from the code")

// customSpec is a spec unlike the default: a 28-day window and a 99.5 %
// target, so the golden files show the factors scaling with both.
const customSpec = `
slos:
  - name: checkout-validation
    sli: validation_good_ratio
    target: 0.995
    window: 28d
    team: identity
    bad: [error]
  - name: fast-revocation
    sli: revocation_propagation
    target: 0.999
    window: 28d
    threshold_seconds: 30
    team: security
`

func goldenSpecs(t *testing.T) map[string]*slo.Spec {
	t.Helper()
	custom, err := slo.Parse([]byte(customSpec))
	if err != nil {
		t.Fatalf("custom spec: %v", err)
	}
	return map[string]*slo.Spec{"default": slo.Default(), "custom-28d": custom}
}

// compareDir checks that dir holds exactly the rendered files, or rewrites
// it under -update.
func compareDir(t *testing.T, dir string, files RuleFiles) {
	t.Helper()
	rendered, err := files.Render()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		old, _ := filepath.Glob(filepath.Join(dir, "*.yml"))
		for _, p := range old {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := files.WriteDir(dir); err != nil {
			t.Fatal(err)
		}
		return
	}
	onDisk, err := filepath.Glob(filepath.Join(dir, "*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range onDisk {
		if _, ok := rendered[filepath.Base(p)]; !ok {
			t.Errorf("%s is not generated any more; run go test ./alerts -update", p)
		}
	}
	for name, want := range rendered {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v; run go test ./alerts -update", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s drifted from what the code generates; run go test ./alerts -update and review the diff", filepath.Join(dir, name))
		}
	}
}

func TestGeneratedRulesMatchGoldenFiles(t *testing.T) {
	for name, spec := range goldenSpecs(t) {
		t.Run(name, func(t *testing.T) {
			files, err := Rules(spec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			compareDir(t, filepath.Join("testdata", "golden", name), files)
		})
	}
}

func TestCommittedDeployRulesMatchTheDefaultSpec(t *testing.T) {
	files, err := Rules(slo.Default(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	compareDir(t, filepath.Join("..", "deploy", "prometheus", "rules"), files)
}
