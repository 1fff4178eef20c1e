// Package ingest turns Kafka message values into event.Events: the v1 JSON
// contract (docs/events.md) and OTLP logs as the OpenTelemetry Collector's
// Kafka exporter writes them, in protobuf or JSON. A bad message, or a bad
// record of an OTLP batch, becomes an *Error that names where it came from,
// the field, and what the contract wants; its good siblings are still
// decoded. It also encodes events (AppendJSON, EncodeOTLP) for the generator
// and tests.
package ingest

import (
	"bytes"
	"fmt"

	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tokenwatch/tokenwatch/event"
)

// Decoder decodes messages of one Format. It keeps scratch buffers and an
// interning table between calls, so it is not safe for concurrent use: give
// each partition reader (goroutine) its own.
type Decoder struct {
	format Format
	labels interner
	keyBuf []byte // unescaped field name, reused
	valBuf []byte // unescaped string value, reused
	protoU plog.ProtoUnmarshaler
	jsonU  plog.JSONUnmarshaler
}

// NewDecoder returns a Decoder for f.
func NewDecoder(f Format) (*Decoder, error) {
	if f < FormatJSON || f > FormatAuto {
		return nil, fmt.Errorf("ingest: new decoder: unknown format %d", f)
	}
	return &Decoder{format: f, labels: newInterner()}, nil
}

// Format is the format the Decoder was made for.
func (d *Decoder) Format() Format { return d.format }

// Decode appends the events in value to out and returns it, with one error
// per rejected message or OTLP record (each an *Error). Appending lets the
// caller reuse one slice across messages. The events keep no reference to
// value, which the caller may reuse once Decode returns.
func (d *Decoder) Decode(src event.Source, value []byte, out []event.Event) ([]event.Event, []error) {
	f := d.format
	if f == FormatAuto {
		f = sniff(value)
	}
	if len(bytes.TrimSpace(value)) == 0 {
		return out, []error{&Error{Src: src, Format: f, Record: -1, Reason: ReasonEmpty, Problem: "is empty", Expected: "one event per message"}}
	}
	switch f {
	case FormatJSON:
		return d.decodeJSON(src, value, out)
	default:
		return d.decodeOTLP(src, f, value, out)
	}
}

func (d *Decoder) decodeJSON(src event.Source, value []byte, out []event.Event) ([]event.Event, []error) {
	out = append(out, event.Event{})
	e := &out[len(out)-1]
	e.Src = src
	fe := d.decodeObject(value, e)
	if fe == nil {
		fe = validate(e)
	}
	if fe != nil {
		out[len(out)-1] = event.Event{} // drop references held by the half-decoded event
		return out[:len(out)-1], []error{wrap(src, FormatJSON, -1, fe)}
	}
	return out, nil
}
