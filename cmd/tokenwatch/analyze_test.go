package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestAnalyzeExitsOneWhenNothingWasAccepted: events in a shape analyze does
// not read (here a vendor's event, not tokenwatch's), or an empty input,
// must fail a script's check, with one line saying why; the report is
// still written.
func TestAnalyzeExitsOneWhenNothingWasAccepted(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, input, want string
	}{
		{"every line rejected", `{"type":"LOGIN","time":1700000000000,"realmId":"acme","clientId":"web"}` + "\n" + `{"date":"2026-12-07T10:00:00Z","type":"s"}` + "\n",
			"nothing accepted: all 2 records read were rejected ("},
		{"empty input", "", "nothing accepted: the input held no events"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".ndjson")
			if err := os.WriteFile(in, []byte(tc.input), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "analyze", "--input", in)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v, want 1\nstderr:\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, stderr.String())
			}
			if !strings.Contains(stdout.String(), `"accepted": 0`) && !strings.Contains(stdout.String(), `"accepted":0`) {
				t.Errorf("the report was not written to stdout:\n%.300s", stdout.String())
			}
		})
	}
}
