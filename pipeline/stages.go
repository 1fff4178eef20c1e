package pipeline

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwatch/tokenwatch/aggregate"
	"github.com/tokenwatch/tokenwatch/detect"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/rekey"
	"github.com/tokenwatch/tokenwatch/sli"
	"github.com/tokenwatch/tokenwatch/store"
)

// Stages are the stateful processors every accepted event goes through, in
// order: the SLI exporter (/metrics), the revocation tracker (M4), and the
// detectors. Revocation results feed the exporter, the slow-revocation
// detector and the store; findings go to the sink (the detectors count them
// on /metrics themselves: M8 and M10 are rates of those counters).
type Stages struct {
	Exporter *sli.Exporter
	Tracker  RevocationTracker
	Detect   *detect.Engine
	// tasks is the Tracker of the fleet's analyze stage: a tracker per
	// keyed partition this member owns.
	tasks *sli.Tasks
	sink  StageSink
	// replaying mutes every output while stored history rebuilds state:
	// what that history produced was counted and stored the first time.
	replaying bool
	// merger, in the fleet's analyze stage, merges the partial results of
	// the broadcast revokes this member owns (the tracker is split).
	merger   *sli.RevocationMerger
	partials *partialMetrics
	aggs     *aggregateMetrics
}

// RevocationTracker measures revocation propagation: one sli.Tracker in a
// single process, sli.Tasks (a tracker per keyed partition, each with its
// own event time) in the fleet's analyze stage.
type RevocationTracker interface {
	Observe(e *event.Event)
	Advance(now time.Time)
	Flush()
	Stats() sli.TrackerStats
	OnResult(fn func(sli.Revocation))
	OnBreach(fn func(sli.Revocation))
}

// aggregateMetrics say how the merge of the detectors' partial aggregates
// goes at the member that owns them.
type aggregateMetrics struct {
	partials   *prometheus.CounterVec
	pending    prometheus.Gauge
	incomplete prometheus.Counter
	counted    uint64 // incomplete minutes already added to the counter
}

func newAggregateMetrics(reg prometheus.Registerer) (*aggregateMetrics, error) {
	m := &aggregateMetrics{
		partials: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tokenwatch_aggregate_partials_total",
			Help: "Partial aggregates (one keyed partition's 10-second slice of per-service, per-kid and per-client detector state) read by the member owning the aggregates, by outcome: merged; duplicate (a copy, changes nothing); late (its slice had closed: counted, not merged)."},
			[]string{"outcome"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokenwatch_aggregate_slices_pending",
			Help: "Slices the aggregates' owners hold open, waiting for some keyed partition's partial."}),
		incomplete: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwatch_aggregate_slices_incomplete_total",
			Help: "Slices the aggregates' owners closed after fleet.partial_wait without every keyed partition's partial."}),
	}
	for _, o := range []string{"merged", "duplicate", "late"} {
		m.partials.WithLabelValues(o)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.partials, m.pending, m.incomplete} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// aggregate merges one keyed partition's partial aggregates, read from the
// keyed topic by the member owning them (replay: read again while
// rebuilding, so the minutes it closes are judged muted).
func (s *Stages) aggregate(x detect.Partial, replay bool) {
	x.Replayed = replay
	o := s.Detect.MergeAggregate(x)
	if s.aggs == nil {
		return
	}
	s.aggs.partials.WithLabelValues([...]string{aggregate.Merged: "merged", aggregate.Duplicate: "duplicate", aggregate.Late: "late"}[o]).Inc()
	s.exportAggregates()
}

func (s *Stages) exportAggregates() {
	if s.aggs == nil {
		return
	}
	st := s.Detect.AggregateStats()
	s.aggs.pending.Set(float64(st.Pending))
	s.aggs.incomplete.Add(float64(st.Incomplete - s.aggs.counted))
	s.aggs.counted = st.Incomplete
}

// partialMetrics say how the merge of broadcast revokes' partials goes.
type partialMetrics struct {
	pending prometheus.Gauge
	late    prometheus.Counter
}

// assigned hears which keyed partitions this analyze member owns now: the
// tracker reports partials for them, and the merges of revokes owned
// elsewhere now are left to their new owner.
func (s *Stages) assigned(part *rekey.Partitioner, partitions []int32) {
	s.tasks.SetOwned(partitions)
	s.Detect.SetSources(partitions)
	if s.merger == nil {
		return
	}
	owned := make(map[int32]bool, len(partitions))
	for _, p := range partitions {
		owned[p] = true
	}
	s.merger.Retain(func(id string) bool { return owned[part.RevokeOwner(id)] })
}

// Partial merges one partial result of a broadcast revoke this member
// owns (read from the keyed topic); the merged result goes where a
// tracker's result goes. A replayed one only rebuilds the merge.
func (s *Stages) Partial(x sli.RevocationPartial, replay bool) {
	if s.merger == nil {
		return
	}
	late := s.merger.Late
	r, ok := s.merger.Add(x, time.Now())
	s.partials.late.Add(float64(s.merger.Late - late))
	if ok && !replay {
		s.revocation(r)
	}
}

// StageSink receives what the stages produce (the pipeline).
type StageSink interface {
	Finding(f finding.Finding)
	Revocation(rows []store.Revocation)
}

// SetSink names where findings and revocation rows go.
func (s *Stages) SetSink(sink StageSink) { s.sink = sink }

// Observe runs one event through every stage.
func (s *Stages) Observe(e *event.Event) {
	s.Exporter.Observe(e)
	s.Tracker.Observe(e)
	s.Detect.Observe(e)
}

// Replay runs a stored event through the stateful stages only (not the
// SLI counters), with their outputs muted.
func (s *Stages) Replay(e *event.Event) {
	s.replaying = true
	s.Tracker.Observe(e)
	if !e.Src.Copy {
		s.Detect.Replay(e)
	}
	s.replaying = false
}

// Tick advances the detectors' event-time clock (closing quiet findings).
func (s *Stages) Tick(now time.Time) {
	if !now.IsZero() {
		s.Detect.Advance(now)
		if s.merger != nil {
			// A partition's tracker reports its partials when the
			// member's watermark passes a revoke's horizon, even while
			// the partition is quiet (but not while it reads a backlog:
			// sli.Tasks).
			s.Tracker.Advance(now)
		}
	}
	s.exportAggregates()
	if s.merger == nil {
		return
	}
	for _, r := range s.merger.Expire(time.Now()) {
		s.revocation(r)
	}
	s.partials.pending.Set(float64(s.merger.Pending()))
}

// Flush ends the input: the tracker reports every pending revoke (marked
// truncated where its horizon has not passed) and the detectors send their
// pending updates, so a stop stores what is known, as analyze reports it.
func (s *Stages) Flush() {
	s.Tracker.Flush()
	if s.merger != nil {
		for _, r := range s.merger.Flush() {
			s.revocation(r)
		}
	}
	s.Detect.Flush()
}

// LateEvents counts, by stage, the events that arrived too late for it.
func (s *Stages) LateEvents() map[string]int64 {
	return map[string]int64{"revocation": s.Tracker.Stats().LateEvents, "detect": s.Detect.LateEvents()}
}

// Finding is the detectors' sink.
func (s *Stages) Finding(f finding.Finding) {
	if s.replaying {
		return
	}
	if s.sink != nil {
		s.sink.Finding(f)
	}
}

func (s *Stages) revocation(r sli.Revocation) {
	if s.replaying {
		return
	}
	s.Exporter.ObserveRevocation(r)
	s.Detect.ObserveRevocation(detect.FromSLI(r))
	if s.sink != nil {
		s.sink.Revocation(RevocationRows(r))
	}
}

// breach hands the detectors a revoke some service accepted past the SLO,
// before its horizon: the slow-revocation finding opens now, and the final
// result updates it later.
func (s *Stages) breach(r sli.Revocation) {
	if s.replaying {
		return
	}
	s.Detect.ObserveRevocation(detect.FromSLI(r))
}

// RevocationRows flattens one revoke's result into a row for the revoke as
// a whole (empty service; residual acceptances and lag on the service rows)
// and a row per service that saw a covered token. The revoke's row is
// always there, so a result reported again (truncated at a shutdown, final
// after the restart) replaces every row of the earlier one.
func RevocationRows(r sli.Revocation) []store.Revocation {
	base := store.Revocation{RevokedAt: r.RevokedAt, RevokeService: r.Service, Target: r.Target, TargetID: r.TargetID(),
		TokenID: r.TokenID, SessionID: r.SessionID, Subject: r.Subject, FamilyID: r.FamilyID,
		PropagationS: r.PropagationS, RevokePropagated: r.Propagated, Propagated: r.Propagated, Truncated: r.Truncated}
	out := make([]store.Revocation, 0, len(r.ByService)+1)
	out = append(out, base)
	for svc, l := range r.ByService {
		row := base
		row.Service = svc
		row.ResidualAcceptances = uint32(l.ResidualAcceptances)
		row.LagS = l.LagS
		row.Propagated = l.Propagated
		if l.FirstRejectionS != nil {
			row.FirstRejectionS = *l.FirstRejectionS
		}
		out = append(out, row)
	}
	return out
}

// exporterOnly is the fleet's ingest stage's observer: the SLI exporter
// counts every accepted event once, here; the detectors run in the analyze
// stage.
type exporterOnly struct{ e *sli.Exporter }

func (x exporterOnly) Observe(e *event.Event) { x.e.Observe(e) }
func (exporterOnly) Replay(*event.Event)      {}
func (exporterOnly) Tick(time.Time)           {}
func (exporterOnly) Flush()                   {}

// detectorsOnly is the fleet's analyze stage's observer: the revocation
// tracker and the detectors; the events were counted on /metrics by the
// ingest stage.
type detectorsOnly struct{ *Stages }

func (d detectorsOnly) Observe(e *event.Event) {
	d.Tracker.Observe(e)
	if !e.Src.Copy { // the detectors keep state per member: one copy each
		d.Detect.Observe(e)
	}
}

// eventsStoredByIngest is the analyze stage's store: the ingest stage
// stored the events; findings and revocations are stored here.
type eventsStoredByIngest struct{ Store }

func (eventsStoredByIngest) InsertEvents(context.Context, *store.Batch) error { return nil }
