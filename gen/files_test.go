package gen

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/eval"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest"
)

func TestWriteFilesGzipAndTruth(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.ndjson.gz")
	spec := Spec{Seed: 5, Rate: 20, Sessions: 40, Duration: 15 * time.Minute, Inject: map[string]int{ScenarioReplay: 1, ScenarioSameSubnet: 1}}
	g, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	n, err := WriteFiles(g, path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := ingest.NewDecoder(ingest.FormatJSON)
	sc := bufio.NewScanner(zr)
	lines := 0
	var out []event.Event
	for sc.Scan() {
		var errs []error
		if out, errs = dec.Decode(event.Source{Offset: int64(lines)}, sc.Bytes(), out[:0]); len(errs) > 0 {
			t.Fatalf("line %d: %v", lines+1, errs)
		}
		lines++
	}
	if err := sc.Err(); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if lines != n || n == 0 {
		t.Errorf("%d lines read back, %d written", lines, n)
	}
	truthPath := filepath.Join(dir, "events.truth.json")
	if TruthPath(path) != truthPath {
		t.Errorf("truth path %s, want %s", TruthPath(path), truthPath)
	}
	truth, err := eval.LoadTruth(truthPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(truth) != 2 {
		t.Errorf("%d truth entries, want the replay and the look-alike", len(truth))
	}
}

func TestTruthPathSitsBesideTheEvents(t *testing.T) {
	for in, want := range map[string]string{
		"run/events.ndjson":    "run/events.truth.json",
		"run/events.ndjson.gz": "run/events.truth.json",
		"events.jsonl":         "events.truth.json",
		"capture":              "capture.truth.json",
	} {
		if got := TruthPath(in); got != want {
			t.Errorf("TruthPath(%q) = %q, want %q", in, got, want)
		}
	}
}
