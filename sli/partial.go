package sli

import (
	"slices"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
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
	// most maxKeptRejections); LastRejection is the latest.
	Rejections    []int64 `json:"rejections,omitempty"`
	LastRejection int64   `json:"last_rejection,omitempty"`
}

// TokenFacts is what is known of a token from the event that issued it,
// for a tracker that does not see that event (the fleet's analyze member
// that owns the token's validations, when a refresh issued it).
type TokenFacts struct {
	Token    string    `json:"token"`
	Session  string    `json:"session,omitempty"`
	Subject  string    `json:"subject,omitempty"`
	Family   string    `json:"family,omitempty"`
	IssuedAt time.Time `json:"issued_at"`
	Expires  time.Time `json:"expires,omitempty"`
}

// Learn indexes a token as its issue would: the revokes of its session,
// subject or family then cover its validations that name only the token.
func (t *Tracker) Learn(f TokenFacts) {
	if f.Token == "" {
		return
	}
	r := &record{ts: f.IssuedAt.UnixNano(), kind: event.KindRefresh, outcome: event.OK, token: f.Token,
		session: f.Session, subject: f.Subject, family: f.Family}
	if !f.Expires.IsZero() {
		r.exp = f.Expires.UnixNano()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.indexToken(r)
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
// revoke's partials are reported for them, and a token revoke only when
// its token's partition is one of them (the new owner of a partition moved
// away reports its share).
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
// partition's partial has arrived. Members read their partitions at
// different speeds (a backlog, a restart), so a partial can come long after
// the others: the merger waits Wait of wall-clock time from a revoke's first
// partial, then reports what it has, Truncated. A partial that arrives
// after a truncated report is merged in and the revoke reported again
// (counted in Late); a copy of a partial already merged (a redelivery, a
// new owner reporting a moved partition again) replaces it and changes
// nothing.
type RevocationMerger struct {
	wait    time.Duration
	pending map[string]*merging
	// Late counts partials that arrived after their revoke was reported
	// truncated, and were merged into a new report.
	Late int64
}

type merging struct {
	first    time.Time // wall clock of the first partial
	parts    map[int32]RevocationPartial
	reported bool // reported (complete, or truncated at the wait)
	complete bool
}

// NewRevocationMerger waits up to wait for a revoke's missing partials.
func NewRevocationMerger(wait time.Duration) *RevocationMerger {
	return &RevocationMerger{wait: wait, pending: map[string]*merging{}}
}

// Add takes one partial, arrived at now (wall clock); it returns the merged
// result when the revoke is complete, or when a late partial changes a
// truncated report.
func (m *RevocationMerger) Add(p RevocationPartial, now time.Time) (Revocation, bool) {
	id := p.Revoke.ID
	g := m.pending[id]
	if g == nil {
		g = &merging{first: now, parts: map[int32]RevocationPartial{}}
		m.pending[id] = g
	}
	if g.complete {
		return Revocation{}, false // a copy of a partial already merged
	}
	_, had := g.parts[p.Partition]
	g.parts[p.Partition] = p
	if g.reported && !had {
		m.Late++
	}
	if int32(len(g.parts)) < p.Partitions && !(g.reported && !had) {
		return Revocation{}, false
	}
	return m.report(g), true
}

func (m *RevocationMerger) report(g *merging) Revocation {
	parts := make([]RevocationPartial, 0, len(g.parts))
	for _, p := range g.parts {
		parts = append(parts, p)
	}
	slices.SortFunc(parts, func(a, b RevocationPartial) int { return int(a.Partition - b.Partition) })
	rev := MergePartials(parts)
	g.reported, g.complete = true, !rev.Truncated
	return rev
}

// Expire reports, Truncated, the revokes still incomplete Wait after their
// first partial, and forgets the reported ones after another Wait (a copy
// arriving later then starts a new, incomplete revoke).
func (m *RevocationMerger) Expire(now time.Time) []Revocation {
	var out []Revocation
	for id, g := range m.pending {
		switch {
		case g.reported && now.Sub(g.first) > 2*m.wait:
			delete(m.pending, id)
		case !g.reported && now.Sub(g.first) > m.wait:
			out = append(out, m.report(g))
		}
	}
	slices.SortFunc(out, func(a, b Revocation) int { return a.RevokedAt.Compare(b.RevokedAt) })
	return out
}

// Flush reports every revoke not yet reported (at shutdown), Truncated.
func (m *RevocationMerger) Flush() []Revocation {
	var out []Revocation
	for _, g := range m.pending {
		if !g.reported {
			out = append(out, m.report(g))
		}
	}
	slices.SortFunc(out, func(a, b Revocation) int { return a.RevokedAt.Compare(b.RevokedAt) })
	return out
}

// Retain forgets the revokes keep refuses (whose merge another member
// owns now): the new owner reports them, this one must not report them
// truncated.
func (m *RevocationMerger) Retain(keep func(id string) bool) {
	for id := range m.pending {
		if !keep(id) {
			delete(m.pending, id)
		}
	}
}

// Pending is how many split revokes wait for partials.
func (m *RevocationMerger) Pending() int {
	n := 0
	for _, g := range m.pending {
		if !g.reported {
			n++
		}
	}
	return n
}
