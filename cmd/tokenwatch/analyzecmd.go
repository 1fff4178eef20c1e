package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwatch/tokenwatch/analyze"
	"github.com/tokenwatch/tokenwatch/detect"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
	"github.com/tokenwatch/tokenwatch/pipeline"
	"github.com/tokenwatch/tokenwatch/sli"
	"github.com/tokenwatch/tokenwatch/slo"
)

func analyzeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf configFlags
	fs := newFlags("analyze", "--input FILE|- [--out REPORT.json] [--format json|text]", `
Run the same decoding, redaction guard, SLIs and detectors as the pipeline on a
file of events, without Kafka or ClickHouse: for backfills, incident reviews and
tests. Input is NDJSON (one v1 event a line), OTLP JSON (one batch a line) or an
OTLP protobuf batch; gzip is detected; '-' reads stdin. The same input always
gives the same report. Bad lines are counted by reason and reported on stderr
(first few), never fatal. The config file (--config) supplies the detector
settings, the redaction key and the SLO spec.`, stdout, stderr)
	cf.register(fs)
	input := fs.String("input", "", "events file, or - for stdin (required)")
	out := fs.String("out", "", "write the report here (default: stdout)")
	format := fs.String("format", "json", "report format: json or text")
	inFormat := fs.String("input-format", "auto", "input encoding: auto, json, otlp_json or otlp_proto")
	sloPath := fs.String("slo", "", "SLO spec (default: config slo_file, else the built-in default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *input == "" {
		return usagef("--input is required (a file, or - for stdin)")
	}
	if *format != "json" && *format != "text" {
		return usagef("--format: want json or text, got %q", *format)
	}
	c, err := cf.load()
	if err != nil {
		return err
	}
	spec := slo.Default()
	if *sloPath == "" {
		*sloPath = c.SLOFile
	}
	if *sloPath != "" {
		if spec, err = slo.Load(*sloPath); err != nil {
			return err
		}
	}
	guard, err := redact.New(redact.Config{Key: []byte(c.Redaction.Key), Patterns: c.Redaction.Patterns})
	if err != nil {
		return err
	}
	dc := c.Detect
	dc.RevocationSLO = spec.RevocationThreshold(dc.RevocationSLO) // as the pipeline judges it
	det, err := newReportDetector(dc)
	if err != nil {
		return err
	}
	r, size, err := analyze.OpenInput(*input, os.Stdin)
	if err != nil {
		return err
	}
	defer r.Close()
	rep, err := analyze.Run(ctx, analyze.Options{
		Input: r, Size: size, Format: *inFormat, Progress: analyze.ProgressTo(stderr),
		Detector: det, SLO: spec, Redact: guard, Dedup: pipeline.NewDedup(c.Pipeline),
		Revocation: sli.TrackerConfig{Horizon: c.Pipeline.RevocationHorizon},
		Logger:     slog.New(slog.NewTextHandler(stderr, nil)),
	})
	if err != nil {
		return err
	}
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if *format == "text" {
		err = rep.WriteText(w)
	} else {
		err = rep.WriteJSON(w)
	}
	if err != nil {
		return err
	}
	if *out != "" {
		fmt.Fprintf(stderr, "report written to %s\n", *out)
	}
	return nothingAccepted(rep)
}

// nothingAccepted fails a run that accepted no event (the report is still
// written): an input of the wrong format or entirely malformed must not
// pass a script's check as an empty, clean report. One line says why.
func nothingAccepted(rep *analyze.Report) error {
	ev := rep.Events
	if ev.Accepted > 0 {
		return nil
	}
	if ev.Read == 0 {
		return errors.New("nothing accepted: the input held no events")
	}
	reasons := make([]string, 0, len(ev.RejectedByReason))
	for _, r := range slices.Sorted(maps.Keys(ev.RejectedByReason)) {
		reasons = append(reasons, fmt.Sprintf("%s %d", r, ev.RejectedByReason[r]))
	}
	return fmt.Errorf("nothing accepted: all %d records read were rejected (%s); is --input-format right for this input?", ev.Read, strings.Join(reasons, ", "))
}

// reportDetector runs the detectors for analyze: findings are collected at
// the end, revocation results adapted from the SLI tracker's type.
type reportDetector struct{ e *detect.Engine }

func newReportDetector(cfg detect.Config) (*reportDetector, error) {
	e, err := detect.New(cfg, discardFindings{}, prometheus.NewRegistry())
	if err != nil {
		return nil, err
	}
	return &reportDetector{e: e}, nil
}

func (d *reportDetector) Observe(e *event.Event) { d.e.Observe(e) }
func (d *reportDetector) ObserveRevocation(r sli.Revocation) {
	d.e.ObserveRevocation(detect.FromSLI(r))
}
func (d *reportDetector) Flush() []finding.Finding { return d.e.Flush() }

// discardFindings ignores live updates; analyze reads the final state.
type discardFindings struct{}

func (discardFindings) Finding(finding.Finding) {}
