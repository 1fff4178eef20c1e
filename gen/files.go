package gen

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tokenwatch/tokenwatch/eval"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest"
)

// NDJSONWriter writes events as NDJSON, one v1 JSON object per line, the
// input analyze reads.
type NDJSONWriter struct {
	w   *bufio.Writer
	buf []byte
	n   int
}

// NewNDJSONWriter writes to w; call Flush when done.
func NewNDJSONWriter(w io.Writer) *NDJSONWriter {
	return &NDJSONWriter{w: bufio.NewWriterSize(w, 1<<16)}
}

// Write appends events, one line each.
func (nw *NDJSONWriter) Write(events []event.Event) error {
	for i := range events {
		nw.buf = ingest.AppendJSON(nw.buf[:0], &events[i])
		nw.buf = append(nw.buf, '\n')
		if _, err := nw.w.Write(nw.buf); err != nil {
			return fmt.Errorf("write event %d: %w", nw.n, err)
		}
		nw.n++
	}
	return nil
}

// Count is how many events were written.
func (nw *NDJSONWriter) Count() int { return nw.n }

// Flush writes out what is buffered.
func (nw *NDJSONWriter) Flush() error {
	if err := nw.w.Flush(); err != nil {
		return fmt.Errorf("flush events: %w", err)
	}
	return nil
}

// TruthPath is where the truth of an events file goes: beside it, with the
// events extension (.ndjson, .jsonl, .json, each optionally .gz) replaced by
// .truth.json.
func TruthPath(eventsPath string) string {
	p := strings.TrimSuffix(eventsPath, ".gz")
	for _, ext := range []string{".ndjson", ".jsonl", ".json"} {
		if strings.HasSuffix(p, ext) {
			p = strings.TrimSuffix(p, ext)
			break
		}
	}
	return p + ".truth.json"
}

// WriteFiles runs g to the end, writing its events to eventsPath (gzipped
// when the name ends in .gz) and its truth to TruthPath(eventsPath). It
// returns the number of events written.
func WriteFiles(g *Generator, eventsPath string) (n int, err error) {
	f, err := os.Create(eventsPath)
	if err != nil {
		return 0, fmt.Errorf("write events: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("write events: %w", cerr)
		}
	}()
	var out io.Writer = f
	var zw *gzip.Writer
	if strings.HasSuffix(eventsPath, ".gz") {
		zw = gzip.NewWriter(f)
		out = zw
	}
	n, err = WriteNDJSON(g, out)
	if err != nil {
		return n, fmt.Errorf("%s: %w", eventsPath, err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return n, fmt.Errorf("%s: gzip: %w", eventsPath, err)
		}
	}
	return n, writeTruthFile(TruthPath(eventsPath), g.Truth())
}

// WriteNDJSON runs g to the end and writes its events to w as NDJSON.
func WriteNDJSON(g *Generator, w io.Writer) (int, error) {
	nw := NewNDJSONWriter(w)
	batch := make([]event.Event, 0, 1024)
	for b := g.Next(batch); b != nil; b = g.Next(batch) {
		if err := nw.Write(b); err != nil {
			return nw.Count(), err
		}
	}
	return nw.Count(), nw.Flush()
}

func writeTruthFile(path string, truth []eval.Truth) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write truth: %w", err)
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	if err := eval.WriteTruth(f, truth); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
