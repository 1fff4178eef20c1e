package sli

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwatch/tokenwatch/event"
)

// Histogram buckets. Each list contains its SLO threshold as a boundary
// (0.05 s validation latency, 60 s revocation propagation), because a
// Prometheus rule can only count "at or under the threshold" at a bucket
// boundary; alerts/ refuses a threshold that is not in these lists.
var (
	LatencyBucketsSeconds     = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
	PropagationBucketsSeconds = []float64{1, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600}
	TokenSizeBucketsBytes     = []float64{128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768}
)

// OtherLabelValue replaces a service, issuer or region past the label cap.
const OtherLabelValue = "other"

// ExporterConfig bounds the exported label values.
type ExporterConfig struct {
	// MaxLabelValues caps the distinct values of each of service, issuer and
	// region; later values are exported as "other". Default 200.
	MaxLabelValues int
	// PropagationSLO is the revocation-propagation threshold (default 60 s).
	// A revoke not propagated within the horizon whose last residual
	// acceptance came inside it is unconfirmed, not slow: the token simply
	// stopped being shown (a logout's last in-flight request). It is observed
	// at that lower bound and counted in
	// tokenwatch_revocations_unconfirmed_total, not as not propagated, so the
	// SLO does not burn on ordinary logouts — the same rule the
	// slow-revocation detector applies.
	PropagationSLO time.Duration
}

// Exporter exports the SLIs as the Prometheus metrics named in
// docs/architecture.md. It is safe for concurrent use.
//
// Revocation propagation: tokenwatch_revocation_propagation_seconds observes
// propagated revokes, and unconfirmed ones at their lower bound (see
// ExporterConfig.PropagationSLO); a revoke some service kept accepting past
// the SLO and never rejected within the horizon is counted in
// tokenwatch_revocations_not_propagated_total instead, and
// tokenwatch_revocations_total counts all. So the fraction of revokes slower
// than the threshold T is 1 − bucket{le=T} / revocations_total.
type Exporter struct {
	services, issuers, regions *labelCap

	validations    *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	refreshes      *prometheus.CounterVec
	issued         *prometheus.CounterVec
	requests       *prometheus.CounterVec
	rejections401  *prometheus.CounterVec
	introspections *prometheus.CounterVec
	tokenSize      *prometheus.HistogramVec
	propagation    *prometheus.HistogramVec
	revocations    *prometheus.CounterVec
	notPropagated  *prometheus.CounterVec
	unconfirmed    *prometheus.CounterVec
	propagationSLO float64

	mu    sync.Mutex
	cache map[rawKey]*keySeries
}

// NewExporter registers the SLI metrics on reg.
func NewExporter(reg prometheus.Registerer, cfg ExporterConfig) (*Exporter, error) {
	if cfg.MaxLabelValues < 0 {
		return nil, fmt.Errorf("sli exporter: max label values: want a positive number, got %d", cfg.MaxLabelValues)
	}
	if cfg.MaxLabelValues == 0 {
		cfg.MaxLabelValues = 200
	}
	if cfg.PropagationSLO <= 0 {
		cfg.PropagationSLO = time.Minute
	}
	key := []string{"service", "issuer", "region"}
	withOutcome := []string{"service", "issuer", "region", "outcome"}
	x := &Exporter{
		services: newLabelCap(cfg.MaxLabelValues),
		issuers:  newLabelCap(cfg.MaxLabelValues),
		regions:  newLabelCap(cfg.MaxLabelValues),
		cache:    map[rawKey]*keySeries{},

		validations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_validations_total", Help: "Token validations by outcome (M1).",
		}, withOutcome),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tokenwatch_validation_latency_seconds", Help: "Token validation latency (M2).",
			Buckets: LatencyBucketsSeconds,
		}, key),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_refreshes_total", Help: "Refresh attempts by outcome (M3).",
		}, withOutcome),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_issued_total", Help: "Tokens issued: issue events with outcome ok (M5).",
		}, key),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_requests_total", Help: "Token checks (validate and introspect events) (M6).",
		}, key),
		rejections401: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_rejections_401_total", Help: "Token checks answered 401 (M6).",
		}, key),
		introspections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_introspections_total", Help: "Introspections by outcome (M7).",
		}, withOutcome),
		tokenSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tokenwatch_token_size_bytes", Help: "Size of presented tokens (M9).",
			Buckets: TokenSizeBucketsBytes,
		}, key),
		propagation: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tokenwatch_revocation_propagation_seconds", Help: "Propagation time of propagated revokes, by the revoke's emitter (M4).",
			Buckets: PropagationBucketsSeconds,
		}, []string{"service"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_revocations_total", Help: "Revokes whose propagation result is final (M4).",
		}, []string{"service"}),
		propagationSLO: cfg.PropagationSLO.Seconds(),
		unconfirmed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_revocations_unconfirmed_total", Help: "Revokes not seen rejected within the horizon whose residual acceptances all came inside the SLO: the token stopped being shown (M4).",
		}, []string{"service"}),
		notPropagated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_revocations_not_propagated_total", Help: "Revokes some service still accepted at the end of the horizon (M4).",
		}, []string{"service"}),
	}
	for _, c := range []prometheus.Collector{x.validations, x.latency, x.refreshes, x.issued, x.requests,
		x.rejections401, x.introspections, x.tokenSize, x.propagation, x.revocations, x.notPropagated, x.unconfirmed,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("sli exporter: register: %w", err)
		}
	}
	return x, nil
}

// Observe counts one event, by the definitions in doc.go.
func (x *Exporter) Observe(e *event.Event) {
	// Look the series up once, under one lock, then update them outside it.
	var validation, refresh, introspection, issued, requests, r401 prometheus.Counter
	var latency, size prometheus.Observer
	x.mu.Lock()
	s := x.seriesFor(e.Service, e.Issuer, e.Region)
	switch e.Kind {
	case event.KindValidate:
		validation = s.counter(&s.validations, x.validations, e.Outcome)
		if e.HasLatency {
			latency = s.observer(&s.latency, x.latency)
		}
	case event.KindRefresh:
		refresh = s.counter(&s.refreshes, x.refreshes, e.Outcome)
	case event.KindIntrospect:
		introspection = s.counter(&s.introspections, x.introspections, e.Outcome)
	}
	if IsIssuance(e) {
		issued = s.single(&s.issued, x.issued)
	}
	if IsRequest(e) {
		requests = s.single(&s.requests, x.requests)
		if Is401(e) {
			r401 = s.single(&s.rejections401, x.rejections401)
		}
	}
	if e.TokenBytes > 0 {
		size = s.observer(&s.tokenSize, x.tokenSize)
	}
	x.mu.Unlock()

	for _, c := range [...]prometheus.Counter{validation, refresh, introspection, issued, requests, r401} {
		if c != nil {
			c.Inc()
		}
	}
	if latency != nil {
		latency.Observe(e.LatencyMS / 1000)
	}
	if size != nil {
		size.Observe(float64(e.TokenBytes))
	}
}

// maxCachedKeys bounds the series cache: raw (service, issuer, region)
// triples past it are looked up without caching, so a flood of distinct
// values (all exported as "other") cannot grow memory.
const maxCachedKeys = 10_000

type rawKey struct{ service, issuer, region string }

// keySeries caches the metric children of one (service, issuer, region),
// created on first use: WithLabelValues hashes its labels on every call,
// which cost more than the rest of the SLI work per event.
type keySeries struct {
	labels                                 [3]string // capped values
	validations, refreshes, introspections [event.Error + 1]prometheus.Counter
	issued, requests, rejections401        prometheus.Counter
	latency, tokenSize                     prometheus.Observer
}

// seriesFor returns the cached series of a key; x.mu must be held.
func (x *Exporter) seriesFor(service, issuer, region string) *keySeries {
	k := rawKey{service, issuer, region}
	if s, ok := x.cache[k]; ok {
		return s
	}
	s := &keySeries{labels: [3]string{x.services.value(service), x.issuers.value(issuer), x.regions.value(region)}}
	if len(x.cache) < maxCachedKeys {
		x.cache[k] = s
	}
	return s
}

func (s *keySeries) counter(slot *[event.Error + 1]prometheus.Counter, vec *prometheus.CounterVec, o event.Outcome) prometheus.Counter {
	if int(o) >= len(slot) {
		o = event.OutcomeUnknown
	}
	if slot[o] == nil {
		slot[o] = vec.WithLabelValues(s.labels[0], s.labels[1], s.labels[2], o.String())
	}
	return slot[o]
}

func (s *keySeries) single(slot *prometheus.Counter, vec *prometheus.CounterVec) prometheus.Counter {
	if *slot == nil {
		*slot = vec.WithLabelValues(s.labels[0], s.labels[1], s.labels[2])
	}
	return *slot
}

func (s *keySeries) observer(slot *prometheus.Observer, vec *prometheus.HistogramVec) prometheus.Observer {
	if *slot == nil {
		*slot = vec.WithLabelValues(s.labels[0], s.labels[1], s.labels[2])
	}
	return *slot
}

// ObserveRevocation counts one final revoke result under its emitter.
func (x *Exporter) ObserveRevocation(r Revocation) {
	svc := x.services.value(r.Service)
	x.revocations.WithLabelValues(svc).Inc()
	switch {
	case r.Propagated:
		x.propagation.WithLabelValues(svc).Observe(r.PropagationS)
	case r.PropagationS <= x.propagationSLO:
		x.propagation.WithLabelValues(svc).Observe(r.PropagationS)
		x.unconfirmed.WithLabelValues(svc).Inc()
	default:
		x.notPropagated.WithLabelValues(svc).Inc()
	}
}

// labelCap hands out at most max distinct label values and "other" after.
type labelCap struct {
	mu   sync.Mutex
	max  int
	seen map[string]struct{}
}

func newLabelCap(max int) *labelCap { return &labelCap{max: max, seen: map[string]struct{}{}} }

func (c *labelCap) value(v string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[v]; ok {
		return v
	}
	if len(c.seen) >= c.max {
		return OtherLabelValue
	}
	c.seen[v] = struct{}{}
	return v
}
