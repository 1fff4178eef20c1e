package ingest

import (
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// withField returns base with each key set to the raw JSON value that
// follows it (or removed when the value is ""). It panics on a bad base,
// which is always a constant of these tests.
func withField(base string, edits ...string) string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(base), &m); err != nil {
		panic(err)
	}
	for i := 0; i+1 < len(edits); i += 2 {
		if edits[i+1] == "" {
			delete(m, edits[i])
		} else {
			m[edits[i]] = json.RawMessage(edits[i+1])
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func decodeOne(t *testing.T, line string) (event.Event, error) {
	t.Helper()
	d := mustDecoder(t, FormatJSON)
	out, errs := d.Decode(testSrc, []byte(line), nil)
	if len(errs) > 1 || len(out)+len(errs) != 1 {
		t.Fatalf("want one event or one error, got %d events and %v", len(out), errs)
	}
	if len(errs) == 1 {
		return event.Event{}, errs[0]
	}
	return out[0], nil
}

func TestJSONRoundTripKeepsEveryField(t *testing.T) {
	full := fullEvent()
	keyRotate := event.Event{TS: full.TS, Kind: event.KindKeyRotate, Outcome: event.OK, Service: "idp", Kid: "k2", PrevKid: "k1", Src: testSrc}
	revoke := event.Event{TS: full.TS, Kind: event.KindRevoke, Outcome: event.OK, Service: "idp", Target: "session", SessionID: "s1",
		Reason: "user logged out \"everywhere\"\n", IP: netip.MustParseAddr("2001:db8::1"), BindingOK: event.False, Src: testSrc}
	zeroLatency := event.Event{TS: full.TS, Kind: event.KindValidate, Outcome: event.Expired, Service: "gw", TokenID: "t", HasLatency: true, Src: testSrc}
	unicode := event.Event{TS: full.TS, Kind: event.KindIssue, Outcome: event.OK, Service: "idp-東京", TokenID: "t\u2028\x01",
		Extra: map[string]string{"note": `"\u00e9\ud83d\ude00"`, "nested": `{"deep":[[{"x":-1.5e-7}]]}`}, Src: testSrc}
	for name, want := range map[string]event.Event{
		"every field and extras of each JSON type": full,
		"key rotation with only its own fields":    keyRotate,
		"session revoke with escapes and IPv6":     revoke,
		"validation that took zero milliseconds":   zeroLatency,
		"non-ASCII service and escaped extras":     unicode,
	} {
		t.Run(name, func(t *testing.T) {
			line := AppendJSON(nil, &want)
			got, err := decodeOne(t, string(line))
			if err != nil {
				t.Fatalf("decode %s: %v", line, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip changed the event\nline: %s\ngot:  %+v\nwant: %+v", line, got, want)
			}
			if !json.Valid(line) {
				t.Fatalf("AppendJSON wrote invalid JSON: %s", line)
			}
		})
	}
}

func TestDecodeJSONReadsHandWrittenMessage(t *testing.T) {
	line := ` {
	  "ts": "2025-03-14T10:26:53.5+01:00", "kind": "refresh", "outcome": "reused",
	  "service": "idp", "token_id": "t\u0031", "family_id": "f1", "latency_ms": 12,
	  "http_status": 4.01e2, "binding_ok": false, "ip": "::ffff:10.0.0.1", "region": "us-east-1",
	  "subject": null, "device_os": "ios", "tags": ["a", {"b": null}], "score": -0.5
	} `
	got, err := decodeOne(t, line)
	if err != nil {
		t.Fatal(err)
	}
	want := event.Event{
		TS: time.Date(2025, 3, 14, 9, 26, 53, 500_000_000, time.UTC), Kind: event.KindRefresh, Outcome: event.Reused,
		Service: "idp", TokenID: "t1", FamilyID: "f1", LatencyMS: 12, HasLatency: true, HTTPStatus: 401,
		BindingOK: event.False, IP: netip.MustParseAddr("::ffff:10.0.0.1"), Region: "us-east-1",
		Extra: map[string]string{"device_os": `"ios"`, "tags": `["a", {"b": null}]`, "score": `-0.5`},
		Src:   testSrc,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

func TestDecodeJSONAcceptsWhatTheContractAllows(t *testing.T) {
	for _, tc := range []struct {
		name  string
		line  string
		check func(event.Event) bool
	}{
		{"key rotation needs no token_id", withField(validLine, "kind", `"key_rotate"`, "token_id", ""),
			func(e event.Event) bool { return e.Kind == event.KindKeyRotate }},
		{"malformed token on validate needs no token_id", withField(validLine, "outcome", `"malformed"`, "token_id", ""),
			func(e event.Event) bool { return e.Outcome == event.Malformed }},
		{"malformed refresh needs no family_id", withField(validLine, "kind", `"refresh"`, "outcome", `"malformed"`),
			func(e event.Event) bool { return e.FamilyID == "" }},
		{"ts with an offset is stored in UTC", withField(validLine, "ts", `"2025-03-14T11:26:53.589+02:00"`),
			func(e event.Event) bool {
				return e.TS.Equal(time.Date(2025, 3, 14, 9, 26, 53, 589e6, time.UTC)) && e.TS.Location() == time.UTC
			}},
		{"ts with nanoseconds keeps them", withField(validLine, "ts", `"2025-03-14T09:26:53.123456789Z"`),
			func(e event.Event) bool { return e.TS.Nanosecond() == 123456789 }},
		{"ts with whole seconds is accepted", withField(validLine, "ts", `"2025-03-14T09:26:53Z"`),
			func(e event.Event) bool { return e.TS.Second() == 53 }},
		{"null optional field is absent", withField(validLine, "latency_ms", `null`, "ip", `null`),
			func(e event.Event) bool { return !e.HasLatency && !e.IP.IsValid() }},
		{"later duplicate key wins", strings.Replace(validLine, `"service":"gw"`, `"service":"gw","service":"gw2"`, 1),
			func(e event.Event) bool { return e.Service == "gw2" }},
		{"escaped field name is the same field", strings.Replace(validLine, `"service"`, `"serv\u0069ce"`, 1),
			func(e event.Event) bool { return e.Service == "gw" }},
		{"revoke of a whole subject", withField(validLine, "kind", `"revoke"`, "target", `"subject"`, "subject", `"u1"`, "token_id", ""),
			func(e event.Event) bool { return e.Target == "subject" && e.Subject == "u1" }},
		{"integral double for an integer field", withField(validLine, "token_bytes", `812.0`),
			func(e event.Event) bool { return e.TokenBytes == 812 }},
		// Claims as their RFCs define them (RFC 7519 aud and NumericDate,
		// RFC 6749 scope).
		{"audience as a string (RFC 7519 4.1.3)", withField(validLine, "audience", `"orders-api"`),
			func(e event.Event) bool { return e.Audience == "orders-api" }},
		{"audience as an array of strings (RFC 7519 4.1.3)", withField(validLine, "audience", `["orders-api","payments-api"]`),
			func(e event.Event) bool { return e.Audience == "orders-api,payments-api" }},
		{"audience as an array of one", withField(validLine, "audience", `["orders-api"]`),
			func(e event.Event) bool { return e.Audience == "orders-api" }},
		{"audience as an empty array is absent", withField(validLine, "audience", `[]`),
			func(e event.Event) bool { return e.Audience == "" }},
		{"iat and exp as NumericDate seconds (RFC 7519 2)", withField(validLine, "iat", `1741944413`, "exp", `1741945313`),
			func(e event.Event) bool {
				return e.IAT.Equal(time.Unix(1741944413, 0)) && e.EXP.Sub(e.IAT) == 15*time.Minute
			}},
		{"exp as NumericDate with a fraction", withField(validLine, "exp", `1741945313.25`),
			func(e event.Event) bool { return e.EXP.Equal(time.Unix(1741945313, 250e6)) }},
		{"iat as RFC 3339 next to exp as NumericDate", withField(validLine, "iat", `"2025-03-14T09:26:53Z"`, "exp", `1741945313`),
			func(e event.Event) bool { return e.IAT.Unix() == 1741944413 && e.EXP.Unix() == 1741945313 }},
		{"scope as a space-separated string (RFC 6749 3.3) is kept", withField(validLine, "scope", `"openid profile orders:read"`),
			func(e event.Event) bool { return e.Extra["scope"] == `"openid profile orders:read"` }},
		{"scope as an array, as some IdPs send it, is kept", withField(validLine, "scope", `["openid","profile"]`),
			func(e event.Event) bool { return e.Extra["scope"] == `["openid","profile"]` }},
		{"every optional field absent", `{"ts":"2025-03-14T09:26:53.589Z","kind":"validate","outcome":"ok","service":"gw","token_id":"t1"}`,
			func(e event.Event) bool {
				return e.Service == "gw" && e.Audience == "" && e.IAT.IsZero() && !e.HasLatency
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := decodeOne(t, tc.line)
			if err != nil {
				t.Fatalf("rejected %s: %v", tc.line, err)
			}
			if !tc.check(e) {
				t.Fatalf("decoded %s wrongly: %+v", tc.line, e)
			}
		})
	}
}

// rejectCase is one message the decoder must refuse, and how.
type rejectCase struct {
	name   string
	line   string
	field  string
	reason Reason
}

// rejectCases has one case per validation rule; FuzzDecodeJSON seeds from it.
func rejectCases() []rejectCase {
	return []rejectCase{
		{"empty message", "", "", ReasonEmpty},
		{"audience as an array of numbers", withField(validLine, "audience", `[1,2]`), "audience", ReasonInvalidValue},
		{"audience array holding an empty string", withField(validLine, "audience", `["a",""]`), "audience", ReasonInvalidValue},
		{"exp in milliseconds, not a NumericDate", withField(validLine, "exp", `1741945313000`), "exp", ReasonInvalidValue},
		{"iat as a negative NumericDate", withField(validLine, "iat", `-5`), "iat", ReasonInvalidValue},
		{"whitespace-only message", " \n\t", "", ReasonEmpty},
		{"plain text instead of JSON", "user login ok", "", ReasonInvalidJSON},
		{"array instead of an object", `[` + validLine + `]`, "", ReasonInvalidJSON},
		{"two objects in one message", validLine + validLine, "", ReasonInvalidJSON},
		{"message cut short", validLine[:40], "", ReasonInvalidJSON},
		{"trailing comma", strings.TrimSuffix(validLine, "}") + ",}", "", ReasonInvalidJSON},
		{"single-quoted strings", strings.ReplaceAll(validLine, `"`, `'`), "", ReasonInvalidJSON},
		{"raw newline inside a string", strings.Replace(validLine, `"gw"`, "\"g\nw\"", 1), "", ReasonInvalidJSON},
		{"bad escape in an unknown field", strings.Replace(validLine, `}`, `,"x":"\q"}`, 1), "", ReasonInvalidJSON},
		{"number with a leading zero", strings.Replace(validLine, `}`, `,"n":01}`, 1), "", ReasonInvalidJSON},
		{"unknown field nested too deep", strings.Replace(validLine, `}`, `,"n":`+strings.Repeat("[", maxDepth+1)+strings.Repeat("]", maxDepth+1)+`}`, 1), "", ReasonInvalidJSON},
		{"missing ts", withField(validLine, "ts", ""), "ts", ReasonMissingField},
		{"missing kind", withField(validLine, "kind", ""), "kind", ReasonMissingField},
		{"missing outcome", withField(validLine, "outcome", ""), "outcome", ReasonMissingField},
		{"missing service", withField(validLine, "service", ""), "service", ReasonMissingField},
		{"empty service", withField(validLine, "service", `""`), "service", ReasonMissingField},
		{"null kind", withField(validLine, "kind", `null`), "kind", ReasonMissingField},
		{"validate without token_id", withField(validLine, "token_id", ""), "token_id", ReasonMissingField},
		{"issue without token_id", withField(validLine, "kind", `"issue"`, "token_id", ""), "token_id", ReasonMissingField},
		{"introspect without token_id", withField(validLine, "kind", `"introspect"`, "token_id", ""), "token_id", ReasonMissingField},
		{"refresh without token_id", withField(validLine, "kind", `"refresh"`, "family_id", `"f"`, "token_id", ""), "token_id", ReasonMissingField},
		{"refresh without family_id", withField(validLine, "kind", `"refresh"`), "family_id", ReasonMissingField},
		{"revoke without target", withField(validLine, "kind", `"revoke"`), "target", ReasonMissingField},
		{"revoke of a token without token_id", withField(validLine, "kind", `"revoke"`, "target", `"token"`, "token_id", ""), "token_id", ReasonMissingField},
		{"revoke of a session without session_id", withField(validLine, "kind", `"revoke"`, "target", `"session"`), "session_id", ReasonMissingField},
		{"revoke of a subject without subject", withField(validLine, "kind", `"revoke"`, "target", `"subject"`), "subject", ReasonMissingField},
		{"revoke of a family without family_id", withField(validLine, "kind", `"revoke"`, "target", `"family"`), "family_id", ReasonMissingField},
		{"unknown kind", withField(validLine, "kind", `"login"`), "kind", ReasonInvalidValue},
		{"kind in capitals", withField(validLine, "kind", `"VALIDATE"`), "kind", ReasonInvalidValue},
		{"unknown outcome", withField(validLine, "outcome", `"failed"`), "outcome", ReasonInvalidValue},
		{"unknown revoke target", withField(validLine, "kind", `"revoke"`, "target", `"device"`), "target", ReasonInvalidValue},
		{"unknown token type", withField(validLine, "token_type", `"bearer"`), "token_type", ReasonInvalidValue},
		{"unknown binding", withField(validLine, "binding", `"tls"`), "binding", ReasonInvalidValue},
		{"ts that is not a time", withField(validLine, "ts", `"yesterday"`), "ts", ReasonInvalidValue},
		{"ts as epoch seconds", withField(validLine, "ts", `1741944413`), "ts", ReasonInvalidValue},
		{"ts without a zone", withField(validLine, "ts", `"2025-03-14T09:26:53.589"`), "ts", ReasonInvalidValue},
		{"exp as a date only", withField(validLine, "exp", `"2025-03-14"`), "exp", ReasonInvalidValue},
		{"iat with hour 25", withField(validLine, "iat", `"2025-03-14T25:00:00Z"`), "iat", ReasonInvalidValue},
		{"latency_ms as a string", withField(validLine, "latency_ms", `"12"`), "latency_ms", ReasonInvalidValue},
		{"negative latency", withField(validLine, "latency_ms", `-1`), "latency_ms", ReasonInvalidValue},
		{"latency beyond float64", withField(validLine, "latency_ms", `1e999`), "latency_ms", ReasonInvalidValue},
		{"fractional token_bytes", withField(validLine, "token_bytes", `81.5`), "token_bytes", ReasonInvalidValue},
		{"http_status out of range", withField(validLine, "http_status", `42`), "http_status", ReasonInvalidValue},
		{"negative asn", withField(validLine, "asn", `-3`), "asn", ReasonInvalidValue},
		{"cache_ttl_s as a boolean", withField(validLine, "cache_ttl_s", `true`), "cache_ttl_s", ReasonInvalidValue},
		{"ip that is not an address", withField(validLine, "ip", `"10.0.0.256"`), "ip", ReasonInvalidValue},
		{"ip with a port", withField(validLine, "ip", `"10.0.0.1:443"`), "ip", ReasonInvalidValue},
		{"binding_ok as a string", withField(validLine, "binding_ok", `"yes"`), "binding_ok", ReasonInvalidValue},
		{"service as a number", withField(validLine, "service", `7`), "service", ReasonInvalidValue},
		{"kind as an object", withField(validLine, "kind", `{"name":"validate"}`), "kind", ReasonInvalidValue},
		{"subject as an array", withField(validLine, "subject", `["u1"]`), "subject", ReasonInvalidValue},
	}
}

func TestDecodeJSONRejectsBadMessagesNamingWhereAndWhy(t *testing.T) {
	for _, tc := range rejectCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeOne(t, tc.line)
			if err == nil {
				t.Fatalf("accepted %s", tc.line)
			}
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("error is %T, want *ingest.Error: %v", err, err)
			}
			if de.Reason != tc.reason || de.Field != tc.field {
				t.Fatalf("got reason %q field %q, want %q %q: %v", de.Reason, de.Field, tc.reason, tc.field, err)
			}
			if de.Src != testSrc || de.Record != -1 {
				t.Fatalf("error names source %+v record %d, want %+v record -1", de.Src, de.Record, testSrc)
			}
			msg := err.Error()
			for _, part := range []string{`topic "auth-events"`, "partition 7", "offset 123456", string(tc.reason)} {
				if !strings.Contains(msg, part) {
					t.Errorf("error %q does not say %s", msg, part)
				}
			}
			if tc.field != "" && (!strings.Contains(msg, `field "`+tc.field+`":`) || !strings.Contains(msg, "; want ")) {
				t.Errorf("error %q does not name field %q and what is expected", msg, tc.field)
			}
		})
	}
}

func TestDecodeJSONKeepsUnknownFieldsAsRawJSON(t *testing.T) {
	line := withField(validLine,
		"user_agent", `"curl/8.5"`, "attempt", `3`, "ratio", `1.5e3`, "mfa", `true`,
		"nothing", `null`, "headers", `{"x-forwarded-for":["10.0.0.1"]}`, "Kind", `"capitalised keys are not contract fields"`)
	e, err := decodeOne(t, line)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"user_agent": `"curl/8.5"`, "attempt": `3`, "ratio": `1.5e3`, "mfa": `true`, "nothing": `null`,
		"headers": `{"x-forwarded-for":["10.0.0.1"]}`, "Kind": `"capitalised keys are not contract fields"`,
	}
	if !maps.Equal(e.Extra, want) {
		t.Fatalf("extra = %v, want %v", e.Extra, want)
	}
}

func TestDecodeJSONReusesTheOutputSlice(t *testing.T) {
	d := mustDecoder(t, FormatJSON)
	out := make([]event.Event, 0, 4)
	out, errs := d.Decode(testSrc, []byte(validLine), out)
	if errs != nil {
		t.Fatal(errs)
	}
	out, errs = d.Decode(testSrc, []byte(`{"kind":"nope"}`), out)
	if len(errs) != 1 || len(out) != 1 {
		t.Fatalf("a bad message after a good one: %d events, %v", len(out), errs)
	}
	out, _ = d.Decode(testSrc, []byte(validLine), out)
	if len(out) != 2 || cap(out) != 4 || out[1].Kind != event.KindValidate || out[1].Extra != nil {
		t.Fatalf("slice not reused cleanly: len %d cap %d %+v", len(out), cap(out), out[1])
	}
}
