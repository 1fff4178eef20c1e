package sli

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The pipeline's budget is about 3 µs per event for all SLIs and detectors
// together (PERFORMANCE.md); these show each part's share.

func BenchmarkAggregatorObserve(b *testing.B) {
	events := randomEvents(9, 100_000)
	agg, _ := NewAggregator(AggregatorConfig{})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		agg.Observe(&events[i%len(events)])
	}
}

func BenchmarkTrackerObserve(b *testing.B) {
	events := randomEvents(9, 100_000)
	tr, _ := NewTracker(TrackerConfig{})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tr.Observe(&events[i%len(events)])
	}
}

func BenchmarkExporterObserve(b *testing.B) {
	events := randomEvents(9, 100_000)
	x, _ := NewExporter(prometheus.NewRegistry(), ExporterConfig{})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		x.Observe(&events[i%len(events)])
	}
}
