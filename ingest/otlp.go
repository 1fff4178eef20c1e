package ingest

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"unsafe"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
)

// attrPrefix is the optional namespace of the contract's fields among a log
// record's attributes ("auth.kind" and "kind" are the same field).
const attrPrefix = "auth."

// decodeOTLP decodes an OTLP logs batch: every log record is one event.
//
// For each record: attributes carry the fields (with or without the auth.
// prefix; a field sent twice takes the later value). Numbers may be ints,
// doubles or numeric strings; booleans may be bools or "true"/"false".
// Attributes the contract does not name go to Extra as JSON text under their
// own key. When ts is absent the record's timestamp is used (never the
// observed timestamp, which is the Collector's clock, not the emitter's);
// when service or region is absent the resource's service.name or
// cloud.region is used. The body is ignored when the attributes carry any
// contract field; otherwise a string body holding a JSON object is decoded as
// a v1 message (a Collector without a json_parser forwards the raw line).
func (d *Decoder) decodeOTLP(src event.Source, f Format, value []byte, out []event.Event) ([]event.Event, []error) {
	var logs plog.Logs
	var err error
	if f == FormatOTLPProto {
		logs, err = d.protoU.UnmarshalLogs(value)
	} else {
		logs, err = d.jsonU.UnmarshalLogs(value)
	}
	if err != nil {
		return out, []error{&Error{Src: src, Format: f, Record: -1, Reason: ReasonInvalidOTLP,
			Problem: "is not an OTLP logs batch", Expected: "an ExportLogsServiceRequest in " + f.String(), Err: withheldCause(err)}}
	}
	var errs []error
	record := 0
	rls := logs.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		rl := rls.At(i)
		resService := d.resourceLabel(rl.Resource().Attributes(), "service.name")
		resRegion := d.resourceLabel(rl.Resource().Attributes(), "cloud.region")
		sls := rl.ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			lrs := sls.At(j).LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				out = append(out, event.Event{})
				e := &out[len(out)-1]
				e.Src = src
				if fe := d.decodeRecord(lrs.At(k), e, resService, resRegion); fe != nil {
					out[len(out)-1] = event.Event{}
					out = out[:len(out)-1]
					errs = append(errs, wrap(src, f, record, fe))
				}
				record++
			}
		}
	}
	if record == 0 {
		errs = append(errs, &Error{Src: src, Format: f, Record: -1, Reason: ReasonEmpty, Problem: "holds no log records", Expected: "one log record per event"})
	}
	return out, errs
}

func (d *Decoder) resourceLabel(attrs pcommon.Map, key string) string {
	v, ok := attrs.Get(key)
	if !ok || v.Type() != pcommon.ValueTypeStr {
		return ""
	}
	return d.labels.intern(stringBytes(v.Str()))
}

func (d *Decoder) decodeRecord(lr plog.LogRecord, e *event.Event, resService, resRegion string) *fieldError {
	contract := false
	for k, v := range lr.Attributes().All() {
		f := lookupField(stringBytes(strings.TrimPrefix(k, attrPrefix)))
		if f == fieldUnknown {
			d.addExtra(e, stringBytes(k), appendRawValue(nil, v))
			continue
		}
		contract = true
		if fe := d.setValue(e, f, v); fe != nil {
			return fe
		}
	}
	if body := lr.Body(); !contract && body.Type() == pcommon.ValueTypeStr {
		if s := strings.TrimSpace(body.Str()); strings.HasPrefix(s, "{") {
			if fe := d.decodeObject(stringBytes(s), e); fe != nil {
				if fe.field == "" {
					fe.problem = "body " + fe.problem
				}
				return fe
			}
		}
	}
	if e.TS.IsZero() && lr.Timestamp() != 0 {
		e.TS = lr.Timestamp().AsTime().UTC()
	}
	if e.Service == "" {
		e.Service = resService
	}
	if e.Region == "" {
		e.Region = resRegion
	}
	return validate(e)
}

// setValue sets field f from an attribute value.
func (d *Decoder) setValue(e *event.Event, f field, v pcommon.Value) *fieldError {
	typ := fieldSpecs[f].typ
	switch v.Type() {
	case pcommon.ValueTypeStr:
		s := v.Str()
		b := stringBytes(s)
		switch typ {
		case typeID:
			*stringField(e, f) = s // pdata allocated it for this record alone: keep it
			return nil
		case typeFloat, typeInt:
			if s == "" {
				clearField(e, f)
				return nil
			}
			end, isInt, fe := scanNumber(b, 0)
			if fe != nil || end != len(b) {
				return invalid(f, shown(b)+" is not a number")
			}
			n, ok := parseNumber(b, isInt)
			if !ok {
				return invalid(f, "is a number too large for a float64")
			}
			return setNumber(e, f, n)
		case typeBool:
			switch s {
			case "true":
				return setBool(e, f, true)
			case "false":
				return setBool(e, f, false)
			case "":
				clearField(e, f)
				return nil
			}
			return invalid(f, shown(b)+" is not a boolean")
		}
		return d.setText(e, f, b)
	case pcommon.ValueTypeInt:
		return setNumber(e, f, float64(v.Int()))
	case pcommon.ValueTypeDouble:
		return setNumber(e, f, v.Double())
	case pcommon.ValueTypeBool:
		return setBool(e, f, v.Bool())
	case pcommon.ValueTypeEmpty:
		clearField(e, f)
		return nil
	case pcommon.ValueTypeSlice:
		if f == fieldAudience { // RFC 7519 §4.1.3: a string or an array of strings
			s := v.Slice()
			auds := make([]string, s.Len())
			for i := range auds {
				if s.At(i).Type() != pcommon.ValueTypeStr {
					return invalid(f, "is an array of something other than strings (RFC 7519: a string or an array of strings)")
				}
				auds[i] = s.At(i).Str()
			}
			return setAudiences(e, f, auds, d)
		}
	}
	return invalid(f, "is a "+strings.ToLower(v.Type().String()))
}

// appendRawValue writes an attribute value as JSON text, for Extra.
func appendRawValue(dst []byte, v pcommon.Value) []byte {
	switch v.Type() {
	case pcommon.ValueTypeStr:
		return appendJSONString(dst, v.Str())
	case pcommon.ValueTypeInt:
		return strconv.AppendInt(dst, v.Int(), 10)
	case pcommon.ValueTypeDouble:
		return appendJSONFloat(dst, v.Double())
	case pcommon.ValueTypeBool:
		return strconv.AppendBool(dst, v.Bool())
	case pcommon.ValueTypeBytes:
		return appendJSONString(dst, base64.StdEncoding.EncodeToString(v.Bytes().AsRaw()))
	case pcommon.ValueTypeMap, pcommon.ValueTypeSlice:
		raw, err := json.Marshal(v.AsRaw())
		if err != nil { // only non-finite doubles inside; keep the text form
			return appendJSONString(dst, v.AsString())
		}
		return append(dst, raw...)
	}
	return append(dst, "null"...)
}

// stringBytes views s as bytes without copying, for the shared parsers that
// take []byte; they only read it.
func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// causeWithheld carries a library error whose text may quote the input (the
// OTLP JSON parser shows the bytes around the problem, strconv quotes the
// value): it prints only the part before any quoted input, and unwraps to
// the original for errors.Is.
type causeWithheld struct {
	msg string
	err error
}

func (c *causeWithheld) Error() string { return c.msg }
func (c *causeWithheld) Unwrap() error { return c.err }

func withheldCause(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, ", error found in"); i >= 0 {
		msg = msg[:i]
	}
	if i := strings.IndexAny(msg, "\"|`'"); i >= 0 {
		msg = strings.TrimRight(msg[:i], " :") + " (input withheld)"
	}
	if redact.LooksLikeCredential(msg) {
		msg = "(detail withheld)"
	}
	return &causeWithheld{msg: msg, err: err}
}
