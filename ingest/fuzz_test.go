package ingest

import (
	"encoding/json"
	"errors"
	"math"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
)

// allocatedDuring reports the bytes allocated while fn runs: the least of
// three runs, because the fuzzing engine's own goroutines allocate now and
// then and TotalAlloc counts the whole process.
func allocatedDuring(fn func()) uint64 {
	least := uint64(math.MaxUint64)
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		fn()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least
}

// checkRejection asserts what every rejection must be: an *Error with a
// known Reason whose text carries no credential.
func checkRejection(t *testing.T, err error) {
	t.Helper()
	var de *Error
	if !errors.As(err, &de) {
		t.Fatalf("error is %T, want *ingest.Error: %v", err, err)
	}
	if !slices.Contains(Reasons(), de.Reason) {
		t.Fatalf("reason %q is not one of Reasons()", de.Reason)
	}
	if redact.LooksLikeCredential(de.Error()) {
		t.Fatalf("error text carries a credential: %s", de)
	}
}

func jsonSeeds(t testing.TB) [][]byte {
	full := fullEvent()
	seeds := [][]byte{[]byte(validLine), AppendJSON(nil, &full), []byte(`{}`), []byte(`{"a":{"b":[1,2,{"c":null}]}}`),
		[]byte(`{"ts":"2025-03-14T09:26:53Z","kind":"revoke","outcome":"ok","service":"s","target":"family","family_id":"f"}`),
		[]byte(`{"service":"a\ud800b\u00e9\ud83d\ude00","x":"\u0000"}`), []byte("{\"s\":\"\xff\xfe\"}"),
		[]byte(`{"kind":"` + longJWT + `"}`), []byte(`{"ip":"` + shortJWT + `"}`), []byte(`{"latency_ms":1e308,"asn":4294967295}`)}
	for _, tc := range rejectCases() {
		seeds = append(seeds, []byte(tc.line))
	}
	return seeds
}

// FuzzDecodeJSON checks that the scanner never panics, allocates in
// proportion to its input, accepts only what encoding/json calls valid,
// reads every field as encoding/json would into a map, and round-trips
// through AppendJSON.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range jsonSeeds(f) {
		f.Add(s)
	}
	d := mustDecoder(f, FormatJSON)
	f.Fuzz(func(t *testing.T, data []byte) {
		var out []event.Event
		var errs []error
		allocated := allocatedDuring(func() { out, errs = d.Decode(testSrc, data, nil) })
		if limit := uint64(16*len(data) + 16<<10); allocated > limit {
			t.Fatalf("decoding %d bytes allocated %d bytes (limit %d)", len(data), allocated, limit)
		}
		if len(out)+len(errs) != 1 {
			t.Fatalf("one message gave %d events and %d errors", len(out), len(errs))
		}
		if len(errs) == 1 {
			checkRejection(t, errs[0])
			return
		}
		e := out[0]
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) { // a number beyond float64 in an unknown field
				return
			}
			t.Fatalf("accepted %q that encoding/json rejects: %v", data, err)
		}
		compareWithStdlib(t, &e, m)

		again, errs := d.Decode(testSrc, AppendJSON(nil, &e), nil)
		if errs != nil {
			t.Fatalf("AppendJSON output rejected: %v", errs)
		}
		want := e
		want.TS, want.IAT, want.EXP = e.TS.Truncate(time.Millisecond), e.IAT.Truncate(time.Millisecond), e.EXP.Truncate(time.Millisecond)
		if !reflect.DeepEqual(again[0], want) {
			t.Fatalf("round trip changed the event\ngot  %+v\nwant %+v", again[0], want)
		}
	})
}

// compareWithStdlib checks each field of e against what encoding/json
// decoded into m.
func compareWithStdlib(t *testing.T, e *event.Event, m map[string]any) {
	t.Helper()
	unknown := 0
	for k, v := range m {
		f := lookupField([]byte(k))
		if f == fieldUnknown {
			unknown++
			var got any
			if err := json.Unmarshal([]byte(e.Extra[k]), &got); err != nil || !reflect.DeepEqual(got, v) {
				t.Fatalf("extra %q = %q, encoding/json read %#v", k, e.Extra[k], v)
			}
			continue
		}
		if !sameValue(e, f, v) {
			t.Fatalf("field %s differs from encoding/json's %#v: %+v", k, v, e)
		}
	}
	if len(e.Extra) != unknown {
		t.Fatalf("extra holds %d entries, encoding/json saw %d unknown keys", len(e.Extra), unknown)
	}
}

func sameValue(e *event.Event, f field, v any) bool {
	switch f {
	case fieldKind:
		return v == nil && e.Kind == event.KindUnknown || v == e.Kind.String()
	case fieldOutcome:
		return v == nil && e.Outcome == event.OutcomeUnknown || v == e.Outcome.String()
	}
	switch fieldSpecs[f].typ {
	case typeID, typeLabel, typeEnum:
		s := *stringField(e, f)
		if arr, ok := v.([]any); ok && f == fieldAudience { // RFC 7519: an array of strings
			parts := make([]string, len(arr))
			for i, a := range arr {
				str, ok := a.(string)
				if !ok {
					return false
				}
				parts[i] = str
			}
			return strings.Join(parts, ",") == s
		}
		return v == nil && s == "" || v == s
	case typeTime:
		got := map[field]time.Time{fieldTS: e.TS, fieldIAT: e.IAT, fieldEXP: e.EXP}[f]
		if v == nil {
			return got.IsZero()
		}
		if n, ok := v.(float64); ok { // an RFC 7519 NumericDate (iat, exp)
			return f != fieldTS && n > 0 && n < maxNumericDate && numericDate(n).Equal(got)
		}
		want, err := time.Parse(time.RFC3339Nano, v.(string))
		return err == nil && want.Equal(got)
	case typeIP:
		if v == nil {
			return !e.IP.IsValid()
		}
		want, err := netip.ParseAddr(v.(string))
		return err == nil && want == e.IP
	case typeFloat:
		return v == nil && !e.HasLatency || e.HasLatency && v == e.LatencyMS
	case typeInt:
		got := map[field]float64{fieldTokenBytes: float64(e.TokenBytes), fieldASN: float64(e.ASN),
			fieldHTTPStatus: float64(e.HTTPStatus), fieldCacheTTLS: float64(e.CacheTTLS)}[f]
		return v == nil && got == 0 || v == got
	case typeBool:
		return v == nil && e.BindingOK == event.Unset || v == true && e.BindingOK == event.True || v == false && e.BindingOK == event.False
	}
	return false
}

// FuzzDecodeOTLP checks that neither OTLP decoder panics, that each message
// yields events or errors, that every rejection is a well-formed *Error, and
// that allocation stays proportional to the input (pdata itself expands a
// record of a few bytes into structures of a few hundred).
func FuzzDecodeOTLP(f *testing.F) {
	full := fullEvent()
	for _, format := range otlpFormats() {
		msg, err := EncodeOTLP([]event.Event{full, full}, format)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(msg, format == FormatOTLPJSON)
		f.Add(buildOTLP(f, format, resource{attrs: map[string]any{"service.name": "gw"}, records: []record{collectorRecord(),
			{attrs: map[string]any{"auth.kind": "validate", "latency_ms": "x"}}, {body: validLine}}}), format == FormatOTLPJSON)
	}
	decoders := map[bool]*Decoder{false: mustDecoder(f, FormatOTLPProto), true: mustDecoder(f, FormatOTLPJSON)}
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		var out []event.Event
		var errs []error
		allocated := allocatedDuring(func() { out, errs = decoders[isJSON].Decode(testSrc, data, nil) })
		if limit := uint64(1024*len(data) + 64<<10); allocated > limit {
			t.Fatalf("decoding %d bytes allocated %d bytes (limit %d)", len(data), allocated, limit)
		}
		if len(out)+len(errs) == 0 {
			t.Fatal("a message gave neither events nor errors")
		}
		for _, err := range errs {
			checkRejection(t, err)
		}
		for _, e := range out {
			if fe := validate(&e); fe != nil || e.Src != testSrc {
				t.Fatalf("accepted an event that fails validation (%v) or lost its source: %+v", fe, e)
			}
		}
	})
}
