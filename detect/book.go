package detect

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokenwatch/tokenwatch/finding"
)

// Sink receives findings: once when opened, on updates (at most once per
// finding per Config.UpdateInterval of event time) and once when closed. It is
// called synchronously with the engine's lock held, so it must be quick and
// must not call back into the Engine. Every call gets its own Evidence map:
// the sink may keep it.
type Sink interface {
	Finding(f finding.Finding)
}

// evidence is a detector's typed record of an incident, turned into the
// finding's evidence map at each emit (a fresh map, so no consumer ever sees
// a map the detector is still writing to).
type evidence interface {
	render(m map[string]any)
}

// related is another signal folded into a stronger finding about the same
// incident ("a reused refresh token from a new device is both reuse and a new
// device": one finding, the other signal as evidence).
type related struct {
	kind     finding.Kind
	key      string
	first    time.Time
	last     time.Time
	count    int
	detail   string
	evidence map[string]any
}

const maxRelated = 20

// record is one finding as the book keeps it.
type record struct {
	f          finding.Finding
	ev         evidence
	related    []related
	relatedN   int // signals folded in, including those past maxRelated
	corr       []uint64
	lastEmit   int64 // engine clock (ms) of the last emit
	emitted    bool
	dirty      bool
	superseded string // id of the finding that took this incident over
}

type recKey struct {
	kind finding.Kind
	key  string
}

// ids names what a signal is about; the strings are copied into the finding.
type ids struct {
	service, issuer, region                         string
	tokenID, sessionID, familyID, subject, clientID string
	kid                                             string
}

// signal is one detector's claim that an incident is going on.
type signal struct {
	kind   finding.Kind
	key    string
	ts     int64 // event time, ms
	ids    ids
	detail string    // one line, for when it is folded into a stronger finding
	corr   [2]uint64 // session and family correlation keys; zero when absent
}

// book opens, updates, correlates and closes findings. One incident is one
// finding: the same (kind, key) updates the finding already open, and a
// security signal about a session or family that already has an open finding
// joins the strongest of them.
type book struct {
	cfg      *Config
	sink     Sink
	m        *metrics
	services *interner
	recs     map[recKey]*record
	retired  []finding.Finding // closed findings whose key began a new incident
	open     map[*record]struct{}
	corr     map[uint64]*record
	pending  map[*record]struct{}
	now      func() int64
}

func newBook(cfg *Config, sink Sink, m *metrics, services *interner, now func() int64) *book {
	return &book{
		cfg: cfg, sink: sink, m: m, services: services, now: now,
		recs:    make(map[recKey]*record),
		open:    make(map[*record]struct{}),
		corr:    make(map[uint64]*record),
		pending: make(map[*record]struct{}),
	}
}

// strength ranks kinds: lower is stronger (finding.Kinds is strongest first).
func strength(k finding.Kind) int {
	for i, x := range finding.Kinds() {
		if x == k {
			return i
		}
	}
	return len(finding.Kinds())
}

// correlated kinds describe a session or family being stolen; the others are
// about services and keys and are never merged with them.
func correlated(k finding.Kind) bool {
	return k == finding.Replay || k == finding.RefreshReuse || k == finding.RefreshAnomaly
}

// lookup returns the open finding (kind, key), if any, without raising.
func (b *book) lookup(kind finding.Kind, key string) *record {
	r := b.recs[recKey{kind, key}]
	if r == nil || r.superseded != "" || r.f.Status != finding.Open {
		return nil
	}
	return r
}

// raise records a signal. It returns the finding the signal now belongs to
// and own=true when that finding is of the signal's own kind and key, so the
// caller adds its evidence; own=false when the signal was folded into a
// stronger finding about the same incident (already noted there). A new
// record has ev == nil: the caller sets it and the action, then calls touch.
func (b *book) raise(s signal) (r *record, own bool) {
	rk := recKey{s.kind, s.key}
	id := finding.MakeID(s.kind, s.key)
	if r := b.recs[rk]; r != nil && r.superseded == "" {
		if r.f.Status != finding.Closed {
			bump(&r.f, s.ts)
			b.index(r, s.corr)
			return r, true
		}
		// A late signal from before the finding went quiet would have
		// kept it open had it come in order: it belongs to that incident.
		// Fold it in; the finding stays closed, one incident one finding.
		if s.ts < r.f.LastSeen.UnixMilli()+b.cfg.QuietPeriod.Milliseconds() {
			bump(&r.f, s.ts)
			return r, true
		}
		// The same key signalling again after its finding closed (a quiet
		// period without evidence) is a new incident: a new finding with
		// an id of its own, derived from when it began, so analyze, the
		// pipeline and a restarted pipeline all name it alike.
		b.retire(r)
		id = finding.MakeID(s.kind, s.key+"@"+strconv.FormatInt(s.ts, 10))
	}
	var stronger *record
	var weaker []*record
	if correlated(s.kind) {
		for _, c := range s.corr {
			if c == 0 {
				continue
			}
			o := b.corr[c]
			if o == nil || o.f.Status != finding.Open || o.superseded != "" {
				continue
			}
			if strength(o.f.Kind) <= strength(s.kind) {
				if stronger == nil || strength(o.f.Kind) < strength(stronger.f.Kind) {
					stronger = o
				}
			} else if !slices.Contains(weaker, o) {
				weaker = append(weaker, o)
			}
		}
	}
	if stronger != nil {
		stronger.addRelated(related{kind: s.kind, key: s.key, first: msTime(s.ts), last: msTime(s.ts), count: 1, detail: s.detail})
		bump(&stronger.f, s.ts)
		b.index(stronger, s.corr)
		for _, w := range weaker {
			b.supersede(w, stronger)
		}
		b.touch(stronger)
		return stronger, false
	}
	r = &record{f: finding.Finding{
		ID:         id,
		Kind:       s.kind,
		Severity:   b.cfg.severity(s.kind),
		Status:     finding.Open,
		Key:        strings.Clone(s.key),
		Service:    strings.Clone(s.ids.service),
		Issuer:     strings.Clone(s.ids.issuer),
		Region:     strings.Clone(s.ids.region),
		TokenID:    strings.Clone(s.ids.tokenID),
		SessionID:  strings.Clone(s.ids.sessionID),
		FamilyID:   strings.Clone(s.ids.familyID),
		Subject:    strings.Clone(s.ids.subject),
		ClientID:   strings.Clone(s.ids.clientID),
		Kid:        strings.Clone(s.ids.kid),
		FirstSeen:  msTime(s.ts),
		LastSeen:   msTime(s.ts),
		DetectedAt: msTime(b.now()),
		Count:      1,
	}}
	if old := b.recs[rk]; old != nil {
		r.f.Version = old.f.Version // same id: the store must keep seeing versions grow
	}
	b.recs[rk] = r
	b.opened(r)
	b.index(r, s.corr)
	for _, w := range weaker {
		b.supersede(w, r)
	}
	return r, true
}

func bump(f *finding.Finding, ts int64) {
	f.Count++
	t := msTime(ts)
	if t.After(f.LastSeen) {
		f.LastSeen = t
	}
	if t.Before(f.FirstSeen) {
		f.FirstSeen = t
	}
}

func (r *record) addRelated(x related) {
	r.relatedN += x.count
	for i := range r.related {
		if y := &r.related[i]; y.kind == x.kind && y.key == x.key && x.evidence == nil {
			y.count += x.count
			if x.last.After(y.last) {
				y.last = x.last
			}
			if x.detail != "" {
				y.detail = x.detail
			}
			return
		}
	}
	if len(r.related) < maxRelated {
		x.key = strings.Clone(x.key)
		r.related = append(r.related, x)
	}
}

func (b *book) index(r *record, corr [2]uint64) {
	if !correlated(r.f.Kind) {
		return
	}
	for _, c := range corr {
		if c == 0 {
			continue
		}
		if b.corr[c] != r {
			b.corr[c] = r
			r.corr = append(r.corr, c)
		}
	}
}

func (b *book) unindex(r *record) {
	for _, c := range r.corr {
		if b.corr[c] == r {
			delete(b.corr, c)
		}
	}
	r.corr = r.corr[:0]
}

// supersede closes a weaker finding in favour of a stronger one about the
// same incident; its evidence moves to the stronger one.
func (b *book) supersede(w, into *record) {
	ev := map[string]any{}
	if w.ev != nil {
		w.ev.render(ev)
	}
	into.addRelated(related{kind: w.f.Kind, key: w.f.Key, first: w.f.FirstSeen, last: w.f.LastSeen,
		count: w.f.Count, detail: "superseded by the stronger finding", evidence: ev})
	for _, x := range w.related {
		into.addRelated(x)
	}
	if w.f.FirstSeen.Before(into.f.FirstSeen) {
		into.f.FirstSeen = w.f.FirstSeen
	}
	for _, c := range w.corr {
		if b.corr[c] == w {
			b.corr[c] = into
			into.corr = append(into.corr, c)
		}
	}
	w.corr = nil
	w.superseded = into.f.ID
	b.closed(w)
	b.emit(w)
}

func (b *book) opened(r *record) {
	r.f.Status = finding.Open
	r.f.ClosedAt = time.Time{}
	b.open[r] = struct{}{}
	b.m.findingsTotal.WithLabelValues(string(r.f.Kind), string(r.f.Severity), b.services.label(r.f.Service)).Inc()
	b.m.findingsOpen.WithLabelValues(string(r.f.Kind), string(r.f.Severity)).Inc()
}

// reopen revives a closed finding when its incident starts again: same id,
// so the store's row turns open again instead of a second row appearing.
// retire keeps a closed finding whose key starts a new incident, for all();
// bounded like the records themselves (the oldest retired go first).
func (b *book) retire(r *record) {
	if r.superseded != "" {
		return
	}
	b.retired = append(b.retired, r.snapshot())
	if over := len(b.retired) - b.cfg.MaxFindings; over > 0 {
		b.retired = slices.Delete(b.retired, 0, over)
		b.m.evictions.WithLabelValues(stateFinding).Add(float64(over))
	}
}

func (b *book) closed(r *record) {
	r.f.Status = finding.Closed
	r.f.ClosedAt = msTime(b.now())
	delete(b.open, r)
	b.unindex(r)
	b.m.findingsOpen.WithLabelValues(string(r.f.Kind), string(r.f.Severity)).Dec()
}

// touch sends the finding to the sink: at once when it is new, else at most
// once per UpdateInterval of event time (the rest wait for the tick).
func (b *book) touch(r *record) {
	now := b.now()
	if !r.emitted || now-r.lastEmit >= b.cfg.UpdateInterval.Milliseconds() {
		b.emit(r)
		return
	}
	r.dirty = true
	b.pending[r] = struct{}{}
}

// emit sends the finding. Its version grows with every emit and is never
// below the event-time clock (ms << 10), so even a finding re-created after
// being trimmed, or by a restarted engine, outranks its older rows in the
// store's ReplacingMergeTree.
func (b *book) emit(r *record) {
	now := b.now()
	r.f.Version = max(r.f.Version+1, uint64(max(now, 0))<<10)
	r.lastEmit = now
	r.emitted = true
	r.dirty = false
	delete(b.pending, r)
	b.sink.Finding(r.snapshot())
}

// snapshot is the finding with a freshly built evidence map.
func (r *record) snapshot() finding.Finding {
	f := r.f
	f.Evidence = make(map[string]any, 8)
	if r.ev != nil {
		r.ev.render(f.Evidence)
	}
	if len(r.related) > 0 {
		rel := make([]map[string]any, 0, len(r.related))
		for _, x := range r.related {
			m := map[string]any{"kind": string(x.kind), "key": x.key, "first_seen": x.first, "last_seen": x.last, "count": x.count}
			if x.detail != "" {
				m["detail"] = x.detail
			}
			if x.evidence != nil {
				m["evidence"] = x.evidence
			}
			rel = append(rel, m)
		}
		f.Evidence["related"] = rel
		f.Evidence["related_signals"] = r.relatedN
	}
	if r.superseded != "" {
		f.Evidence["superseded_by"] = r.superseded
	}
	return f
}

// tick closes findings quiet for QuietPeriod, sends throttled updates that
// are due, and trims closed findings past MaxFindings.
func (b *book) tick(now int64, all bool) {
	quiet := b.cfg.QuietPeriod.Milliseconds()
	for r := range b.open {
		if now-r.f.LastSeen.UnixMilli() >= quiet {
			b.closed(r)
			b.emit(r)
		}
	}
	interval := b.cfg.UpdateInterval.Milliseconds()
	for r := range b.pending {
		if all || now-r.lastEmit >= interval {
			b.emit(r)
		}
	}
	if len(b.recs) > b.cfg.MaxFindings {
		b.trim()
	}
	b.m.entries.WithLabelValues(stateFinding).Set(float64(len(b.recs)))
}

func (b *book) trim() {
	var closed []*record
	for _, r := range b.recs {
		if r.f.Status == finding.Closed {
			closed = append(closed, r)
		}
	}
	slices.SortFunc(closed, func(x, y *record) int { return x.f.LastSeen.Compare(y.f.LastSeen) })
	ev := b.m.evictions.WithLabelValues(stateFinding)
	for _, r := range closed {
		if len(b.recs) <= b.cfg.MaxFindings {
			break
		}
		delete(b.recs, recKey{r.f.Kind, r.f.Key})
		ev.Inc()
	}
}

// all returns every finding but the superseded ones, in a deterministic order.
func (b *book) all() []finding.Finding {
	out := make([]finding.Finding, 0, len(b.recs)+len(b.retired))
	out = append(out, b.retired...)
	for _, r := range b.recs {
		if r.superseded == "" {
			out = append(out, r.snapshot())
		}
	}
	slices.SortFunc(out, func(x, y finding.Finding) int {
		return cmp.Or(x.FirstSeen.Compare(y.FirstSeen), cmp.Compare(x.Kind, y.Kind), cmp.Compare(x.Key, y.Key))
	})
	return out
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
