// Package analyze is `tokenwatch analyze`: the pipeline's decoding,
// redaction, SLIs and detectors run over a file of events, with neither Kafka
// nor ClickHouse, for backfills, incident reviews and tests.
//
// Input: NDJSON (one message per line, each a v1 JSON event or, with
// --input-format auto or otlp_json, an OTLP/JSON logs batch as the
// Collector's file exporter writes one per line), or OTLP protobuf: the
// whole file is one ExportLogsServiceRequest (equivalently one LogsData; the
// two share their wire form). gzip is recognised by its magic bytes. Auto
// reads protobuf when the first non-blank byte is not '{'.
//
// Events are processed in event time: the revocation tracker holds the whole
// file in its reorder buffer (lateness unbounded), so the report does not
// depend on the order of lines, and a revoke near the end of the file is
// marked truncated rather than guessed at.
//
// The report is deterministic: it has no wall-clock field, maps are written
// with sorted keys and lists are sorted. One caveat: values the redaction
// guard replaces are keyed hashes, and with no configured key the guard
// draws a random one per run, so give it a key (Options.Redact) when reports
// must compare equal across runs of a file holding leaked credentials.
package analyze

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
	"github.com/tokenwatch/tokenwatch/sli"
	"github.com/tokenwatch/tokenwatch/slo"
)

// Detector is what analyze needs of the detectors: events in, final
// revocation results in, findings out at the end. Declared here so analyze
// builds without package detect; the caller passes the real one.
type Detector interface {
	Observe(e *event.Event)
	ObserveRevocation(r sli.Revocation)
	Flush() []finding.Finding
}

// Options configure one run. Input is required; the rest have defaults.
type Options struct {
	Input io.Reader
	// Size is the input's size in bytes for the progress bar; 0 if unknown.
	Size int64
	// Format is the input encoding: auto (default), json, otlp_json or
	// otlp_proto.
	Format string
	// Progress receives a progress bar; nil draws none. Pass a terminal only.
	Progress io.Writer
	// Detector finds incidents; nil runs no detectors (findings stay empty).
	Detector Detector
	// SLO classifies validations; nil is slo.Default().
	SLO *slo.Spec
	// Redact is the redaction guard; nil is a guard with a random key and
	// the built-in rules only.
	Redact *redact.Guard
	// Revocation bounds the propagation tracker; its Lateness is ignored
	// (analyze orders the whole file). Zero fields take the defaults.
	Revocation sli.TrackerConfig
	// Dedup drops copies of events already read (a producer retry, a
	// redelivery), as the pipeline does; nil keeps every event.
	Dedup interface{ Seen(e *event.Event) bool }
	// MaxLineBytes bounds one line; longer lines are rejected. Default 16 MiB.
	MaxLineBytes int
	// Logger receives one warning per bad line (the first MaxErrorLines);
	// nil logs nothing.
	Logger *slog.Logger
}

// Reasons analyze adds to the decoder's for lines it cannot hand over.
const (
	ReasonLineTooLong ingest.Reason = "line_too_long"
)

// Run analyzes the input and returns the report. Bad lines are counted and
// reported, never fatal; only failing to read the input is an error.
func Run(ctx context.Context, opt Options) (*Report, error) {
	if opt.Input == nil {
		return nil, errors.New("analyze: no input")
	}
	format, err := parseFormat(opt.Format)
	if err != nil {
		return nil, err
	}
	guard := opt.Redact
	if guard == nil {
		if guard, err = redact.New(redact.Config{}); err != nil {
			return nil, fmt.Errorf("analyze: %w", err)
		}
	}
	agg, err := sli.NewAggregator(sli.AggregatorConfig{SLO: opt.SLO})
	if err != nil {
		return nil, fmt.Errorf("analyze: %w", err)
	}
	trackerCfg := opt.Revocation
	trackerCfg.Lateness = time.Duration(math.MaxInt64)
	trackerCfg.MaxBuffered = math.MaxInt
	tracker, err := sli.NewTracker(trackerCfg)
	if err != nil {
		return nil, fmt.Errorf("analyze: %w", err)
	}

	a := &run{
		opt:     opt,
		guard:   guard,
		agg:     agg,
		tracker: tracker,
		report: &Report{Events: Events{
			RejectedByReason:             map[string]int64{},
			RedactionViolationsByEmitter: map[string]int64{},
		}},
	}
	tracker.OnResult(func(r sli.Revocation) {
		a.revocations = append(a.revocations, r)
		if opt.Detector != nil {
			opt.Detector.ObserveRevocation(r)
		}
	})

	var prog *progress
	if opt.Progress != nil {
		prog = newProgress(opt.Progress, opt.Size)
	}
	in, err := openInput(&countingReader{r: opt.Input, p: prog})
	if err != nil {
		return nil, fmt.Errorf("analyze: %w", err)
	}
	if format == formatAuto {
		format = sniffFile(in)
	}
	if format == ingest.FormatOTLPProto {
		err = a.readProto(in)
	} else {
		err = a.readLines(ctx, in, format)
	}
	if prog != nil {
		prog.done()
	}
	if err != nil {
		return nil, fmt.Errorf("analyze: %w", err)
	}
	return a.finish(), nil
}

// formatAuto is Options.Format "auto": decided once per file by sniffFile,
// then per line by the decoder (v1 JSON or OTLP/JSON).
const formatAuto ingest.Format = 0

func parseFormat(s string) (ingest.Format, error) {
	switch s {
	case "", "auto":
		return formatAuto, nil
	}
	f, err := ingest.ParseFormat(s)
	if err != nil {
		return 0, fmt.Errorf("analyze: input format: %w", err)
	}
	return f, nil
}

// sniffFile tells an NDJSON file (first non-blank byte '{') from an OTLP
// protobuf one.
func sniffFile(in interface{ Peek(int) ([]byte, error) }) ingest.Format {
	for n := 64; ; n *= 2 {
		head, err := in.Peek(n)
		if t := bytes.TrimLeft(head, " \t\r\n"); len(t) > 0 {
			if t[0] == '{' {
				return ingest.FormatAuto
			}
			return ingest.FormatOTLPProto
		}
		if err != nil || n >= 1<<20 {
			return ingest.FormatAuto // blank: nothing to decode either way
		}
	}
}

// run is the state of one Run.
type run struct {
	opt         Options
	guard       *redact.Guard
	agg         *sli.Aggregator
	tracker     *sli.Tracker
	report      *Report
	revocations []sli.Revocation
	events      []event.Event
}

func (a *run) readLines(ctx context.Context, in io.Reader, format ingest.Format) error {
	// In a line-oriented file each line is JSON, so auto only chooses between
	// v1 JSON and OTLP/JSON; the decoder's own auto would take a line that is
	// not JSON at all for protobuf and report the wrong problem.
	jsonDec, err := ingest.NewDecoder(ingest.FormatJSON)
	if err != nil {
		return err
	}
	otlpDec, err := ingest.NewDecoder(ingest.FormatOTLPJSON)
	if err != nil {
		return err
	}
	decoderFor := func(line []byte) *ingest.Decoder {
		switch {
		case format == ingest.FormatOTLPJSON:
			return otlpDec
		case format == ingest.FormatAuto && isOTLPJSON(line):
			return otlpDec
		}
		return jsonDec
	}
	max := a.opt.MaxLineBytes
	if max <= 0 {
		max = 16 << 20
	}
	lines := &lineReader{r: bufioOf(in), max: max}
	for {
		line, n, tooLong, err := lines.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("stopped at line %d: %w", n, err)
			}
		}
		if tooLong {
			a.reject(ReasonLineTooLong, fmt.Sprintf("line %d: is longer than %d bytes; want one event or OTLP batch per line (%s)", n, max, ReasonLineTooLong))
			continue
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue // blank lines separate nothing and are not messages
		}
		a.decode(decoderFor(line), event.Source{Offset: n}, line)
	}
}

// isOTLPJSON reports whether a JSON line is an OTLP/JSON logs batch: an
// object whose first key is resourceLogs (as protojson writes it) or
// resource_logs.
func isOTLPJSON(line []byte) bool {
	t := bytes.TrimLeft(line, " \t")
	if len(t) == 0 || t[0] != '{' {
		return false
	}
	t = bytes.TrimLeft(t[1:], " \t")
	return bytes.HasPrefix(t, []byte(`"resourceLogs"`)) || bytes.HasPrefix(t, []byte(`"resource_logs"`))
}

func (a *run) readProto(in io.Reader) error {
	body, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("read OTLP protobuf input: %w", err)
	}
	dec, err := ingest.NewDecoder(ingest.FormatOTLPProto)
	if err != nil {
		return err
	}
	a.decode(dec, event.Source{Offset: 1}, body)
	return nil
}

// decode decodes one message and feeds every good event on.
func (a *run) decode(dec *ingest.Decoder, src event.Source, msg []byte) {
	var errs []error
	a.events, errs = dec.Decode(src, msg, a.events[:0])
	for _, err := range errs {
		var ie *ingest.Error
		if errors.As(err, &ie) {
			a.reject(ie.Reason, describe(ie))
		} else {
			a.reject("unknown", fmt.Sprintf("line %d: %v", src.Offset, err))
		}
	}
	for i := range a.events {
		a.accept(&a.events[i])
	}
}

// describe writes a decoder error in a file's terms: the line (and OTLP
// record) rather than Kafka coordinates, then the field and the problem.
func describe(e *ingest.Error) string {
	var b strings.Builder
	fmt.Fprintf(&b, "line %d", e.Src.Offset)
	if e.Record >= 0 {
		fmt.Fprintf(&b, " record %d", e.Record)
	}
	b.WriteString(": ")
	b.WriteString(e.Detail())
	return b.String()
}

func (a *run) reject(reason ingest.Reason, msg string) {
	ev := &a.report.Events
	ev.Read++
	ev.Rejected++
	ev.RejectedByReason[string(reason)]++
	if len(a.report.Errors) < MaxErrorLines {
		a.report.Errors = append(a.report.Errors, msg)
		if a.opt.Logger != nil {
			a.opt.Logger.Warn("analyze: bad input line", "error", msg, "reason", string(reason))
		}
	}
}

func (a *run) accept(e *event.Event) {
	ev := &a.report.Events
	ev.Read++
	ev.Accepted++
	if leaked := a.guard.Apply(e); len(leaked) > 0 {
		ev.RedactionViolations++
		ev.RedactionViolationsByEmitter[e.Service]++
	}
	if a.opt.Dedup != nil && a.opt.Dedup.Seen(e) {
		ev.Duplicates++
		return
	}
	a.agg.Observe(e)
	a.tracker.Observe(e)
	if a.opt.Detector != nil {
		a.opt.Detector.Observe(e)
	}
}

// finish flushes the tracker and detectors and assembles the report.
func (a *run) finish() *Report {
	a.tracker.Flush()
	var findings []finding.Finding
	if a.opt.Detector != nil {
		findings = a.opt.Detector.Flush()
	}
	for _, f := range findings {
		a.agg.ObserveFinding(f)
	}
	slices.SortFunc(findings, func(x, y finding.Finding) int {
		return cmp.Or(x.FirstSeen.Compare(y.FirstSeen), cmp.Compare(x.Kind, y.Kind), cmp.Compare(x.ID, y.ID))
	})
	if findings == nil {
		findings = []finding.Finding{}
	}
	slices.SortFunc(a.revocations, func(x, y sli.Revocation) int {
		return cmp.Or(x.RevokedAt.Compare(y.RevokedAt), cmp.Compare(x.ID, y.ID))
	})
	if a.revocations == nil {
		a.revocations = []sli.Revocation{}
	}

	r := a.report
	r.Findings = findings
	r.SLIs.Overall = a.agg.Overall()
	r.SLIs.ByService = a.agg.ByService()
	r.SLIs.Refresh = Refresh{
		Attempts:    r.SLIs.Overall.RefreshAttempts,
		OK:          r.SLIs.Overall.RefreshOK,
		SuccessRate: r.SLIs.Overall.RefreshSuccessRate,
	}
	r.SLIs.Revocations = a.revocations
	r.SLIs.Propagation = summarizePropagation(a.revocations)
	return r
}

// summarizePropagation is M4 over a set of revokes: p95 (nearest rank) and
// max of the propagated ones, and the count of those not propagated.
func summarizePropagation(rs []sli.Revocation) Propagation {
	p := Propagation{Revokes: len(rs)}
	var times []float64
	for _, r := range rs {
		if r.Truncated {
			p.Truncated++
		}
		if !r.Propagated {
			p.NotPropagated++
			continue
		}
		p.Propagated++
		times = append(times, r.PropagationS)
	}
	if v, ok := sli.Percentile(times, 95); ok {
		p.P95S = &v
		m := slices.Max(times)
		p.MaxS = &m
	}
	return p
}
