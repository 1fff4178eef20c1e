// Package eval scores detections against the generator's ground truth:
// per finding kind, true and false positives, misses, precision, recall and
// detection latency. It lives apart from gen so that scoring a report never
// needs the generator, only the truth file gen wrote beside the events.
package eval

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tokenwatch/tokenwatch/finding"
)

// Truth is one injected scenario instance: an attack the detectors should
// report, or a look-alike (Attack false) that resembles Kind and must not be
// reported. Only the identifying fields that apply to the scenario are set.
type Truth struct {
	Kind      finding.Kind `json:"kind"`
	Scenario  string       `json:"scenario"`
	Attack    bool         `json:"attack"`
	TokenID   string       `json:"token_id,omitempty"`
	SessionID string       `json:"session_id,omitempty"`
	FamilyID  string       `json:"family_id,omitempty"`
	Subject   string       `json:"subject,omitempty"`
	ClientID  string       `json:"client_id,omitempty"`
	Service   string       `json:"service,omitempty"`
	Kid       string       `json:"kid,omitempty"`
	// Start is the timestamp of the first event that makes the incident
	// visible; detection latency is measured from it.
	Start time.Time `json:"start"`
}

// truthFile is the on-disk shape, an object so the file can grow fields.
type truthFile struct {
	Truth []Truth `json:"truth"`
}

// WriteTruth writes truth as {"truth":[...]}, indented for people who diff it.
func WriteTruth(w io.Writer, truth []Truth) error {
	if truth == nil {
		truth = []Truth{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(truthFile{Truth: truth}); err != nil {
		return fmt.Errorf("write truth: %w", err)
	}
	return nil
}

// ReadTruth reads a {"truth":[...]} document and checks every entry names a
// kind, so a truncated or foreign file fails here rather than scoring zero.
func ReadTruth(r io.Reader) ([]Truth, error) {
	var f truthFile
	if err := json.NewDecoder(r).Decode(&f); err != nil {
		return nil, fmt.Errorf("read truth: %w", err)
	}
	for i, t := range f.Truth {
		if t.Kind == "" {
			return nil, fmt.Errorf("read truth: entry %d (scenario %q) has no kind", i, t.Scenario)
		}
	}
	return f.Truth, nil
}

// LoadTruth reads the truth file at path.
func LoadTruth(path string) ([]Truth, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load truth: %w", err)
	}
	defer f.Close()
	t, err := ReadTruth(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// reportFindings is the part of the analyze report eval reads: everything
// else in the report (events, slis) is ignored.
type reportFindings struct {
	Findings *[]finding.Finding `json:"findings"`
}

// ReadFindings reads the findings array of an analyze report (a JSON object
// with a top-level "findings" array). A report without that key is an error:
// an empty array is a valid report with nothing found, a missing one is not
// a report.
func ReadFindings(r io.Reader) ([]finding.Finding, error) {
	var rep reportFindings
	if err := json.NewDecoder(r).Decode(&rep); err != nil {
		return nil, fmt.Errorf("read findings: %w", err)
	}
	if rep.Findings == nil {
		return nil, fmt.Errorf("read findings: no top-level \"findings\" array")
	}
	return *rep.Findings, nil
}

// LoadFindings reads the findings of the analyze report at path.
func LoadFindings(path string) ([]finding.Finding, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load findings: %w", err)
	}
	defer f.Close()
	fs, err := ReadFindings(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return fs, nil
}
