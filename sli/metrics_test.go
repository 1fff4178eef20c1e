package sli

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/slo"
)

func TestExportedLabelsNeverCarryIds(t *testing.T) {
	reg := prometheus.NewRegistry()
	x, err := NewExporter(reg, ExporterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	events := randomEvents(3, 2000)
	ids := map[string]bool{}
	for i := range events {
		e := &events[i]
		e.Subject, e.Device, e.FamilyID, e.RequestID = "subj-"+e.TokenID, "dev-"+e.SessionID, "fam-"+e.TokenID, "req-"+e.TokenID
		for _, id := range []string{e.TokenID, e.SessionID, e.Subject, e.Device, e.FamilyID, e.RequestID} {
			ids[id] = true
		}
		x.Observe(e)
	}
	x.ObserveRevocation(Revocation{Service: "idp", Target: "session", SessionID: "sess-1", Propagated: true, PropagationS: 3})

	allowed := []string{"service", "issuer", "region", "outcome", "kind", "severity", "le"}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			series++
			for _, l := range m.GetLabel() {
				if !slices.Contains(allowed, l.GetName()) {
					t.Errorf("%s has label %q, which is not one of the bounded labels %v", mf.GetName(), l.GetName(), allowed)
				}
				if ids[l.GetValue()] {
					t.Errorf("%s{%s=%q}: an id reached a label", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
	if series < 50 {
		t.Fatalf("only %d series gathered: the exporter exported too little for this test to mean anything", series)
	}
}

func TestLabelValuesPastTheCapBecomeOther(t *testing.T) {
	reg := prometheus.NewRegistry()
	x, err := NewExporter(reg, ExporterConfig{MaxLabelValues: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{"a", "b", "c", "d", "a"} {
		x.Observe(&event.Event{TS: t0, Kind: event.KindValidate, Outcome: event.OK, Service: svc})
	}
	mfs, _ := reg.Gather()
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "tokenwatch_validations_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "service" {
					got[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	want := map[string]float64{"a": 2, "b": 1, OtherLabelValue: 2}
	if len(got) != len(want) || got["a"] != 2 || got["b"] != 1 || got[OtherLabelValue] != 2 {
		t.Errorf("validations by service label = %v, want %v", got, want)
	}
}

func TestExportedCountsFollowTheSLIDefinitions(t *testing.T) {
	reg := prometheus.NewRegistry()
	x, _ := NewExporter(reg, ExporterConfig{})
	in := []event.Event{
		{Kind: event.KindValidate, Outcome: event.OK, HTTPStatus: 200, LatencyMS: 12, HasLatency: true},
		{Kind: event.KindValidate, Outcome: event.Revoked, LatencyMS: 70, HasLatency: true}, // no status: a rejection is a 401
		{Kind: event.KindValidate, Outcome: event.Expired, HTTPStatus: 403},                 // the emitter said 403
		{Kind: event.KindIntrospect, Outcome: event.Error, HTTPStatus: 401},
		{Kind: event.KindIssue, Outcome: event.OK, TokenBytes: 900},
		{Kind: event.KindIssue, Outcome: event.Denied},
	}
	for i := range in {
		in[i].TS, in[i].Service = t0, "api"
		x.Observe(&in[i])
	}
	x.ObserveRevocation(Revocation{Service: "idp", Propagated: true, PropagationS: 45})
	x.ObserveRevocation(Revocation{Service: "idp", Propagated: false, PropagationS: 300})

	sums := map[string]float64{}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sums[mf.GetName()] += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				sums[mf.GetName()+"_count"] += float64(m.GetHistogram().GetSampleCount())
				for _, b := range m.GetHistogram().GetBucket() {
					if b.GetUpperBound() == 0.05 || b.GetUpperBound() == 60 {
						sums[mf.GetName()+"_le_threshold"] += float64(b.GetCumulativeCount())
					}
				}
			}
		}
	}
	want := map[string]float64{
		"tokenwatch_validations_total":                           3,
		"tokenwatch_requests_total":                              4,
		"tokenwatch_rejections_401_total":                        2,
		"tokenwatch_introspections_total":                        1,
		"tokenwatch_issued_total":                                1,
		"tokenwatch_validation_latency_seconds_count":            2,
		"tokenwatch_validation_latency_seconds_le_threshold":     1,
		"tokenwatch_token_size_bytes_count":                      1,
		"tokenwatch_revocations_total":                           2,
		"tokenwatch_revocations_not_propagated_total":            1,
		"tokenwatch_revocation_propagation_seconds_count":        1,
		"tokenwatch_revocation_propagation_seconds_le_threshold": 1,
	}
	for name, w := range want {
		if sums[name] != w {
			t.Errorf("%s = %v, want %v", name, sums[name], w)
		}
	}
}

func TestHistogramBucketsHoldTheDefaultSLOThresholds(t *testing.T) {
	buckets := map[string][]float64{
		slo.SLIValidationLatency:     LatencyBucketsSeconds,
		slo.SLIRevocationPropagation: PropagationBucketsSeconds,
	}
	checked := 0
	for _, o := range slo.Default().SLOs {
		b, ok := buckets[o.SLI]
		if !ok {
			continue
		}
		checked++
		if !slices.Contains(b, o.ThresholdSeconds) {
			t.Errorf("%s: threshold %v s is not a bucket boundary of %v", o.Name, o.ThresholdSeconds, b)
		}
	}
	if checked != 2 {
		t.Errorf("checked %d threshold SLOs, want the latency and the propagation one", checked)
	}
}

func TestALogoutsLastInFlightAcceptanceIsUnconfirmedNotSlow(t *testing.T) {
	reg := prometheus.NewRegistry()
	x, err := NewExporter(reg, ExporterConfig{PropagationSLO: 60 * 1e9})
	if err != nil {
		t.Fatal(err)
	}
	x.ObserveRevocation(Revocation{Service: "idp", Propagated: false, PropagationS: 1.2}) // accepted once, then never shown again
	x.ObserveRevocation(Revocation{Service: "idp", Propagated: false, PropagationS: 300}) // kept accepting for 5 minutes
	x.ObserveRevocation(Revocation{Service: "idp", Propagated: true, PropagationS: 2})    // fast
	x.ObserveRevocation(Revocation{Service: "idp", Propagated: true, PropagationS: 90})   // slow
	got := map[string]float64{}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "tokenwatch_revocations_total", "tokenwatch_revocations_not_propagated_total", "tokenwatch_revocations_unconfirmed_total":
				got[mf.GetName()] += m.GetCounter().GetValue()
			case "tokenwatch_revocation_propagation_seconds":
				got["count"] += float64(m.GetHistogram().GetSampleCount())
				for _, b := range m.GetHistogram().GetBucket() {
					if b.GetUpperBound() == 60 {
						got["le60"] += float64(b.GetCumulativeCount())
					}
				}
			}
		}
	}
	want := map[string]float64{"tokenwatch_revocations_total": 4, "tokenwatch_revocations_not_propagated_total": 1,
		"tokenwatch_revocations_unconfirmed_total": 1, "count": 3, "le60": 2}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	// The SLO's bad fraction: (count - le60 + not_propagated) / total = (3-2+1)/4.
	if bad := (got["count"] - got["le60"] + got["tokenwatch_revocations_not_propagated_total"]) / got["tokenwatch_revocations_total"]; bad != 0.5 {
		t.Errorf("bad fraction %v, want 0.5 (the slow one and the one never propagated)", bad)
	}
}
