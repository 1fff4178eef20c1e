package ingest

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tokenwatch/tokenwatch/event"
)

var otlpTS = time.Date(2025, 3, 14, 9, 26, 53, 589_000_000, time.UTC)

// record describes one log record for buildOTLP.
type record struct {
	attrs map[string]any // values as pcommon.Value.FromRaw takes them
	ts    time.Time      // record timestamp; zero leaves it unset
	body  string
}

// resource is one resource block: its attributes and records.
type resource struct {
	attrs   map[string]any
	records []record
}

func buildOTLP(t testing.TB, f Format, resources ...resource) []byte {
	t.Helper()
	logs := plog.NewLogs()
	for _, r := range resources {
		rl := logs.ResourceLogs().AppendEmpty()
		if err := rl.Resource().Attributes().FromRaw(r.attrs); err != nil {
			t.Fatal(err)
		}
		lrs := rl.ScopeLogs().AppendEmpty().LogRecords()
		for _, rec := range r.records {
			lr := lrs.AppendEmpty()
			if err := lr.Attributes().FromRaw(rec.attrs); err != nil {
				t.Fatal(err)
			}
			if !rec.ts.IsZero() {
				lr.SetTimestamp(pcommon.NewTimestampFromTime(rec.ts))
			}
			if rec.body != "" {
				lr.Body().SetStr(rec.body)
			}
		}
	}
	var b []byte
	var err error
	if f == FormatOTLPProto {
		b, err = (&plog.ProtoMarshaler{}).MarshalLogs(logs)
	} else {
		b, err = (&plog.JSONMarshaler{}).MarshalLogs(logs)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// collectorRecord is what the Collector's json_parser makes of validLine:
// every field a string attribute, numbers as doubles, the line in the body.
func collectorRecord() record {
	return record{
		attrs: map[string]any{"ts": "2025-03-14T09:26:53.589Z", "kind": "validate", "outcome": "ok", "service": "gw",
			"token_id": "t1", "latency_ms": 4.5, "http_status": float64(200), "log.file.name": "auth.log"},
		ts:   otlpTS,
		body: validLine,
	}
}

func otlpFormats() []Format { return []Format{FormatOTLPProto, FormatOTLPJSON} }

func TestDecodeOTLPReadsRecordsAsTheCollectorSendsThem(t *testing.T) {
	base := event.Event{TS: otlpTS, Kind: event.KindValidate, Outcome: event.OK, Service: "gw", TokenID: "t1", Src: testSrc}
	with := func(edit func(*event.Event)) event.Event {
		e := base
		edit(&e)
		return e
	}
	for _, tc := range []struct {
		name      string
		resources []resource
		want      []event.Event
	}{
		{"json_parser output: strings, doubles, raw line in the body",
			[]resource{{records: []record{collectorRecord()}}},
			[]event.Event{with(func(e *event.Event) {
				e.LatencyMS, e.HasLatency, e.HTTPStatus = 4.5, true, 200
				e.Extra = map[string]string{"log.file.name": `"auth.log"`}
			})}},
		{"auth. prefixed attributes are the same fields",
			[]resource{{records: []record{{attrs: map[string]any{"auth.ts": "2025-03-14T09:26:53.589Z", "auth.kind": "validate",
				"auth.outcome": "ok", "auth.service": "gw", "auth.token_id": "t1", "auth.asn": "64500", "auth.binding_ok": "true"}}}}},
			[]event.Event{with(func(e *event.Event) { e.ASN, e.BindingOK = 64500, event.True })}},
		{"numbers as strings, ints and doubles",
			[]resource{{records: []record{{attrs: map[string]any{"ts": "2025-03-14T09:26:53.589Z", "kind": "validate", "outcome": "ok",
				"service": "gw", "token_id": "t1", "latency_ms": "0.75", "token_bytes": int64(900), "cache_ttl_s": float64(60), "binding_ok": false}}}}},
			[]event.Event{with(func(e *event.Event) {
				e.LatencyMS, e.HasLatency, e.TokenBytes, e.CacheTTLS, e.BindingOK = 0.75, true, 900, 60, event.False
			})}},
		{"record timestamp stands in for a missing ts",
			[]resource{{records: []record{{attrs: map[string]any{"kind": "validate", "outcome": "ok", "service": "gw", "token_id": "t1"}, ts: otlpTS}}}},
			[]event.Event{base}},
		{"resource service.name and cloud.region stand in for missing attributes",
			[]resource{{attrs: map[string]any{"service.name": "gw", "cloud.region": "eu-west-1"},
				records: []record{{attrs: map[string]any{"ts": "2025-03-14T09:26:53.589Z", "kind": "validate", "outcome": "ok", "token_id": "t1"}}}}},
			[]event.Event{with(func(e *event.Event) { e.Region = "eu-west-1" })}},
		{"the record's own service wins over the resource's",
			[]resource{{attrs: map[string]any{"service.name": "collector"}, records: []record{collectorRecord()}}},
			[]event.Event{with(func(e *event.Event) {
				e.LatencyMS, e.HasLatency, e.HTTPStatus = 4.5, true, 200
				e.Extra = map[string]string{"log.file.name": `"auth.log"`}
			})}},
		{"body holding the raw line is decoded when attributes carry no field",
			[]resource{{attrs: map[string]any{"service.name": "ignored-because-the-line-names-it"},
				records: []record{{attrs: map[string]any{"log.file.name": "auth.log"}, body: validLine}}}},
			[]event.Event{with(func(e *event.Event) { e.Extra = map[string]string{"log.file.name": `"auth.log"`} })}},
		{"several resource blocks in one message, in order",
			[]resource{
				{attrs: map[string]any{"service.name": "a"}, records: []record{{attrs: map[string]any{"kind": "validate", "outcome": "ok", "token_id": "t1"}, ts: otlpTS}}},
				{attrs: map[string]any{"service.name": "b"}, records: []record{
					{attrs: map[string]any{"kind": "validate", "outcome": "ok", "token_id": "t1"}, ts: otlpTS},
					{attrs: map[string]any{"kind": "key_rotate", "outcome": "ok", "kid": "k2"}, ts: otlpTS}}},
			},
			[]event.Event{
				with(func(e *event.Event) { e.Service = "a" }),
				with(func(e *event.Event) { e.Service = "b" }),
				{TS: otlpTS, Kind: event.KindKeyRotate, Outcome: event.OK, Service: "b", Kid: "k2", Src: testSrc},
			}},
		{"unknown attributes of every type are kept as JSON",
			[]resource{{records: []record{{attrs: map[string]any{"kind": "validate", "outcome": "ok", "service": "gw", "token_id": "t1",
				"s": "x", "i": int64(3), "d": 1.5, "b": true, "m": map[string]any{"k": "v"}, "l": []any{"a", int64(1)}}, ts: otlpTS}}}},
			[]event.Event{with(func(e *event.Event) {
				e.Extra = map[string]string{"s": `"x"`, "i": `3`, "d": `1.5`, "b": `true`, "m": `{"k":"v"}`, "l": `["a",1]`}
			})}},
	} {
		for _, f := range otlpFormats() {
			t.Run(f.String()+"/"+tc.name, func(t *testing.T) {
				d := mustDecoder(t, f)
				got, errs := d.Decode(testSrc, buildOTLP(t, f, tc.resources...), nil)
				if errs != nil {
					t.Fatalf("errors: %v", errs)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("got  %+v\nwant %+v", got, tc.want)
				}
			})
		}
	}
}

func TestDecodeOTLPRejectsOnlyTheBadRecord(t *testing.T) {
	good := collectorRecord()
	for _, tc := range []struct {
		name   string
		bad    record
		field  string
		reason Reason
	}{
		{"record with an unknown kind", record{attrs: map[string]any{"kind": "login", "outcome": "ok", "service": "gw"}, ts: otlpTS}, "kind", ReasonInvalidValue},
		{"record without ts or timestamp", record{attrs: map[string]any{"kind": "validate", "outcome": "ok", "service": "gw", "token_id": "t"}}, "ts", ReasonMissingField},
		{"record without any service", record{attrs: map[string]any{"kind": "validate", "outcome": "ok", "token_id": "t"}, ts: otlpTS}, "service", ReasonMissingField},
		{"number attribute that is not a number", record{attrs: map[string]any{"kind": "validate", "outcome": "ok", "service": "gw", "token_id": "t", "http_status": "ok"}, ts: otlpTS}, "http_status", ReasonInvalidValue},
		{"boolean attribute that is not a boolean", record{attrs: map[string]any{"kind": "validate", "outcome": "ok", "service": "gw", "token_id": "t", "binding_ok": "yes"}, ts: otlpTS}, "binding_ok", ReasonInvalidValue},
		{"map where a string belongs", record{attrs: map[string]any{"kind": "validate", "outcome": "ok", "service": map[string]any{"a": "b"}, "token_id": "t"}, ts: otlpTS}, "service", ReasonInvalidValue},
		{"body that is broken JSON", record{attrs: map[string]any{"log.file.name": "x"}, body: `{"kind":`}, "", ReasonInvalidJSON},
	} {
		for _, f := range otlpFormats() {
			t.Run(f.String()+"/"+tc.name, func(t *testing.T) {
				msg := buildOTLP(t, f,
					resource{records: []record{good, good}},
					resource{records: []record{tc.bad, good}})
				d := mustDecoder(t, f)
				got, errs := d.Decode(testSrc, msg, nil)
				if len(got) != 3 {
					t.Fatalf("kept %d events, want the 3 good siblings", len(got))
				}
				if len(errs) != 1 {
					t.Fatalf("got %d errors, want 1: %v", len(errs), errs)
				}
				var de *Error
				if !errors.As(errs[0], &de) {
					t.Fatalf("error is %T", errs[0])
				}
				if de.Record != 2 || de.Field != tc.field || de.Reason != tc.reason || de.Format != f {
					t.Fatalf("got record %d field %q reason %q format %s, want record 2 field %q reason %q: %v",
						de.Record, de.Field, de.Reason, de.Format, tc.field, tc.reason, de)
				}
				for _, part := range []string{`topic "auth-events"`, "partition 7", "offset 123456", "record 2", string(tc.reason)} {
					if !strings.Contains(de.Error(), part) {
						t.Errorf("error %q does not say %s", de, part)
					}
				}
			})
		}
	}
}

func TestDecodeOTLPRejectsWholeBadMessages(t *testing.T) {
	for _, tc := range []struct {
		name   string
		f      Format
		msg    []byte
		reason Reason
	}{
		{"protobuf that is garbage", FormatOTLPProto, []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01}, ReasonInvalidOTLP},
		{"OTLP JSON that is not JSON", FormatOTLPJSON, []byte(`{"resourceLogs":[{`), ReasonInvalidOTLP},
		{"batch without records", FormatOTLPProto, buildOTLP(t, FormatOTLPProto, resource{attrs: map[string]any{"service.name": "gw"}}), ReasonEmpty},
		{"empty message", FormatOTLPJSON, nil, ReasonEmpty},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := mustDecoder(t, tc.f)
			got, errs := d.Decode(testSrc, tc.msg, nil)
			var de *Error
			if len(got) != 0 || len(errs) != 1 || !errors.As(errs[0], &de) || de.Reason != tc.reason || de.Record != -1 {
				t.Fatalf("got %d events, errors %v; want one %s error", len(got), errs, tc.reason)
			}
		})
	}
}

func TestEncodeOTLPRoundTrips(t *testing.T) {
	full := fullEvent()
	full.Extra = map[string]string{"user_agent": `"okhttp"`, "retries": `2`, "mfa": `true`, "nested": `{"a":["b"]}`}
	other := event.Event{TS: otlpTS.Add(time.Second), Kind: event.KindRevoke, Outcome: event.OK, Service: "admin", Target: "family", FamilyID: "f9", Src: testSrc}
	events := []event.Event{full, full, other}
	for _, f := range otlpFormats() {
		t.Run(f.String(), func(t *testing.T) {
			msg, err := EncodeOTLP(events, f)
			if err != nil {
				t.Fatal(err)
			}
			got, errs := mustDecoder(t, f).Decode(testSrc, msg, nil)
			if errs != nil {
				t.Fatal(errs)
			}
			if !reflect.DeepEqual(got, events) {
				t.Fatalf("got  %+v\nwant %+v", got, events)
			}
			logs := mustUnmarshal(t, f, msg)
			if n := logs.ResourceLogs().Len(); n != 2 {
				t.Fatalf("%d resource blocks, want one per run of one service (2)", n)
			}
			lr := logs.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0)
			if lr.Timestamp().AsTime() != full.TS {
				t.Errorf("record timestamp %v, want ts %v", lr.Timestamp().AsTime(), full.TS)
			}
			if v, _ := lr.Attributes().Get("http_status"); v.Type() != pcommon.ValueTypeDouble {
				t.Errorf("http_status is %s, want a double as the Collector sends", v.Type())
			}
			if v, _ := lr.Attributes().Get("ts"); v.Type() != pcommon.ValueTypeStr {
				t.Errorf("ts attribute is %s, want a string", v.Type())
			}
		})
	}
	if _, err := EncodeOTLP(events, FormatJSON); err == nil {
		t.Fatal("EncodeOTLP accepted the json format")
	}
}

func mustUnmarshal(t *testing.T, f Format, msg []byte) plog.Logs {
	t.Helper()
	var logs plog.Logs
	var err error
	if f == FormatOTLPProto {
		logs, err = (&plog.ProtoUnmarshaler{}).UnmarshalLogs(msg)
	} else {
		logs, err = (&plog.JSONUnmarshaler{}).UnmarshalLogs(msg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return logs
}

func TestAutoFormatSniffsEachMessage(t *testing.T) {
	d := mustDecoder(t, FormatAuto)
	events := []event.Event{{TS: otlpTS, Kind: event.KindValidate, Outcome: event.OK, Service: "gw", TokenID: "t1", Src: testSrc}}
	proto, err := EncodeOTLP(events, FormatOTLPProto)
	if err != nil {
		t.Fatal(err)
	}
	js, err := EncodeOTLP(events, FormatOTLPJSON)
	if err != nil {
		t.Fatal(err)
	}
	for name, msg := range map[string][]byte{"v1 JSON": []byte(validLine), "OTLP protobuf": proto, "OTLP JSON": js, "OTLP JSON with spaces": append([]byte(" \n"), js...)} {
		got, errs := d.Decode(testSrc, msg, nil)
		if errs != nil || len(got) != 1 || got[0].TokenID != "t1" {
			t.Errorf("%s: got %+v, %v", name, got, errs)
		}
	}
	var de *Error
	if _, errs := d.Decode(testSrc, []byte("\x00garbage"), nil); len(errs) != 1 || !errors.As(errs[0], &de) || de.Format != FormatOTLPProto {
		t.Errorf("non-JSON bytes are not tried as protobuf: %v", errs)
	}
}

func TestParseFormatNamesEveryFormat(t *testing.T) {
	for _, f := range []Format{FormatJSON, FormatOTLPProto, FormatOTLPJSON, FormatAuto} {
		got, err := ParseFormat(f.String())
		if err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %v, %v", f.String(), got, err)
		}
	}
	if _, err := ParseFormat("xml"); err == nil || !strings.Contains(err.Error(), "otlp_proto") {
		t.Errorf("unknown format error should list the formats: %v", err)
	}
	if _, err := NewDecoder(Format(0)); err == nil {
		t.Error("NewDecoder accepted format 0")
	}
}

// Claims as their RFCs define them arrive in OTLP attributes too: audience
// as an array of strings (RFC 7519 4.1.3), iat and exp as NumericDate
// numbers, an int or a double.
func TestDecodeOTLPReadsClaimsAsTheRFCsDefineThem(t *testing.T) {
	rec := record{attrs: map[string]any{"kind": "validate", "outcome": "ok", "service": "gw", "token_id": "t",
		"audience": []any{"orders-api", "payments-api"}, "iat": int64(1741944413), "exp": 1741945313.5}, ts: otlpTS}
	bad := record{attrs: map[string]any{"kind": "validate", "outcome": "ok", "service": "gw", "token_id": "t",
		"audience": []any{"orders-api", int64(3)}}, ts: otlpTS}
	for _, f := range otlpFormats() {
		t.Run(f.String(), func(t *testing.T) {
			got, errs := mustDecoder(t, f).Decode(testSrc, buildOTLP(t, f, resource{records: []record{rec, bad}}), nil)
			if len(got) != 1 || len(errs) != 1 {
				t.Fatalf("got %d events and errors %v, want the good record kept and the bad one rejected", len(got), errs)
			}
			e := got[0]
			if e.Audience != "orders-api,payments-api" || e.IAT.Unix() != 1741944413 || !e.EXP.Equal(time.Unix(1741945313, 500e6)) {
				t.Fatalf("audience %q iat %v exp %v", e.Audience, e.IAT, e.EXP)
			}
			var de *Error
			if !errors.As(errs[0], &de) || de.Field != "audience" || de.Reason != ReasonInvalidValue {
				t.Fatalf("the array with a number is rejected as %v, want invalid_value on audience", errs[0])
			}
		})
	}
}
