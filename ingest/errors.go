package ingest

import (
	"fmt"
	"strings"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
)

// Reason is the bounded, machine-readable cause of a rejected message, used
// as the `reason` label of tokenwatch_events_rejected_total.
type Reason string

const (
	// ReasonEmpty: the message (or OTLP batch) holds nothing to decode.
	ReasonEmpty Reason = "empty"
	// ReasonInvalidJSON: the v1 message is not one well-formed JSON object.
	ReasonInvalidJSON Reason = "invalid_json"
	// ReasonInvalidOTLP: the message is not an OTLP logs batch in the
	// configured encoding.
	ReasonInvalidOTLP Reason = "invalid_otlp"
	// ReasonMissingField: a field the contract requires (for this kind) is
	// absent or empty.
	ReasonMissingField Reason = "missing_field"
	// ReasonInvalidValue: a field has the wrong type or a value outside its
	// enum or range.
	ReasonInvalidValue Reason = "invalid_value"
	// ReasonTooLarge: the message, or an event's fields the contract does
	// not name, exceed the configured size (pipeline.max_message_bytes,
	// pipeline.max_extra_bytes).
	ReasonTooLarge Reason = "too_large"
)

// Reasons lists every Reason, so metrics can pre-create their series.
func Reasons() []Reason {
	return []Reason{ReasonEmpty, ReasonInvalidJSON, ReasonInvalidOTLP, ReasonMissingField, ReasonInvalidValue, ReasonTooLarge}
}

// Error is one rejected message, or one rejected record of an OTLP batch. Its
// text names the Kafka coordinates, the record, the field, what was wrong and
// what the contract expects, so a producer can fix the input from the log
// line alone. It never quotes a value that could be a credential: only short
// enum-like values that pass the redaction guard's check are echoed.
type Error struct {
	Src    event.Source
	Format Format
	// Record is the index of the log record within an OTLP batch (counted
	// across resource and scope blocks), or -1 for a JSON message.
	Record int
	// Field is the contract's wire name, empty for errors about the whole
	// message.
	Field    string
	Reason   Reason
	Problem  string // what was wrong, e.g. `"bogus" is not a kind`
	Expected string // what the contract wants, e.g. "one of issue, validate, ..."
	// Err is a cause from a library (the OTLP unmarshaler) whose text is cut
	// before any quoted input; the original it unwraps to may quote the
	// input, so log this Error's text, not the unwrapped cause. Nil for the
	// decoder's own findings.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ingest: %s message at topic %q partition %d offset %d", e.Format, e.Src.Topic, e.Src.Partition, e.Src.Offset)
	if e.Record >= 0 {
		fmt.Fprintf(&b, " record %d", e.Record)
	}
	b.WriteString(": ")
	b.WriteString(e.Detail())
	return b.String()
}

// Detail is the error without its location: the field, what was wrong, what
// the contract expects, and the reason. Callers that name the input their
// own way (analyze: a line of a file) put it after their location.
func (e *Error) Detail() string {
	var b strings.Builder
	if e.Field != "" {
		fmt.Fprintf(&b, "field %q: ", e.Field)
	}
	b.WriteString(e.Problem)
	if e.Expected != "" {
		b.WriteString("; want ")
		b.WriteString(e.Expected)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	fmt.Fprintf(&b, " (%s)", e.Reason)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// fieldError is what the field-level code reports; the Decoder adds the
// message coordinates to make an *Error.
type fieldError struct {
	field    string
	reason   Reason
	problem  string
	expected string
}

func wrap(src event.Source, f Format, record int, fe *fieldError) *Error {
	return &Error{Src: src, Format: f, Record: record, Field: fe.field, Reason: fe.reason, Problem: fe.problem, Expected: fe.expected}
}

func missing(f field, why string) *fieldError {
	p := "is missing"
	if why != "" {
		p += " (" + why + ")"
	}
	return &fieldError{field: fieldSpecs[f].name, reason: ReasonMissingField, problem: p, expected: fieldSpecs[f].expected}
}

func invalid(f field, problem string) *fieldError {
	return &fieldError{field: fieldSpecs[f].name, reason: ReasonInvalidValue, problem: problem, expected: fieldSpecs[f].expected}
}

func badJSON(problem string) *fieldError {
	return &fieldError{reason: ReasonInvalidJSON, problem: problem}
}

// maxEchoed bounds the length of a value quoted in an error message.
const maxEchoed = 40

// shown is how an error message refers to an offending value: quoted when it
// is short and enum-like (letters, digits, _ . : + -) and the redaction
// guard's built-in rules see no credential in it, else "value (withheld)".
func shown(v []byte) string {
	if len(v) == 0 {
		return `""`
	}
	if len(v) > maxEchoed {
		return "value (withheld)"
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '+' || c == '-') {
			return "value (withheld)"
		}
	}
	s := string(v)
	if redact.LooksLikeCredential(s) {
		return "value (withheld)"
	}
	return `"` + s + `"`
}
