package detect

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// t0 is the start of every hand-built scenario.
var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// recorder is a Sink that keeps every call.
type recorder struct{ calls []finding.Finding }

func (r *recorder) Finding(f finding.Finding) { r.calls = append(r.calls, f) }

// newEngine builds an engine with its own registry.
func newEngine(t testing.TB, edit func(*Config)) (*Engine, *recorder, *prometheus.Registry) {
	t.Helper()
	cfg := DefaultConfig()
	if edit != nil {
		edit(&cfg)
	}
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	en, err := New(cfg, rec, reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return en, rec, reg
}

// run observes the events and returns the flushed findings.
func run(t testing.TB, edit func(*Config), events []*event.Event) ([]finding.Finding, *recorder) {
	t.Helper()
	en, rec, _ := newEngine(t, edit)
	for _, e := range events {
		en.Observe(e)
	}
	return en.Flush(), rec
}

func ofKind(fs []finding.Finding, k finding.Kind) []finding.Finding {
	var out []finding.Finding
	for _, f := range fs {
		if f.Kind == k {
			out = append(out, f)
		}
	}
	return out
}

// ev builds events tersely: fields are set by the options.
func ev(ts time.Time, kind event.Kind, outcome event.Outcome, opts ...func(*event.Event)) *event.Event {
	e := &event.Event{TS: ts, Kind: kind, Outcome: outcome, Service: "api-gateway"}
	for _, o := range opts {
		o(e)
	}
	return e
}

func svc(s string) func(*event.Event)      { return func(e *event.Event) { e.Service = s } }
func tok(s string) func(*event.Event)      { return func(e *event.Event) { e.TokenID = s } }
func sess(s string) func(*event.Event)     { return func(e *event.Event) { e.SessionID = s } }
func fam(s string) func(*event.Event)      { return func(e *event.Event) { e.FamilyID = s } }
func parent(s string) func(*event.Event)   { return func(e *event.Event) { e.ParentTokenID = s } }
func dev(s string) func(*event.Event)      { return func(e *event.Event) { e.Device = s } }
func subj(s string) func(*event.Event)     { return func(e *event.Event) { e.Subject = s } }
func clientID(s string) func(*event.Event) { return func(e *event.Event) { e.ClientID = s } }
func kid(s string) func(*event.Event)      { return func(e *event.Event) { e.Kid = s } }
func prevKid(s string) func(*event.Event) {
	return func(e *event.Event) { e.PrevKid = s }
}
func region(s string) func(*event.Event) { return func(e *event.Event) { e.Region = s } }
func ttype(s string) func(*event.Event)  { return func(e *event.Event) { e.TokenType = s } }

// from sets the client address, its ASN and country.
func from(ip string, asn uint32, cc string) func(*event.Event) {
	return func(e *event.Event) { e.IP, e.ASN, e.Country = netip.MustParseAddr(ip), asn, cc }
}

func times(iat, exp time.Time) func(*event.Event) {
	return func(e *event.Event) { e.IAT, e.EXP = iat, exp }
}

func binding(kind string, ok bool) func(*event.Event) {
	return func(e *event.Event) {
		e.Binding = kind
		e.BindingOK = event.False
		if ok {
			e.BindingOK = event.True
		}
	}
}

func validate(ts time.Time, outcome event.Outcome, opts ...func(*event.Event)) *event.Event {
	return ev(ts, event.KindValidate, outcome, opts...)
}

func refresh(ts time.Time, outcome event.Outcome, opts ...func(*event.Event)) *event.Event {
	return ev(ts, event.KindRefresh, outcome, append([]func(*event.Event){svc("idp")}, opts...)...)
}

func issue(ts time.Time, opts ...func(*event.Event)) *event.Event {
	return ev(ts, event.KindIssue, event.OK, append([]func(*event.Event){svc("idp")}, opts...)...)
}

func fmtFinding(f finding.Finding) string {
	b, _ := json.Marshal(f)
	return string(b)
}

// value reads a counter or gauge (client_golang's testutil needs a module
// this repo does not carry).
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func gathered(t testing.TB, reg *prometheus.Registry, name string) bool {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) > 0 {
			return true
		}
	}
	return false
}
