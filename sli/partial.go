package sli

import (
	"slices"
	"time"
)

// RevocationPartial is one keyed partition's share of the result of a
// revoke the fleet's keyed topic broadcast (TrackerConfig.Split): what each
// service did with the covered tokens whose validations went to that
// partition. The partials of all partitions merge into the revoke's
// Revocation (MergePartials); a partition's partial is the same whoever
// owns the partition, so a copy replaces rather than adds.
type RevocationPartial struct {
	// Revoke is the revoke's result without ByService, Propagated and
	// PropagationS (the merge computes them).
	Revoke Revocation `json:"revoke"`
	// Partition is the keyed partition, of Partitions.
	Partition  int32 `json:"partition"`
	Partitions int32 `json:"partitions"`
	// Services holds each service that saw a covered token of the
	// partition after the revoke and within the horizon.
	Services map[string]PartialWatch `json:"services,omitempty"`
}

// PartialWatch is one service's behaviour after a revoke, for the tokens of
// one keyed partition. Times are unix nanoseconds; 0 is none.
type PartialWatch struct {
	Residual       int   `json:"residual,omitempty"`
	LastAccept     int64 `json:"last_accept,omitempty"`
	FirstRejection int64 `json:"first_rejection,omitempty"`
	// Rejections are the earliest revoked rejections after LastAccept (at
	// most maxPartialRejections); LastRejection is the latest.
	Rejections    []int64 `json:"rejections,omitempty"`
	LastRejection int64   `json:"last_rejection,omitempty"`
}

// OnPartial registers fn to receive the partial results of split revokes
// (TrackerConfig.Split), one per owned keyed partition, when the revoke's
// horizon passes. Register before the first Observe.
func (t *Tracker) OnPartial(fn func(RevocationPartial)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partialCBs = append(t.partialCBs, fn)
}

// SetOwned names the keyed partitions this member owns now: a split
// revoke's partials are reported for them (the new owner of a partition
// moved away reports its share).
func (t *Tracker) SetOwned(partitions []int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.owned = slices.Clone(partitions)
	slices.Sort(t.owned)
}

func (t *Tracker) takePartials() func() {
	ps := t.partials
	t.partials = nil
	cbs := t.partialCBs
	return func() {
		for _, p := range ps {
			for _, fn := range cbs {
				fn(p)
			}
		}
	}
}

// partial is p's share for one keyed partition.
func (t *Tracker) partial(p *pendingRevoke, part int32, truncated bool) RevocationPartial {
	rev := p.rev
	rev.Truncated = truncated
	out := RevocationPartial{Revoke: rev, Partition: part, Partitions: t.cfg.Split.Partitions}
	for wk, w := range p.services {
		if wk.part != part {
			continue
		}
		if out.Services == nil {
			out.Services = map[string]PartialWatch{}
		}
		out.Services[wk.service] = PartialWatch{Residual: w.residual, LastAccept: w.lastAccept, FirstRejection: w.firstRejection,
			Rejections: slices.Clone(w.rejections), LastRejection: w.lastRejection}
	}
	return out
}

// MergePartials is the revoke's result from its partials: residual
// acceptances add up; a service's lag runs to its first revoked rejection
// after the last acceptance of any partition, as one tracker seeing every
// event would find it. It is Truncated when a partial is, or when a
// partition's partial is missing.
func MergePartials(parts []RevocationPartial) Revocation {
	if len(parts) == 0 {
		return Revocation{}
	}
	rev := parts[0].Revoke
	seen := map[int32]bool{}
	byService := map[string][]PartialWatch{}
	for _, p := range parts {
		seen[p.Partition] = true
		rev.Truncated = rev.Truncated || p.Revoke.Truncated
		for svc, w := range p.Services {
			byService[svc] = append(byService[svc], w)
		}
	}
	if int32(len(seen)) < parts[0].Partitions {
		rev.Truncated = true
	}
	ts := rev.RevokedAt.UnixNano()
	rev.Propagated, rev.PropagationS = true, 0
	rev.ByService = make(map[string]ServiceLag, len(byService))
	for svc, ws := range byService {
		var residual int
		var lastAccept, firstRejection int64
		for _, w := range ws {
			residual += w.Residual
			lastAccept = max(lastAccept, w.LastAccept)
			if w.FirstRejection != 0 && (firstRejection == 0 || w.FirstRejection < firstRejection) {
				firstRejection = w.FirstRejection
			}
		}
		lag := ServiceLag{ResidualAcceptances: residual, Propagated: true}
		if residual > 0 {
			last := seconds(lastAccept - ts)
			lag.LastAcceptanceS = &last
			if after := firstRejectionAfter(ws, lastAccept); after != 0 {
				lag.LagS = seconds(after - ts)
			} else {
				lag.Propagated = false
				lag.LagS = last
				rev.Propagated = false
			}
		} else if firstRejection != 0 {
			first := seconds(firstRejection - ts)
			lag.FirstRejectionS = &first
		}
		rev.PropagationS = max(rev.PropagationS, lag.LagS)
		rev.ByService[svc] = lag
	}
	return rev
}

// firstRejectionAfter is the first revoked rejection later than at in any
// partition (0: none). A partition whose kept rejections all precede at,
// but whose latest does not, had more than it kept: its latest bounds the
// answer from above.
func firstRejectionAfter(ws []PartialWatch, at int64) int64 {
	var first, bound int64
	for _, w := range ws {
		found := false
		for _, r := range w.Rejections {
			if r > at {
				if first == 0 || r < first {
					first = r
				}
				found = true
				break
			}
		}
		if !found && w.LastRejection > at && (bound == 0 || w.LastRejection < bound) {
			bound = w.LastRejection
		}
	}
	if first == 0 || (bound != 0 && bound < first) {
		return bound
	}
	return first
}

// RevocationMerger is the owner of split revokes: it collects their
// partials and hands each revoke's merged result on once every keyed
// partition's partial has arrived, or, with some missing, once Expire
// passes the revoke's horizon plus grace (then Truncated). A partial
// arriving again (a redelivery, a new owner's report) replaces the earlier
// one of its partition.
type RevocationMerger struct {
	horizon, grace time.Duration
	pending        map[string]*merging
	// Late counts partials that arrived after their revoke was reported.
	Late int64
	done map[string]time.Time // reported revokes, until their grace ends
}

type merging struct {
	parts map[int32]RevocationPartial
}

// NewRevocationMerger waits horizon plus grace of event time past a
// revoke for missing partials.
func NewRevocationMerger(horizon, grace time.Duration) *RevocationMerger {
	return &RevocationMerger{horizon: horizon, grace: grace, pending: map[string]*merging{}, done: map[string]time.Time{}}
}

// Add takes one partial; it returns the merged result when the revoke is
// complete.
func (m *RevocationMerger) Add(p RevocationPartial) (Revocation, bool) {
	id := p.Revoke.ID
	if _, ok := m.done[id]; ok {
		m.Late++
		return Revocation{}, false
	}
	g := m.pending[id]
	if g == nil {
		g = &merging{parts: map[int32]RevocationPartial{}}
		m.pending[id] = g
	}
	g.parts[p.Partition] = p
	if int32(len(g.parts)) < p.Partitions {
		return Revocation{}, false
	}
	return m.report(id, g), true
}

func (m *RevocationMerger) report(id string, g *merging) Revocation {
	parts := make([]RevocationPartial, 0, len(g.parts))
	for _, p := range g.parts {
		parts = append(parts, p)
	}
	slices.SortFunc(parts, func(a, b RevocationPartial) int { return int(a.Partition - b.Partition) })
	delete(m.pending, id)
	rev := MergePartials(parts)
	m.done[id] = rev.RevokedAt
	return rev
}

// Expire reports, Truncated, the revokes whose partials are still
// incomplete at event time now past their horizon plus grace, and forgets
// the reported ones whose grace has passed.
func (m *RevocationMerger) Expire(now time.Time) []Revocation {
	var out []Revocation
	for id, g := range m.pending {
		var at time.Time
		for _, p := range g.parts {
			at = p.Revoke.RevokedAt
			break
		}
		if now.After(at.Add(m.horizon + m.grace)) {
			out = append(out, m.report(id, g))
		}
	}
	for id, at := range m.done {
		if now.After(at.Add(m.horizon + 2*m.grace)) {
			delete(m.done, id)
		}
	}
	slices.SortFunc(out, func(a, b Revocation) int { return a.RevokedAt.Compare(b.RevokedAt) })
	return out
}

// Flush reports every incomplete revoke (at shutdown), Truncated.
func (m *RevocationMerger) Flush() []Revocation {
	var out []Revocation
	for id, g := range m.pending {
		out = append(out, m.report(id, g))
	}
	slices.SortFunc(out, func(a, b Revocation) int { return a.RevokedAt.Compare(b.RevokedAt) })
	return out
}

// Pending is how many split revokes wait for partials.
func (m *RevocationMerger) Pending() int { return len(m.pending) }
