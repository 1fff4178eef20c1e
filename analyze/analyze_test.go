package analyze

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/dedup"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
	"github.com/tokenwatch/tokenwatch/sli"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

const leakedJWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"

func ev(offset time.Duration, kind event.Kind, outcome event.Outcome, service, tok string) event.Event {
	return event.Event{TS: t0.Add(offset), Kind: kind, Outcome: outcome, Service: service, TokenID: tok, SessionID: "s-" + tok}
}

// sampleEvents is a small, hand-counted day in the life of two services:
// 4 validations at api (3 ok, 1 error), 2 at billing (1 ok, 1 revoked),
// 2 refreshes (1 ok), 2 issues, 1 revoke that api honours after 20 s.
func sampleEvents() []event.Event {
	lat := func(e event.Event, ms float64) event.Event { e.LatencyMS, e.HasLatency = ms, true; return e }
	refresh := func(e event.Event) event.Event { e.FamilyID = "fam-1"; return e }
	revoke := ev(60*time.Second, event.KindRevoke, event.OK, "idp", "t1")
	revoke.Target = "token"
	leaky := lat(ev(30*time.Second, event.KindValidate, event.OK, "api", "t2"), 10)
	leaky.ClientID = "Bearer " + leakedJWT
	return []event.Event{
		ev(0, event.KindIssue, event.OK, "idp", "t1"),
		ev(1*time.Second, event.KindIssue, event.OK, "idp", "t2"),
		lat(ev(10*time.Second, event.KindValidate, event.OK, "api", "t1"), 5),
		lat(ev(20*time.Second, event.KindValidate, event.Error, "api", "t1"), 200),
		leaky,
		revoke,
		lat(ev(70*time.Second, event.KindValidate, event.OK, "api", "t1"), 3),
		lat(ev(80*time.Second, event.KindValidate, event.Revoked, "billing", "t1"), 4),
		lat(ev(90*time.Second, event.KindValidate, event.OK, "billing", "t2"), 6),
		ev(95*time.Second, event.KindValidate, event.Revoked, "api", "t1"),
		refresh(ev(100*time.Second, event.KindRefresh, event.OK, "idp", "t3")),
		refresh(ev(110*time.Second, event.KindRefresh, event.Reused, "idp", "t4")),
	}
}

// ndjson writes events one per line, with bad lines inserted after the
// given line numbers (1-based positions in the output).
func ndjson(events []event.Event, bad map[int]string) []byte {
	var out []byte
	line := 0
	for i := range events {
		line++
		for {
			b, ok := bad[line]
			if !ok {
				break
			}
			out = append(append(out, b...), '\n')
			line++
		}
		out = append(ingest.AppendJSON(out, &events[i]), '\n')
	}
	return out
}

var badLines = map[int]string{
	3: `{"ts":"2026-03-01T10:00:02Z","kind":"bogus","outcome":"ok","service":"api","token_id":"x"}`,
	7: `{"ts":"2026-03-01T10:00:03Z","kind":"validate","outcome":"ok","token_id":"x"}`,
	9: `not json at all`,
}

func fixedGuard(t *testing.T) *redact.Guard {
	t.Helper()
	g, err := redact.New(redact.Config{Key: []byte("analyze-test-key")})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func runReport(t *testing.T, input []byte, opt Options) (*Report, []byte) {
	t.Helper()
	opt.Input = bytes.NewReader(input)
	if opt.Redact == nil {
		opt.Redact = fixedGuard(t)
	}
	r, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := r.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	return r, out.Bytes()
}

func TestASmallFileGivesTheHandCountedReport(t *testing.T) {
	r, out := runReport(t, ndjson(sampleEvents(), badLines), Options{})

	ev := r.Events
	if ev.Read != 15 || ev.Accepted != 12 || ev.Rejected != 3 || ev.RedactionViolations != 1 {
		t.Errorf("events = %+v, want 15 read, 12 accepted, 3 rejected, 1 redaction violation", ev)
	}
	wantReasons := map[string]int64{"invalid_value": 1, "missing_field": 1, "invalid_json": 1}
	for reason, n := range wantReasons {
		if ev.RejectedByReason[reason] != n {
			t.Errorf("rejected %s = %d, want %d (all: %v)", reason, ev.RejectedByReason[reason], n, ev.RejectedByReason)
		}
	}
	if ev.RedactionViolationsByEmitter["api"] != 1 {
		t.Errorf("redaction violations by emitter = %v, want api: 1", ev.RedactionViolationsByEmitter)
	}
	if bytes.Contains(out, []byte(leakedJWT)) {
		t.Error("the leaked JWT reached the report")
	}

	api, billing := r.SLIs.ByService["api"], r.SLIs.ByService["billing"]
	if api.Validations != 5 || *api.ValidationSuccessRate != 3.0/5 || *api.ValidationGoodRatio != 4.0/5 {
		t.Errorf("api: %d validations, success %v, good %v; want 5, 3/5, 4/5", api.Validations, *api.ValidationSuccessRate, *api.ValidationGoodRatio)
	}
	if *api.ValidationLatencyP50MS != 5 || *api.ValidationLatencyP95MS != 200 {
		t.Errorf("api latency p50 %v p95 %v, want 5 and 200 (nearest rank of 3,5,10,200)", *api.ValidationLatencyP50MS, *api.ValidationLatencyP95MS)
	}
	if api.Rejections401 != 1 || billing.Rejections401 != 1 {
		t.Errorf("401s: api %d billing %d, want 1 each (the revoked rejections)", api.Rejections401, billing.Rejections401)
	}
	if o := r.SLIs.Overall; o.Validations != 7 || o.Issued != 2 {
		t.Errorf("overall: %d validations %d issued, want 7 and 2", o.Validations, o.Issued)
	}
	if rf := r.SLIs.Refresh; rf.Attempts != 2 || *rf.SuccessRate != 0.5 {
		t.Errorf("refresh = %+v, want 2 attempts, success 0.5", rf)
	}

	if len(r.SLIs.Revocations) != 1 {
		t.Fatalf("revocations = %d, want 1", len(r.SLIs.Revocations))
	}
	rv := r.SLIs.Revocations[0]
	if !rv.Propagated || rv.PropagationS != 35 || rv.ByService["api"].ResidualAcceptances != 1 || rv.ByService["api"].LagS != 35 {
		t.Errorf("revocation = %+v, want api: 1 residual acceptance, lag 35 s", rv)
	}
	if b := rv.ByService["billing"]; b.LagS != 0 || b.FirstRejectionS == nil || *b.FirstRejectionS != 20 {
		t.Errorf("billing = %+v, want lag 0 and a first rejection at 20 s as upper bound", b)
	}
	if p := r.SLIs.Propagation; p.Revokes != 1 || p.NotPropagated != 0 || *p.P95S != 35 {
		t.Errorf("propagation summary = %+v, want 1 revoke, p95 35 s", p)
	}

	// The report's top-level shape is the one SIGNALS.md promises.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(out, &top); err != nil {
		t.Fatal(err)
	}
	if _, ok := top["findings"]; !ok {
		t.Error("report lacks findings")
	}
	for _, path := range [][2]string{{"events", "read"}, {"events", "redaction_violations"}, {"slis", "overall"},
		{"slis", "by_service"}, {"slis", "refresh"}, {"slis", "revocations"}} {
		var section map[string]any
		if err := json.Unmarshal(top[path[0]], &section); err != nil {
			t.Fatalf("%s: %v", path[0], err)
		}
		if _, ok := section[path[1]]; !ok {
			t.Errorf("report lacks %s.%s", path[0], path[1])
		}
	}
}

func TestBadLinesAreCountedAndNamedNeverFatal(t *testing.T) {
	input := ndjson(sampleEvents(), badLines)
	input = append(input, strings.Repeat("x", 1000)+"\n"...)
	input = append(input, ingest.AppendJSON(nil, &event.Event{TS: t0, Kind: event.KindValidate, Outcome: event.OK, Service: "api", TokenID: "last"})...)
	r, _ := runReport(t, input, Options{MaxLineBytes: 512})
	if r.Events.Accepted != 13 || r.Events.RejectedByReason[string(ReasonLineTooLong)] != 1 {
		t.Fatalf("events = %+v, want the line after a too-long one still read", r.Events)
	}
	want := []struct{ line, field string }{{"line 3:", `field "kind"`}, {"line 7:", `field "service"`}, {"line 9:", ""}, {"line 16:", ""}}
	if len(r.Errors) != len(want) {
		t.Fatalf("errors = %q, want %d", r.Errors, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(r.Errors[i], w.line) || !strings.Contains(r.Errors[i], w.field) {
			t.Errorf("error %d = %q, want it to start with %q and name %s", i, r.Errors[i], w.line, w.field)
		}
	}
}

func TestGzipAndStdinGiveTheSameReport(t *testing.T) {
	plain := ndjson(sampleEvents(), badLines)
	_, want := runReport(t, plain, Options{})

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain)
	zw.Close()
	if _, got := runReport(t, gz.Bytes(), Options{}); !bytes.Equal(got, want) {
		t.Errorf("gzip input gave a different report:\n%s\nwant\n%s", got, want)
	}

	in, size, err := OpenInput("-", bytes.NewReader(gz.Bytes()))
	if err != nil || size != 0 {
		t.Fatalf("open stdin: size %d, %v", size, err)
	}
	r, err := Run(context.Background(), Options{Input: in, Redact: fixedGuard(t)})
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	r.WriteJSON(&got)
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("stdin gave a different report")
	}
}

func TestTheSameInputGivesAByteIdenticalReport(t *testing.T) {
	input := ndjson(sampleEvents(), badLines)
	_, first := runReport(t, input, Options{Detector: &fakeDetector{}})
	_, second := runReport(t, input, Options{Detector: &fakeDetector{}})
	if !bytes.Equal(first, second) {
		t.Fatalf("two runs differ:\n%s\n---\n%s", first, second)
	}
}

func TestLineOrderDoesNotChangeTheSLIs(t *testing.T) {
	events := sampleEvents()
	r1, _ := runReport(t, ndjson(events, nil), Options{})
	shuffled := append([]event.Event(nil), events...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	r2, _ := runReport(t, ndjson(shuffled, nil), Options{})
	a, _ := json.Marshal(r1.SLIs)
	b, _ := json.Marshal(r2.SLIs)
	if !bytes.Equal(a, b) {
		t.Errorf("shuffled lines changed the SLIs:\n%s\n%s", a, b)
	}
}

func TestOTLPInputGivesTheSameSLIsAsNDJSON(t *testing.T) {
	events := sampleEvents()
	want, _ := runReport(t, ndjson(events, nil), Options{})
	wantSLIs, _ := json.Marshal(want.SLIs)

	proto, err := ingest.EncodeOTLP(events, ingest.FormatOTLPProto)
	if err != nil {
		t.Fatal(err)
	}
	otlpJSON, err := ingest.EncodeOTLP(events, ingest.FormatOTLPJSON)
	if err != nil {
		t.Fatal(err)
	}
	for name, input := range map[string][]byte{"otlp_proto file": proto, "otlp_json line": append(otlpJSON, '\n')} {
		got, _ := runReport(t, input, Options{})
		gotSLIs, _ := json.Marshal(got.SLIs)
		if got.Events.Accepted != int64(len(events)) || !bytes.Equal(gotSLIs, wantSLIs) {
			t.Errorf("%s: %d accepted, SLIs\n%s\nwant %d and\n%s", name, got.Events.Accepted, gotSLIs, len(events), wantSLIs)
		}
	}
}

// fakeDetector opens one replay finding for each token validated from two
// services, and records the revocations it was given.
type fakeDetector struct {
	seen        map[string]string
	findings    []finding.Finding
	revocations []sli.Revocation
}

func (d *fakeDetector) Observe(e *event.Event) {
	if e.Kind != event.KindValidate {
		return
	}
	if d.seen == nil {
		d.seen = map[string]string{}
	}
	prev, ok := d.seen[e.TokenID]
	switch {
	case !ok:
		d.seen[e.TokenID] = e.Service
	case prev != e.Service && prev != "reported":
		d.findings = append(d.findings, finding.Finding{ID: finding.MakeID(finding.Replay, e.TokenID), Kind: finding.Replay,
			Severity: finding.Page, Service: e.Service, TokenID: e.TokenID, FirstSeen: e.TS, LastSeen: e.TS, Count: 1})
		d.seen[e.TokenID] = "reported" // one incident is one finding
	}
}
func (d *fakeDetector) ObserveRevocation(r sli.Revocation) { d.revocations = append(d.revocations, r) }
func (d *fakeDetector) Flush() []finding.Finding           { return d.findings }

func TestDetectorFindingsReachTheReportAndTheReplayRate(t *testing.T) {
	det := &fakeDetector{}
	r, _ := runReport(t, ndjson(sampleEvents(), nil), Options{Detector: det})
	if len(det.revocations) != 1 {
		t.Errorf("detector got %d revocations, want 1", len(det.revocations))
	}
	if len(r.Findings) != len(det.findings) || len(r.Findings) == 0 {
		t.Fatalf("report has %d findings, the detector made %d", len(r.Findings), len(det.findings))
	}
	o := r.SLIs.Overall
	if o.ReplayFindings != int64(len(det.findings)) || *o.ReplayDetectionRate != float64(len(det.findings))/7 {
		t.Errorf("replay findings %d rate %v, want %d over 7 validations", o.ReplayFindings, *o.ReplayDetectionRate, len(det.findings))
	}
}

func TestTextSummaryNamesTheFigures(t *testing.T) {
	r, _ := runReport(t, ndjson(sampleEvents(), badLines), Options{})
	var out bytes.Buffer
	if err := r.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"15 read, 12 accepted, 3 rejected, 1 redaction violations", "rejected invalid_json", "line 3:",
		"Validations: 7", "api", "billing", "Revocations: 1, propagated 1", "token t1 revoked by idp"} {
		if !strings.Contains(text, want) {
			t.Errorf("text summary lacks %q:\n%s", want, text)
		}
	}
}

func TestProgressBarReachesTheWholeFile(t *testing.T) {
	input := ndjson(sampleEvents(), nil)
	var bar bytes.Buffer
	runReport(t, input, Options{Progress: &bar, Size: int64(len(input))})
	if !strings.Contains(bar.String(), "100%") {
		t.Errorf("progress = %q, want it to reach 100%%", bar.String())
	}
}

func TestAnEmptyFileGivesAnEmptyReport(t *testing.T) {
	r, out := runReport(t, nil, Options{})
	if r.Events.Read != 0 || len(r.SLIs.Revocations) != 0 || r.SLIs.Overall.ValidationSuccessRate != nil {
		t.Errorf("empty input gave %s", out)
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil || !strings.Contains(text.String(), "Events: 0 read") {
		t.Errorf("text summary of an empty input = %q, %v", text.String(), err)
	}
}

// Every event read twice, with Dedup as the command sets it, gives the
// SLIs of every event read once; copies are counted.
func TestEventsReadTwiceCountOnce(t *testing.T) {
	events := sampleEvents()
	for i := range events {
		events[i].RequestID = fmt.Sprintf("req-%d", i)
	}
	r1, _ := runReport(t, ndjson(events, nil), Options{})
	twice := append(append([]event.Event(nil), events...), events...)
	r2, _ := runReport(t, ndjson(twice, nil), Options{Dedup: dedup.New(dedup.Config{})})
	a, _ := json.Marshal(r1.SLIs)
	b, _ := json.Marshal(r2.SLIs)
	if !bytes.Equal(a, b) {
		t.Errorf("events read twice changed the SLIs:\n%s\n%s", a, b)
	}
	if r2.Events.Duplicates != int64(len(events)) || r2.Events.Accepted != int64(2*len(events)) {
		t.Errorf("duplicates %d accepted %d, want %d and %d", r2.Events.Duplicates, r2.Events.Accepted, len(events), 2*len(events))
	}
}
