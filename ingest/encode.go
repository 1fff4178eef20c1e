package ingest

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tokenwatch/tokenwatch/event"
)

// timeLayout is RFC 3339 with milliseconds, in UTC: the precision the
// contract asks for and ClickHouse's DateTime64(3) stores.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// AppendJSON appends e as one v1 JSON object. Optional fields that are empty
// (zero) are left out; times are written in UTC with milliseconds (finer
// precision is truncated). Extra entries follow the contract's fields in key
// order, their values written as the raw JSON text they hold (which must be
// valid JSON, as the decoder produces); an Extra key that names a contract
// field is skipped so the output never has duplicate keys. Redacted and Src
// are pipeline state, not part of the message.
func AppendJSON(dst []byte, e *event.Event) []byte {
	start := len(dst)
	dst = append(dst, '{')
	dst = appendTimeField(dst, "ts", e.TS)
	dst = appendStringField(dst, "kind", e.Kind.String())
	dst = appendStringField(dst, "outcome", e.Outcome.String())
	dst = appendStringField(dst, "service", e.Service)
	dst = appendStringField(dst, "token_id", e.TokenID)
	dst = appendStringField(dst, "session_id", e.SessionID)
	dst = appendStringField(dst, "subject", e.Subject)
	dst = appendStringField(dst, "client_id", e.ClientID)
	dst = appendStringField(dst, "token_type", e.TokenType)
	dst = appendStringField(dst, "family_id", e.FamilyID)
	dst = appendStringField(dst, "parent_token_id", e.ParentTokenID)
	dst = appendStringField(dst, "issuer", e.Issuer)
	dst = appendStringField(dst, "audience", e.Audience)
	dst = appendStringField(dst, "expected_audience", e.ExpectedAudience)
	dst = appendStringField(dst, "kid", e.Kid)
	dst = appendStringField(dst, "prev_kid", e.PrevKid)
	dst = appendTimeField(dst, "iat", e.IAT)
	dst = appendTimeField(dst, "exp", e.EXP)
	if e.HasLatency && !math.IsNaN(e.LatencyMS) && !math.IsInf(e.LatencyMS, 0) {
		dst = appendKey(dst, "latency_ms")
		dst = appendJSONFloat(dst, e.LatencyMS)
	}
	dst = appendIntField(dst, "token_bytes", int64(e.TokenBytes))
	if e.IP.IsValid() {
		dst = appendKey(dst, "ip")
		dst = append(dst, '"')
		dst = e.IP.AppendTo(dst)
		dst = append(dst, '"')
	}
	dst = appendIntField(dst, "asn", int64(e.ASN))
	dst = appendStringField(dst, "country", e.Country)
	dst = appendStringField(dst, "device", e.Device)
	dst = appendStringField(dst, "binding", e.Binding)
	if e.BindingOK != event.Unset {
		dst = appendKey(dst, "binding_ok")
		dst = strconv.AppendBool(dst, e.BindingOK == event.True)
	}
	dst = appendIntField(dst, "http_status", int64(e.HTTPStatus))
	dst = appendStringField(dst, "target", e.Target)
	dst = appendStringField(dst, "reason", e.Reason)
	dst = appendIntField(dst, "cache_ttl_s", int64(e.CacheTTLS))
	dst = appendStringField(dst, "request_id", e.RequestID)
	dst = appendStringField(dst, "trace_id", e.TraceID)
	dst = appendStringField(dst, "region", e.Region)
	if len(e.Extra) > 0 {
		keys := make([]string, 0, len(e.Extra))
		for k := range e.Extra {
			if lookupField(stringBytes(k)) == fieldUnknown {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			dst = append(dst, ',')
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = append(dst, e.Extra[k]...)
		}
	}
	// Every member was written with a leading comma; drop the first one.
	if len(dst) > start+1 && dst[start+1] == ',' {
		dst = append(dst[:start+1], dst[start+2:]...)
	}
	return append(dst, '}')
}

func appendKey(dst []byte, name string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	return append(dst, '"', ':')
}

func appendStringField(dst []byte, name, v string) []byte {
	if v == "" {
		return dst
	}
	return appendJSONString(appendKey(dst, name), v)
}

func appendIntField(dst []byte, name string, v int64) []byte {
	if v == 0 {
		return dst
	}
	return strconv.AppendInt(appendKey(dst, name), v, 10)
}

func appendTimeField(dst []byte, name string, t time.Time) []byte {
	if t.IsZero() {
		return dst
	}
	dst = append(appendKey(dst, name), '"')
	return append(appendTime(dst, t), '"')
}

// appendTime writes t in UTC as 2006-01-02T15:04:05.000Z. It is written out
// by hand because time.AppendFormat interprets its layout on every call and
// the generator writes three times per event.
func appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, timeLayout) // outside RFC 3339's four digits
	}
	hour, min, sec := t.Clock()
	ms := t.Nanosecond() / 1e6
	d4 := func(v int) {
		dst = append(dst, byte('0'+v/1000), byte('0'+v/100%10), byte('0'+v/10%10), byte('0'+v%10))
	}
	d2 := func(v int) { dst = append(dst, byte('0'+v/10), byte('0'+v%10)) }
	d4(year)
	dst = append(dst, '-')
	d2(int(month))
	dst = append(dst, '-')
	d2(day)
	dst = append(dst, 'T')
	d2(hour)
	dst = append(dst, ':')
	d2(min)
	dst = append(dst, ':')
	d2(sec)
	dst = append(dst, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string the way encoding/json does
// without HTML escaping: invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendJSONFloat writes v the way encoding/json does: the shortest text
// that reads back as the same float64, with an exponent only for very small
// or large magnitudes.
func appendJSONFloat(dst []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return appendJSONString(dst, strconv.FormatFloat(v, 'g', -1, 64))
	}
	abs := math.Abs(v)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(dst, v, format, -1, 64)
}

func formatNumber(v float64) string { return string(appendJSONFloat(nil, v)) }

// EncodeOTLP writes events as one OTLP logs batch the way the Collector's
// file_log receiver with a json_parser and its Kafka exporter do: a new
// resource block (with service.name set) wherever the service changes, so
// the events keep their order; every field as a log
// attribute (strings; numbers as doubles; binding_ok as a bool), the record
// timestamp set to ts, and the v1 JSON line left in the body. f is
// FormatOTLPProto or FormatOTLPJSON.
func EncodeOTLP(events []event.Event, f Format) ([]byte, error) {
	logs := plog.NewLogs()
	var records plog.LogRecordSlice
	var line []byte
	for i := range events {
		e := &events[i]
		if i == 0 || e.Service != events[i-1].Service {
			rl := logs.ResourceLogs().AppendEmpty()
			rl.Resource().Attributes().PutStr("service.name", e.Service)
			records = rl.ScopeLogs().AppendEmpty().LogRecords()
		}
		lr := records.AppendEmpty()
		lr.SetTimestamp(pcommon.NewTimestampFromTime(e.TS))
		line = AppendJSON(line[:0], e)
		lr.Body().SetStr(string(line))
		if err := putAttributes(lr.Attributes(), line); err != nil {
			return nil, fmt.Errorf("ingest: encode OTLP: event %d: %w", i, err)
		}
	}
	switch f {
	case FormatOTLPProto:
		var m plog.ProtoMarshaler
		return m.MarshalLogs(logs)
	case FormatOTLPJSON:
		var m plog.JSONMarshaler
		return m.MarshalLogs(logs)
	}
	return nil, fmt.Errorf("ingest: encode OTLP: format %s is not an OTLP encoding", f)
}

// putAttributes turns the JSON line into attributes as the Collector's
// json_parser does: strings stay strings, numbers become doubles, nested
// values become maps and slices.
func putAttributes(attrs pcommon.Map, line []byte) error {
	var fields map[string]any
	if err := json.Unmarshal(line, &fields); err != nil {
		return fmt.Errorf("event is not valid JSON (an Extra value is not JSON text?): %w", err)
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := attrs.PutEmpty(k).FromRaw(fields[k]); err != nil {
			return fmt.Errorf("attribute %q: %w", k, err)
		}
	}
	return nil
}
