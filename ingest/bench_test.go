package ingest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// BenchmarkDecodeJSON decodes a typical 376-byte-class v1 message, the hot
// path of the pipeline (PERFORMANCE.md budgets ≤ 3 µs per event in total).
func BenchmarkDecodeJSON(b *testing.B) {
	e := fullEvent()
	e.Extra = nil
	line := AppendJSON(nil, &e)
	d := mustDecoder(b, FormatJSON)
	out := make([]event.Event, 0, 1)
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		var errs []error
		out, errs = d.Decode(testSrc, line, out[:0])
		if errs != nil {
			b.Fatal(errs[0])
		}
	}
}

func BenchmarkDecodeOTLPProto(b *testing.B) {
	events := make([]event.Event, 100)
	for i := range events {
		events[i] = fullEvent()
		events[i].Extra = nil
	}
	msg, err := EncodeOTLP(events, FormatOTLPProto)
	if err != nil {
		b.Fatal(err)
	}
	d := mustDecoder(b, FormatOTLPProto)
	out := make([]event.Event, 0, len(events))
	b.ReportAllocs()
	for b.Loop() {
		var errs []error
		out, errs = d.Decode(testSrc, msg, out[:0])
		if errs != nil {
			b.Fatal(errs[0])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/event")
}

func BenchmarkAppendJSON(b *testing.B) {
	e := fullEvent()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendJSON(buf[:0], &e)
	}
}

// stdlibEvent mirrors the v1 fields for BenchmarkDecodeJSONStdlib, the
// baseline PERFORMANCE.md measured (encoding/json into a struct).
type stdlibEvent struct {
	TS               time.Time `json:"ts"`
	Kind             string    `json:"kind"`
	Outcome          string    `json:"outcome"`
	Service          string    `json:"service"`
	TokenID          string    `json:"token_id"`
	SessionID        string    `json:"session_id"`
	Subject          string    `json:"subject"`
	ClientID         string    `json:"client_id"`
	TokenType        string    `json:"token_type"`
	FamilyID         string    `json:"family_id"`
	ParentTokenID    string    `json:"parent_token_id"`
	Issuer           string    `json:"issuer"`
	Audience         string    `json:"audience"`
	ExpectedAudience string    `json:"expected_audience"`
	Kid              string    `json:"kid"`
	PrevKid          string    `json:"prev_kid"`
	IAT              time.Time `json:"iat"`
	EXP              time.Time `json:"exp"`
	LatencyMS        *float64  `json:"latency_ms"`
	TokenBytes       int32     `json:"token_bytes"`
	IP               string    `json:"ip"`
	ASN              uint32    `json:"asn"`
	Country          string    `json:"country"`
	Device           string    `json:"device"`
	Binding          string    `json:"binding"`
	BindingOK        *bool     `json:"binding_ok"`
	HTTPStatus       int32     `json:"http_status"`
	Target           string    `json:"target"`
	Reason           string    `json:"reason"`
	CacheTTLS        int32     `json:"cache_ttl_s"`
	RequestID        string    `json:"request_id"`
	TraceID          string    `json:"trace_id"`
	Region           string    `json:"region"`
}

// BenchmarkDecodeJSONStdlib is the baseline to compare BenchmarkDecodeJSON
// with in the same run (the machine is shared and noisy: compare ratios).
func BenchmarkDecodeJSONStdlib(b *testing.B) {
	e := fullEvent()
	e.Extra = nil
	line := AppendJSON(nil, &e)
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		var v stdlibEvent
		if err := json.Unmarshal(line, &v); err != nil {
			b.Fatal(err)
		}
	}
}
