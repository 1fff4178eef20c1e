package sli

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// randomEvents is a small seeded traffic builder for these tests only: it
// spreads events over a few services, issuers, regions and ten minutes, in
// no particular order, with every kind and outcome.
func randomEvents(seed uint64, n int) []event.Event {
	r := rand.New(rand.NewPCG(seed, 7))
	services := []string{"api", "billing", "idp"}
	issuers := []string{"https://idp.example", "https://partner.example"}
	regions := []string{"eu", "us", ""}
	kinds := []event.Kind{event.KindIssue, event.KindValidate, event.KindValidate, event.KindValidate,
		event.KindRefresh, event.KindIntrospect, event.KindRevoke}
	statuses := []int32{0, 0, 200, 401, 403}
	out := make([]event.Event, n)
	for i := range out {
		e := event.Event{
			TS:         t0.Add(time.Duration(r.Int64N(int64(10 * time.Minute)))),
			Kind:       kinds[r.IntN(len(kinds))],
			Outcome:    event.Outcome(1 + r.IntN(int(event.Error))),
			Service:    services[r.IntN(len(services))],
			Issuer:     issuers[r.IntN(len(issuers))],
			Region:     regions[r.IntN(len(regions))],
			TokenID:    fmt.Sprintf("tok-%d", r.IntN(50)),
			SessionID:  fmt.Sprintf("sess-%d", r.IntN(20)),
			HTTPStatus: statuses[r.IntN(len(statuses))],
		}
		if r.IntN(4) > 0 { // mostly ok, as real traffic is
			e.Outcome = event.OK
		}
		if r.IntN(10) > 0 {
			e.LatencyMS = r.Float64() * 120
			e.HasLatency = true
		}
		if r.IntN(3) > 0 {
			e.TokenBytes = int32(200 + r.IntN(3000))
		}
		out[i] = e
	}
	return out
}

// expected is the straightforward recomputation of one scope's SLIs, written
// from SIGNALS.md and sli/doc.go without the package's helpers.
type expected struct {
	validations, ok, bad            int64
	refresh, refreshOK, issued      int64
	requests, r401, intro, introErr int64
	latency, sizes                  []float64
}

func expect(events []event.Event, in func(*event.Event) bool) expected {
	badOutcomes := map[event.Outcome]bool{event.Error: true, event.UnknownKid: true, event.BadSignature: true}
	rejections := map[event.Outcome]bool{event.Expired: true, event.NotYetValid: true, event.BadSignature: true,
		event.UnknownKid: true, event.BadAudience: true, event.BadIssuer: true, event.Revoked: true,
		event.Malformed: true, event.Reused: true}
	var x expected
	for i := range events {
		e := &events[i]
		if !in(e) {
			continue
		}
		if e.Kind == event.KindValidate {
			x.validations++
			if e.Outcome == event.OK {
				x.ok++
			}
			if badOutcomes[e.Outcome] {
				x.bad++
			}
			if e.HasLatency {
				x.latency = append(x.latency, e.LatencyMS)
			}
		}
		if e.Kind == event.KindRefresh {
			x.refresh++
			if e.Outcome == event.OK {
				x.refreshOK++
			}
		}
		if e.Kind == event.KindIssue && e.Outcome == event.OK {
			x.issued++
		}
		if e.Kind == event.KindValidate || e.Kind == event.KindIntrospect {
			x.requests++
			if e.HTTPStatus == 401 || (e.HTTPStatus == 0 && rejections[e.Outcome]) {
				x.r401++
			}
		}
		if e.Kind == event.KindIntrospect {
			x.intro++
			if e.Outcome == event.Error {
				x.introErr++
			}
		}
		if e.TokenBytes > 0 {
			x.sizes = append(x.sizes, float64(e.TokenBytes))
		}
	}
	return x
}

// nearestRank is the textbook definition: sort, take the ⌈p·n/100⌉-th value.
func nearestRank(values []float64, p float64) float64 {
	s := append([]float64(nil), values...)
	sort.Float64s(s)
	return s[int(math.Ceil(p*float64(len(s))/100))-1]
}

func checkStats(t *testing.T, where string, got Stats, x expected) {
	t.Helper()
	eqInt := func(name string, got, want int64) {
		if got != want {
			t.Errorf("%s: %s = %d, want %d", where, name, got, want)
		}
	}
	eqRate := func(name string, got *float64, n, d int64) {
		switch {
		case d == 0 && got != nil:
			t.Errorf("%s: %s = %v with nothing to divide by, want absent", where, name, *got)
		case d != 0 && (got == nil || math.Abs(*got-float64(n)/float64(d)) > 1e-12):
			t.Errorf("%s: %s = %v, want %d/%d", where, name, got, n, d)
		}
	}
	eqPct := func(name string, got *float64, values []float64, p float64) {
		switch {
		case len(values) == 0 && got != nil:
			t.Errorf("%s: %s = %v with no samples, want absent", where, name, *got)
		case len(values) != 0 && (got == nil || *got != nearestRank(values, p)):
			t.Errorf("%s: %s = %v, want %v", where, name, got, nearestRank(values, p))
		}
	}
	eqInt("validations", got.Validations, x.validations)
	eqInt("validations_bad", got.ValidationsBad, x.bad)
	eqInt("validations_good", got.ValidationsGood, x.validations-x.bad)
	eqRate("validation_success_rate", got.ValidationSuccessRate, x.ok, x.validations)
	eqRate("validation_good_ratio", got.ValidationGoodRatio, x.validations-x.bad, x.validations)
	eqPct("latency p50", got.ValidationLatencyP50MS, x.latency, 50)
	eqPct("latency p95", got.ValidationLatencyP95MS, x.latency, 95)
	eqPct("latency p99", got.ValidationLatencyP99MS, x.latency, 99)
	eqInt("refresh_attempts", got.RefreshAttempts, x.refresh)
	eqRate("refresh_success_rate", got.RefreshSuccessRate, x.refreshOK, x.refresh)
	eqInt("issued", got.Issued, x.issued)
	eqInt("requests", got.Requests, x.requests)
	eqInt("rejections_401", got.Rejections401, x.r401)
	eqRate("401 rate", got.Rate401, x.r401, x.requests)
	eqInt("introspections", got.Introspections, x.intro)
	eqRate("introspection_error_rate", got.IntrospectionErrorRate, x.introErr, x.intro)
	eqPct("token_bytes p50", got.TokenBytesP50, x.sizes, 50)
	eqPct("token_bytes p95", got.TokenBytesP95, x.sizes, 95)
	eqPct("token_bytes max", got.TokenBytesMax, x.sizes, 100)
}

func TestEveryMinuteRowMatchesARecountOfItsEvents(t *testing.T) {
	events := randomEvents(1, 5000)
	agg, err := NewAggregator(AggregatorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range events {
		agg.Observe(&events[i])
	}
	rows := agg.Rows()
	if len(rows) < 100 {
		t.Fatalf("only %d rows from 5000 events over 10 minutes × 18 keys; the builder is not spreading", len(rows))
	}
	var total int64
	for _, row := range rows {
		k := row.Key
		x := expect(events, func(e *event.Event) bool {
			return e.TS.Truncate(time.Minute).Equal(k.Minute) && e.Service == k.Service && e.Issuer == k.Issuer && e.Region == k.Region
		})
		checkStats(t, fmt.Sprintf("%s %s/%s/%s", k.Minute.Format("15:04"), k.Service, k.Issuer, k.Region), row.Stats, x)
		total += row.Validations
	}
	if want := expect(events, func(*event.Event) bool { return true }).validations; total != want {
		t.Errorf("rows hold %d validations in all, the events have %d: some event is in no row", total, want)
	}
}

func TestWholeFileAndPerServiceSLIsMatchARecount(t *testing.T) {
	events := randomEvents(2, 3000)
	agg, err := NewAggregator(AggregatorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range events {
		agg.Observe(&events[i])
	}
	checkStats(t, "overall", agg.Overall(), expect(events, func(*event.Event) bool { return true }))
	by := agg.ByService()
	if len(by) != 3 {
		t.Fatalf("by service has %d services, want api, billing, idp", len(by))
	}
	for svc, st := range by {
		checkStats(t, svc, st, expect(events, func(e *event.Event) bool { return e.Service == svc }))
		if st.Minutes != 10 {
			t.Errorf("%s: spans %d minutes, want 10", svc, st.Minutes)
		}
		if st.IssuedPerMinute == nil || *st.IssuedPerMinute != float64(st.Issued)/10 {
			t.Errorf("%s: issued per minute = %v, want %d/10", svc, st.IssuedPerMinute, st.Issued)
		}
	}
}

func TestLateEventsLandInTheirOwnMinute(t *testing.T) {
	agg, err := NewAggregator(AggregatorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	validate := func(at time.Duration) *event.Event {
		return &event.Event{TS: t0.Add(at), Kind: event.KindValidate, Outcome: event.OK, Service: "api"}
	}
	agg.Observe(validate(10 * time.Second))
	agg.Observe(validate(70 * time.Second))
	agg.Observe(validate(130 * time.Second))
	agg.Observe(validate(30 * time.Second)) // arrives two minutes late

	count := func(rows []Row) map[string]int64 {
		m := map[string]int64{}
		for _, r := range rows {
			m[r.Minute.Format("15:04")] += r.Validations
		}
		return m
	}
	got := count(agg.Rows())
	want := map[string]int64{"10:00": 2, "10:01": 1, "10:02": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("validations per minute = %v, want %v", got, want)
	}

	drained := count(agg.Drain(t0.Add(2 * time.Minute)))
	if fmt.Sprint(drained) != fmt.Sprint(map[string]int64{"10:00": 2, "10:01": 1}) {
		t.Fatalf("drained %v, want the two finished minutes", drained)
	}
	agg.Observe(validate(40 * time.Second)) // later than the drain: a new row of its own minute
	if got := count(agg.Rows()); fmt.Sprint(got) != fmt.Sprint(map[string]int64{"10:00": 1, "10:02": 1}) {
		t.Fatalf("after drain, rows = %v, want the late 10:00 event in a new 10:00 row and 10:02 kept", got)
	}
}

func TestFindingsFeedRefreshAnomaliesAndReplayRateOncePerIncident(t *testing.T) {
	agg, err := NewAggregator(AggregatorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		agg.Observe(&event.Event{TS: t0.Add(time.Duration(i) * time.Second), Kind: event.KindValidate, Outcome: event.OK, Service: "api"})
	}
	replay := finding.Finding{ID: "r1", Kind: finding.Replay, Service: "api", FirstSeen: t0.Add(time.Second), Count: 1}
	agg.ObserveFinding(replay)
	replay.Count, replay.LastSeen = 5, t0.Add(3*time.Minute) // an update of the same incident
	agg.ObserveFinding(replay)
	agg.ObserveFinding(finding.Finding{ID: "a1", Kind: finding.RefreshAnomaly, Service: "api", FirstSeen: t0})
	agg.ObserveFinding(finding.Finding{ID: "a2", Kind: finding.RefreshAnomaly, Service: "api", FirstSeen: t0.Add(2 * time.Minute)})
	agg.ObserveFinding(finding.Finding{ID: "k1", Kind: finding.KeyRotationBreak, Service: "api", FirstSeen: t0})

	st := agg.Overall()
	if st.ReplayFindings != 1 || st.ReplayDetectionRate == nil || *st.ReplayDetectionRate != 0.25 {
		t.Errorf("replay findings = %d, rate %v; want 1 incident over 4 validations = 0.25", st.ReplayFindings, st.ReplayDetectionRate)
	}
	if st.RefreshAnomalies != 2 || st.Minutes != 3 || *st.RefreshAnomaliesPerMinute != 2.0/3 {
		t.Errorf("refresh anomalies = %d over %d minutes (%v/min), want 2 over 3", st.RefreshAnomalies, st.Minutes, *st.RefreshAnomaliesPerMinute)
	}
}
