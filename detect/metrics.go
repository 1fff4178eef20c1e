package detect

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwatch/tokenwatch/finding"
)

// State names, the `state` label of the detector state metrics.
const (
	stateToken       = "token"
	stateFamily      = "family"
	stateClient      = "client"
	stateSubject     = "subject"
	stateClientBusy  = "client_baseline"
	stateSubjectBusy = "subject_baseline"
	stateKid         = "kid"
	stateProbe       = "audience_probe"
	stateService     = "service"
	stateFinding     = "finding"
)

var stateNames = []string{stateToken, stateFamily, stateClient, stateSubject, stateClientBusy, stateSubjectBusy, stateKid, stateProbe, stateService, stateFinding}

// metrics are the detectors' own Prometheus series (docs/architecture.md).
type metrics struct {
	findingsTotal *prometheus.CounterVec
	findingsOpen  *prometheus.GaugeVec
	entries       *prometheus.GaugeVec
	evictions     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		findingsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_findings_total",
			Help: "Findings opened (or reopened after a quiet period), by kind, severity and service.",
		}, []string{"kind", "severity", "service"}),
		findingsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenwatch_findings_open",
			Help: "Findings currently open, by kind and severity.",
		}, []string{"kind", "severity"}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenwatch_detector_state_entries",
			Help: "Entries of detector state held in memory, by kind of state.",
		}, []string{"state"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_detector_state_evictions_total",
			Help: "Detector state entries evicted before expiry because their table was at its cap.",
		}, []string{"state"}),
	}
	for _, s := range stateNames {
		m.entries.WithLabelValues(s)
		m.evictions.WithLabelValues(s)
	}
	for _, k := range finding.Kinds() {
		for _, s := range []finding.Severity{finding.Page, finding.Ticket, finding.Info} {
			m.findingsOpen.WithLabelValues(string(k), string(s))
		}
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.findingsTotal, m.findingsOpen, m.entries, m.evictions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("detect: register metrics: %w", err)
		}
	}
	return m, nil
}

func newStateTable[V any](m *metrics, state string, capacity int) *table[V] {
	return newTable[V](capacity, m.evictions.WithLabelValues(state), m.entries.WithLabelValues(state))
}
