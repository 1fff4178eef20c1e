package sli

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/slo"
)

// Key names one per-minute row: the minute (UTC) and the emitter's service,
// issuer and region.
type Key struct {
	Minute  time.Time `json:"minute"`
	Service string    `json:"service"`
	Issuer  string    `json:"issuer"`
	Region  string    `json:"region"`
}

// Row is one minute of one (service, issuer, region).
type Row struct {
	Key
	Stats
}

// Stats are the SLIs over some scope: one minute of one key, one service
// over a whole file, everything. Rates and percentiles are nil when there is
// nothing to compute them from.
type Stats struct {
	// Minutes is the span of the scope in minutes, first to last inclusive;
	// per-minute rates divide by it.
	Minutes int64 `json:"minutes"`

	// M1
	Validations           int64            `json:"validations"`
	ValidationsByOutcome  map[string]int64 `json:"validations_by_outcome,omitempty"`
	ValidationsGood       int64            `json:"validations_good"`
	ValidationsBad        int64            `json:"validations_bad"`
	ValidationSuccessRate *float64         `json:"validation_success_rate,omitempty"`
	ValidationGoodRatio   *float64         `json:"validation_good_ratio,omitempty"`

	// M2
	ValidationLatencyP50MS *float64 `json:"validation_latency_p50_ms,omitempty"`
	ValidationLatencyP95MS *float64 `json:"validation_latency_p95_ms,omitempty"`
	ValidationLatencyP99MS *float64 `json:"validation_latency_p99_ms,omitempty"`

	// M3
	RefreshAttempts    int64    `json:"refresh_attempts"`
	RefreshOK          int64    `json:"refresh_ok"`
	RefreshSuccessRate *float64 `json:"refresh_success_rate,omitempty"`

	// M5
	Issued          int64    `json:"issued"`
	IssuedPerMinute *float64 `json:"issued_per_minute,omitempty"`

	// M6
	Requests      int64    `json:"requests"`
	Rejections401 int64    `json:"rejections_401"`
	Rate401       *float64 `json:"rejection_401_rate,omitempty"`

	// M7
	Introspections         int64    `json:"introspections"`
	IntrospectionErrors    int64    `json:"introspection_errors"`
	IntrospectionErrorRate *float64 `json:"introspection_error_rate,omitempty"`

	// M8
	RefreshAnomalies          int64    `json:"refresh_anomalies"`
	RefreshAnomaliesPerMinute *float64 `json:"refresh_anomalies_per_minute,omitempty"`

	// M9
	TokenBytesP50 *float64 `json:"token_bytes_p50,omitempty"`
	TokenBytesP95 *float64 `json:"token_bytes_p95,omitempty"`
	TokenBytesMax *float64 `json:"token_bytes_max,omitempty"`

	// M10
	ReplayFindings      int64    `json:"replay_findings"`
	ReplayDetectionRate *float64 `json:"replay_detection_rate,omitempty"`
}

// AggregatorConfig configures an Aggregator.
type AggregatorConfig struct {
	// SLO is the spec whose validation_good_ratio objective classifies
	// validations as good or bad; nil means slo.Default().
	SLO *slo.Spec
	// FindingMemory is how long (in event time, before the drain cutoff) a
	// finding id is remembered so that updates of an open finding are not
	// counted again for M8/M10. Default 24h.
	FindingMemory time.Duration
}

// Aggregator keeps the per-minute SLI rows. It is safe for concurrent use.
type Aggregator struct {
	goodRatio     *slo.SLO
	findingMemory time.Duration

	mu           sync.Mutex
	rows         map[Key]*tally
	findingsSeen map[string]time.Time // finding id → minute it was counted in
}

// tally is the raw material of a Row: counts, and the samples exact
// percentiles need.
type tally struct {
	byOutcome                           [event.Error + 1]int64
	good, bad                           int64
	refreshAttempts, refreshOK          int64
	issued                              int64
	requests, rejections401             int64
	introspections, introspectionErrors int64
	refreshAnomalies, replayFindings    int64
	latencyMS                           []float64
	tokenBytes                          []float64
}

// NewAggregator builds an Aggregator; it fails when the SLO spec has no
// validation_good_ratio objective to classify validations with.
func NewAggregator(cfg AggregatorConfig) (*Aggregator, error) {
	spec := cfg.SLO
	if spec == nil {
		spec = slo.Default()
	}
	good := spec.Find(slo.SLIValidationGoodRatio)
	if good == nil {
		return nil, fmt.Errorf("sli: the SLO spec has no %s objective to tell good validations from bad", slo.SLIValidationGoodRatio)
	}
	mem := cfg.FindingMemory
	if mem <= 0 {
		mem = 24 * time.Hour
	}
	return &Aggregator{
		goodRatio:     good,
		findingMemory: mem,
		rows:          map[Key]*tally{},
		findingsSeen:  map[string]time.Time{},
	}, nil
}

func (a *Aggregator) tallyFor(k Key) *tally {
	t := a.rows[k]
	if t == nil {
		t = &tally{}
		a.rows[k] = t
	}
	return t
}

// Observe counts one event in the row of its own minute.
func (a *Aggregator) Observe(e *event.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.tallyFor(Key{Minute: MinuteOf(e.TS), Service: e.Service, Issuer: e.Issuer, Region: e.Region})
	switch e.Kind {
	case event.KindValidate:
		if int(e.Outcome) < len(t.byOutcome) {
			t.byOutcome[e.Outcome]++
		}
		if a.goodRatio.IsBad(e.Outcome) {
			t.bad++
		} else {
			t.good++
		}
		if e.HasLatency {
			t.latencyMS = append(t.latencyMS, e.LatencyMS)
		}
	case event.KindRefresh:
		t.refreshAttempts++
		if e.Outcome == event.OK {
			t.refreshOK++
		}
	case event.KindIntrospect:
		t.introspections++
		if e.Outcome == event.Error {
			t.introspectionErrors++
		}
	}
	if IsIssuance(e) {
		t.issued++
	}
	if IsRequest(e) {
		t.requests++
		if Is401(e) {
			t.rejections401++
		}
	}
	if e.TokenBytes > 0 {
		t.tokenBytes = append(t.tokenBytes, float64(e.TokenBytes))
	}
}

// ObserveFinding counts a refresh_anomaly (M8) or replay (M10) finding in
// the minute it was first seen, under its service, issuer and region. A
// finding is counted once however many updates of it are fed in.
func (a *Aggregator) ObserveFinding(f finding.Finding) {
	if f.Kind != finding.RefreshAnomaly && f.Kind != finding.Replay {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	id := f.ID
	if id == "" {
		id = finding.MakeID(f.Kind, f.Key)
	}
	if _, seen := a.findingsSeen[id]; seen {
		return
	}
	minute := MinuteOf(f.FirstSeen)
	a.findingsSeen[id] = minute
	t := a.tallyFor(Key{Minute: minute, Service: f.Service, Issuer: f.Issuer, Region: f.Region})
	if f.Kind == finding.Replay {
		t.replayFindings++
	} else {
		t.refreshAnomalies++
	}
}

// Rows returns every row, sorted by minute, service, issuer and region,
// leaving them in place.
func (a *Aggregator) Rows() []Row {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rowsWhere(func(Key) bool { return true }, false)
}

// Drain removes and returns the rows of minutes before cutoff, sorted. The
// pipeline calls it with its watermark so memory holds only open minutes; an
// event later than that opens a new row for its minute, to be drained next
// time (stores sum rows of the same key).
func (a *Aggregator) Drain(cutoff time.Time) []Row {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.rowsWhere(func(k Key) bool { return k.Minute.Before(cutoff) }, true)
	forget := cutoff.Add(-a.findingMemory)
	for id, m := range a.findingsSeen {
		if m.Before(forget) {
			delete(a.findingsSeen, id)
		}
	}
	return out
}

func (a *Aggregator) rowsWhere(keep func(Key) bool, remove bool) []Row {
	var out []Row
	for k, t := range a.rows {
		if !keep(k) {
			continue
		}
		out = append(out, Row{Key: k, Stats: t.stats(1)})
		if remove {
			delete(a.rows, k)
		}
	}
	slices.SortFunc(out, func(x, y Row) int { return compareKeys(x.Key, y.Key) })
	return out
}

func compareKeys(x, y Key) int {
	return cmp.Or(x.Minute.Compare(y.Minute), cmp.Compare(x.Service, y.Service),
		cmp.Compare(x.Issuer, y.Issuer), cmp.Compare(x.Region, y.Region))
}

// Overall is the SLIs over every row held.
func (a *Aggregator) Overall() Stats {
	return a.Summarize(func(Key) string { return "" })[""]
}

// ByService is the SLIs of each service over every row held.
func (a *Aggregator) ByService() map[string]Stats {
	return a.Summarize(func(k Key) string { return k.Service })
}

// Summarize merges the rows held into groups named by group and computes
// each group's SLIs (exact percentiles over all the group's samples).
func (a *Aggregator) Summarize(group func(Key) string) map[string]Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	type span struct{ first, last time.Time }
	merged := map[string]*tally{}
	spans := map[string]*span{}
	for k, t := range a.rows {
		g := group(k)
		m := merged[g]
		if m == nil {
			m = &tally{}
			merged[g] = m
			spans[g] = &span{first: k.Minute, last: k.Minute}
		}
		m.add(t)
		s := spans[g]
		if k.Minute.Before(s.first) {
			s.first = k.Minute
		}
		if k.Minute.After(s.last) {
			s.last = k.Minute
		}
	}
	out := make(map[string]Stats, len(merged))
	for _, g := range slices.Sorted(maps.Keys(merged)) {
		s := spans[g]
		out[g] = merged[g].stats(int64(s.last.Sub(s.first)/time.Minute) + 1)
	}
	return out
}

func (t *tally) add(o *tally) {
	for i := range t.byOutcome {
		t.byOutcome[i] += o.byOutcome[i]
	}
	t.good += o.good
	t.bad += o.bad
	t.refreshAttempts += o.refreshAttempts
	t.refreshOK += o.refreshOK
	t.issued += o.issued
	t.requests += o.requests
	t.rejections401 += o.rejections401
	t.introspections += o.introspections
	t.introspectionErrors += o.introspectionErrors
	t.refreshAnomalies += o.refreshAnomalies
	t.replayFindings += o.replayFindings
	t.latencyMS = append(t.latencyMS, o.latencyMS...)
	t.tokenBytes = append(t.tokenBytes, o.tokenBytes...)
}

// stats computes the SLIs of a tally spanning the given number of minutes.
func (t *tally) stats(minutes int64) Stats {
	s := Stats{
		Minutes:             minutes,
		ValidationsGood:     t.good,
		ValidationsBad:      t.bad,
		RefreshAttempts:     t.refreshAttempts,
		RefreshOK:           t.refreshOK,
		Issued:              t.issued,
		Requests:            t.requests,
		Rejections401:       t.rejections401,
		Introspections:      t.introspections,
		IntrospectionErrors: t.introspectionErrors,
		RefreshAnomalies:    t.refreshAnomalies,
		ReplayFindings:      t.replayFindings,
	}
	for o, n := range t.byOutcome {
		if n == 0 {
			continue
		}
		if s.ValidationsByOutcome == nil {
			s.ValidationsByOutcome = map[string]int64{}
		}
		s.ValidationsByOutcome[event.Outcome(o).String()] = n
		s.Validations += n
	}
	s.ValidationSuccessRate = ratio(t.byOutcome[event.OK], s.Validations)
	s.ValidationGoodRatio = ratio(t.good, s.Validations)
	s.RefreshSuccessRate = ratio(t.refreshOK, t.refreshAttempts)
	s.Rate401 = ratio(t.rejections401, t.requests)
	s.IntrospectionErrorRate = ratio(t.introspectionErrors, t.introspections)
	s.ReplayDetectionRate = ratio(t.replayFindings, s.Validations)
	if minutes > 0 {
		s.IssuedPerMinute = ratio(t.issued, minutes)
		s.RefreshAnomaliesPerMinute = ratio(t.refreshAnomalies, minutes)
	}
	if len(t.latencyMS) > 0 {
		lat := slices.Clone(t.latencyMS)
		slices.Sort(lat)
		s.ValidationLatencyP50MS = ptr(percentileSorted(lat, 50))
		s.ValidationLatencyP95MS = ptr(percentileSorted(lat, 95))
		s.ValidationLatencyP99MS = ptr(percentileSorted(lat, 99))
	}
	if len(t.tokenBytes) > 0 {
		size := slices.Clone(t.tokenBytes)
		slices.Sort(size)
		s.TokenBytesP50 = ptr(percentileSorted(size, 50))
		s.TokenBytesP95 = ptr(percentileSorted(size, 95))
		s.TokenBytesMax = ptr(size[len(size)-1])
	}
	return s
}

func ratio(n, d int64) *float64 {
	if d == 0 {
		return nil
	}
	return ptr(float64(n) / float64(d))
}

func ptr(v float64) *float64 { return &v }
