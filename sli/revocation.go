package sli

import (
	"container/heap"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// Revocation is the final M4 result of one revoke: how long the services
// that saw a covered token after it took to stop accepting it.
type Revocation struct {
	// ID is stable for the same revoke event, so a replayed result
	// replaces rather than duplicates a stored row.
	ID        string    `json:"id"`
	Service   string    `json:"service"` // the revoke's emitter
	Issuer    string    `json:"issuer,omitempty"`
	Region    string    `json:"region,omitempty"`
	Target    string    `json:"target"` // token, session, subject or family
	TokenID   string    `json:"token_id,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	FamilyID  string    `json:"family_id,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	RevokedAt time.Time `json:"revoked_at"`
	// Propagated is true when every service that accepted a covered token
	// after the revoke later rejected it as revoked within the horizon.
	Propagated bool `json:"propagated"`
	// PropagationS is the largest service lag in seconds. When Propagated is
	// false it is only a lower bound (the latest acceptance seen).
	PropagationS float64 `json:"propagation_s"`
	// Truncated is true when the result was emitted before revoke ts +
	// horizon (at Flush, or when too many revokes were pending), so later
	// events could still have changed it.
	Truncated bool `json:"truncated,omitempty"`
	// ByService has one entry per service that saw a covered token after
	// the revoke and within the horizon.
	ByService map[string]ServiceLag `json:"by_service"`
}

// TargetID is the id the revoke named: its token, session, subject or family.
func (r Revocation) TargetID() string {
	switch r.Target {
	case "session":
		return r.SessionID
	case "subject":
		return r.Subject
	case "family":
		return r.FamilyID
	}
	return r.TokenID
}

// ServiceLag is what one service did with a revoke's tokens.
type ServiceLag struct {
	// ResidualAcceptances counts the service's ok validations of covered
	// tokens after the revoke.
	ResidualAcceptances int `json:"residual_acceptances"`
	// Propagated is false when the service accepted after the revoke and no
	// revoked rejection followed within the horizon.
	Propagated bool `json:"propagated"`
	// LagS is the time from the revoke to the service's first revoked
	// rejection after its last acceptance; 0 when it never accepted after the
	// revoke. When Propagated is false it is the lower bound LastAcceptanceS.
	LagS float64 `json:"lag_s"`
	// LastAcceptanceS is the last acceptance, seconds after the revoke: a
	// lower bound of the lag. Absent when the service never accepted.
	LastAcceptanceS *float64 `json:"last_acceptance_s,omitempty"`
	// FirstRejectionS is, for a service that never accepted after the revoke,
	// its first revoked rejection in seconds after the revoke: only an upper
	// bound on when it learned of the revoke (it may simply have first seen
	// the token then), never a lag.
	FirstRejectionS *float64 `json:"first_rejection_s,omitempty"`
}

// TrackerConfig bounds the revocation tracker in time and memory.
type TrackerConfig struct {
	// Horizon is how long after a revoke services are watched; a service
	// that accepted and did not reject within it is not propagated.
	// Default 10m.
	Horizon time.Duration
	// Lateness is how far behind the newest ts an event may arrive and still
	// be processed in order. Default 30s. Events later than that are counted
	// in TrackerStats.LateEvents; the revokes still pending take them into
	// account all the same (a result does not depend on order), a revoke
	// that late is lost.
	Lateness time.Duration
	// MaxTokenLifetime is how long a token with no exp stays in the index
	// after it was first seen. Default 24h.
	MaxTokenLifetime time.Duration
	// MaxTokens caps the token index. Default 1,000,000.
	MaxTokens int
	// MaxPending caps revokes waiting for their horizon. Default 100,000.
	MaxPending int
	// BreachAfter, when set (the revocation SLO), reports a revoke through
	// OnBreach as soon as some service accepts a covered token this long
	// after it, without waiting for the horizon: the slow-revocation
	// detector can open its finding minutes earlier. The final result
	// follows through OnResult as usual.
	BreachAfter time.Duration
	// MaxBuffered caps the reorder buffer. Default 1,000,000. Past it the
	// oldest events are processed early (TrackerStats.ReorderOverflows).
	MaxBuffered int
	// Split, when set (the fleet's analyze stage), splits the result of
	// each revoke the keyed topic broadcasts by keyed partition: see Split.
	Split *Split
}

// Split tells the tracker how the fleet's keyed topic spreads the events
// (package rekey decides; the tracker only asks). A revoke that reached
// every keyed partition covers tokens spread over every analyze member, so
// no member can tell its whole result: each reports, through OnPartial, one
// partial result per keyed partition it owns, and the owner of the revoke
// merges them (RevocationMerger). A revoke of one token reaches that
// token's partition only and is reported whole, as without Split.
type Split struct {
	// Partitions is the keyed topic's partition count.
	Partitions int32
	// PartitionOf is the keyed partition a validation of token (at
	// service) goes to.
	PartitionOf func(token, service string) int32
	// Broadcast says whether a revoke of target naming token reaches every
	// keyed partition.
	Broadcast func(target, token string) bool
}

func (c *TrackerConfig) applyDefaults() {
	if c.Horizon == 0 {
		c.Horizon = 10 * time.Minute
	}
	if c.Lateness == 0 {
		c.Lateness = 30 * time.Second
	}
	if c.MaxTokenLifetime == 0 {
		c.MaxTokenLifetime = 24 * time.Hour
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = 1_000_000
	}
	if c.MaxPending == 0 {
		c.MaxPending = 100_000
	}
	if c.MaxBuffered == 0 {
		c.MaxBuffered = 1_000_000
	}
}

// Validate names the first setting that cannot work.
func (c TrackerConfig) Validate() error {
	switch {
	case c.Horizon < 0:
		return fmt.Errorf("revocation horizon: want a positive duration, got %s", c.Horizon)
	case c.Lateness < 0:
		return fmt.Errorf("revocation lateness: want zero or more, got %s", c.Lateness)
	case c.MaxTokenLifetime < 0:
		return fmt.Errorf("revocation max token lifetime: want a positive duration, got %s", c.MaxTokenLifetime)
	case c.MaxTokens < 0 || c.MaxPending < 0 || c.MaxBuffered < 0:
		return fmt.Errorf("revocation caps: want positive numbers, got tokens=%d pending=%d buffered=%d", c.MaxTokens, c.MaxPending, c.MaxBuffered)
	}
	return nil
}

// TrackerStats are the tracker's own health counters, for the pipeline's
// metrics (detector_state_entries / detector_state_evictions_total).
type TrackerStats struct {
	IndexedTokens        int   // tokens in the index now
	PendingRevokes       int   // revokes waiting for their horizon now
	BufferedEvents       int   // events in the reorder buffer now
	IndexEvictions       int64 // tokens dropped because the index was full
	PendingEvictions     int64 // revokes finalized early because too many were pending
	ReorderOverflows     int64 // events processed early because the buffer was full
	LateEvents           int64 // events later than the lateness (still taken by pending revokes; a late revoke is lost)
	RevokesWithoutTarget int64 // revokes naming no token, session, subject or family id
}

// Tracker measures revocation propagation (M4). It keeps an index of which
// session, subject and family each token belongs to (from issue, refresh and
// validate events), watches every service that sees a covered token after a
// revoke, and reports each revoke once its horizon has passed in event time.
//
// Events are processed in ts order: each is held in a reorder buffer until
// the watermark (largest ts seen − Lateness) passes it. A revoke's result is
// emitted when the watermark passes revoke ts + Horizon, or at Flush.
//
// A revoke of a session or family covers every token of it, even one issued
// after the revoke (a dead session or a compromised family has no valid
// tokens). A revoke of a subject covers only tokens known to be issued at or
// before it (their iat, issue event, or an earlier sighting in the index): a
// subject who logs in again after "log out everywhere" holds valid new
// tokens, and accepting them is not a residual acceptance.
//
// Memory is bounded: index entries expire at the token's exp (or
// MaxTokenLifetime after first seen), and the index, the pending revokes and
// the reorder buffer each have a cap; evictions are counted in Stats. When the
// index is full an arbitrary entry is evicted (Go's map order): cheaper than
// keeping an LRU, and a wrong guess only loses coverage of one token.
//
// Tracker is safe for concurrent use. Callbacks run on the caller's
// goroutine, outside the tracker's lock.
type Tracker struct {
	cfg TrackerConfig

	mu        sync.Mutex
	callbacks []func(Revocation)
	buf       recordHeap
	seq       uint64
	maxTS     int64 // unix nanos; math.MinInt64 until the first event
	done      int64 // every record with ts < done has been processed
	lastSweep int64
	index     map[string]*tokenInfo
	pending   []*pendingRevoke // in revoke ts order (records are processed in order)
	byTarget  map[targetKey][]*pendingRevoke
	stats     TrackerStats
	ready     []Revocation // finalized, waiting for callbacks
	breachCBs []func(Revocation)
	breaches  []Revocation // partial results of revokes breached before their horizon
	// With Split: the keyed partitions this member owns, and the partial
	// results waiting for their callbacks.
	owned      []int32
	partials   []RevocationPartial
	partialCBs []func(RevocationPartial)
}

type tokenInfo struct {
	session, subject, family string
	issuedAt                 int64 // unix nanos, 0 = unknown
	firstSeen                int64
	expires                  int64
}

type targetKey struct {
	target string
	id     string
}

type pendingRevoke struct {
	rev      Revocation
	ts       int64
	keys     targetKey
	services map[watchKey]*serviceWatch
	breached bool // already reported through OnBreach
	split    bool // reported per keyed partition (Split)
}

// watchKey is a service, and with Split the keyed partition of the tokens
// it saw (0 otherwise).
type watchKey struct {
	service string
	part    int32
}

// serviceWatch is one service's behaviour after one revoke. It does not
// depend on the order its events arrive in: a late event is still taken
// while the revoke is pending.
type serviceWatch struct {
	residual       int
	lastAccept     int64 // 0 = none
	firstRejection int64 // first revoked rejection at all; 0 = none
	// rejections are the earliest revoked rejections at or after
	// lastAccept (at most maxKeptRejections), lastRejection the latest:
	// the lag runs to the first rejection after the last acceptance,
	// whichever arrived first, and a split revoke's merge finds the first
	// after another partition's later acceptance.
	rejections    []int64
	lastRejection int64
}

// maxKeptRejections bounds the rejection times kept per service and revoke.
// A service that rejects a revoked token does so for every request after
// it learned of the revoke; the first one after the last acceptance is
// among the first few kept unless dozens of rejections came before a later
// acceptance arrived out of order (then the latest bounds it from above).
const maxKeptRejections = 16

func (w *serviceWatch) accept(ts int64) {
	w.residual++
	if ts < w.lastAccept {
		return
	}
	w.lastAccept = ts
	i := 0
	for i < len(w.rejections) && w.rejections[i] <= ts {
		i++
	}
	w.rejections = append(w.rejections[:0], w.rejections[i:]...)
}

func (w *serviceWatch) reject(ts int64) {
	if w.firstRejection == 0 || ts < w.firstRejection {
		w.firstRejection = ts
	}
	w.lastRejection = max(w.lastRejection, ts)
	if ts < w.lastAccept {
		return
	}
	i, _ := slices.BinarySearch(w.rejections, ts)
	if i >= maxKeptRejections {
		return
	}
	w.rejections = slices.Insert(w.rejections, i, ts)
	if len(w.rejections) > maxKeptRejections {
		w.rejections = w.rejections[:maxKeptRejections]
	}
}

// rejectionAfter is the first revoked rejection after the last acceptance
// (0: none); see rejections.
func (w *serviceWatch) rejectionAfter() int64 {
	if len(w.rejections) > 0 {
		return w.rejections[0]
	}
	if w.lastRejection > w.lastAccept && w.lastAccept != 0 {
		return w.lastRejection
	}
	return 0
}

// record is the part of an event the tracker needs, kept small because the
// reorder buffer holds one per event for Lateness.
type record struct {
	ts      int64
	seq     uint64
	kind    event.Kind
	outcome event.Outcome
	service string
	token   string
	session string
	subject string
	family  string
	iat     int64
	exp     int64
	revoke  *revokeFields
}

type revokeFields struct {
	target, reason, issuer, region string
}

// NewTracker builds a Tracker; zero config fields take their defaults.
func NewTracker(cfg TrackerConfig) (*Tracker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sli: %w", err)
	}
	cfg.applyDefaults()
	return &Tracker{
		cfg:       cfg,
		maxTS:     math.MinInt64,
		done:      math.MinInt64,
		lastSweep: math.MinInt64,
		index:     map[string]*tokenInfo{},
		byTarget:  map[targetKey][]*pendingRevoke{},
	}, nil
}

// OnResult registers fn to receive every revoke's final result, in revoke
// ts order. Register before the first Observe.
func (t *Tracker) OnResult(fn func(Revocation)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.callbacks = append(t.callbacks, fn)
}

// Stats returns the tracker's health counters.
func (t *Tracker) Stats() TrackerStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stats
	s.IndexedTokens = len(t.index)
	s.PendingRevokes = len(t.pending)
	s.BufferedEvents = len(t.buf)
	return s
}

// Observe takes one event. Only issue, refresh, validate and revoke events
// matter; the rest are ignored.
func (t *Tracker) Observe(e *event.Event) {
	r, ok := toRecord(e)
	if !ok {
		return
	}
	t.mu.Lock()
	if r.ts < t.done {
		// Behind the ordered pass (a source read late), but the revokes
		// still pending take it: their results do not depend on order
		// (serviceWatch). A revoke that late is lost.
		t.stats.LateEvents++
		if r.kind != event.KindRevoke {
			t.process(r)
		}
		breaches, ready, partials := t.take(&t.breaches, t.breachCBs), t.take(&t.ready, t.callbacks), t.takePartials()
		t.mu.Unlock()
		breaches()
		ready()
		partials()
		return
	}
	t.seq++
	r.seq = t.seq
	heap.Push(&t.buf, r)
	if r.ts > t.maxTS {
		t.maxTS = r.ts
	}
	t.advance(satSub(t.maxTS, int64(t.cfg.Lateness)))
	for len(t.buf) > t.cfg.MaxBuffered {
		t.stats.ReorderOverflows++
		t.process(heap.Pop(&t.buf).(*record))
	}
	breaches, ready, partials := t.take(&t.breaches, t.breachCBs), t.take(&t.ready, t.callbacks), t.takePartials()
	t.mu.Unlock()
	breaches()
	ready()
	partials()
}

// Advance moves event time to now (the pipeline's watermark) with no event:
// the revokes whose horizon has passed are reported even while this
// tracker's own events pause (an analyze member whose keyed partitions are
// quiet still reports its partials).
func (t *Tracker) Advance(now time.Time) {
	ns := now.UnixNano()
	t.mu.Lock()
	if ns > t.maxTS {
		t.maxTS = ns
	}
	t.advance(satSub(t.maxTS, int64(t.cfg.Lateness)))
	breaches, ready, partials := t.take(&t.breaches, t.breachCBs), t.take(&t.ready, t.callbacks), t.takePartials()
	t.mu.Unlock()
	breaches()
	ready()
	partials()
}

// Flush processes every buffered event and emits every pending revoke
// (marked Truncated when its horizon had not passed). Call it at the end of
// a file or at shutdown.
func (t *Tracker) Flush() {
	t.mu.Lock()
	for len(t.buf) > 0 {
		t.process(heap.Pop(&t.buf).(*record))
	}
	if t.maxTS > t.done {
		t.done = t.maxTS
	}
	for len(t.pending) > 0 {
		p := t.pending[0]
		t.finalize(p, p.ts+int64(t.cfg.Horizon) >= t.done)
	}
	breaches, ready, partials := t.take(&t.breaches, t.breachCBs), t.take(&t.ready, t.callbacks), t.takePartials()
	t.mu.Unlock()
	breaches()
	ready()
	partials()
}

// OnBreach registers fn for early reports (see TrackerConfig.BreachAfter).
func (t *Tracker) OnBreach(fn func(Revocation)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.breachCBs = append(t.breachCBs, fn)
}

// take returns what q holds (finished results or early reports) and the
// callbacks to hand them to, emptying q; the caller calls them after
// unlocking, so a callback may use the tracker.
func (t *Tracker) take(q *[]Revocation, cbs []func(Revocation)) func() {
	results := *q
	*q = nil
	return func() {
		for _, r := range results {
			for _, fn := range cbs {
				fn(r)
			}
		}
	}
}

// advance processes every buffered record with ts before the watermark, in
// ts order, and finalizes the revokes whose horizon ends before it.
func (t *Tracker) advance(watermark int64) {
	if watermark <= t.done {
		return
	}
	for len(t.buf) > 0 && t.buf[0].ts < watermark {
		t.process(heap.Pop(&t.buf).(*record))
	}
	t.done = watermark
	t.finalizeBefore(watermark)
}

func (t *Tracker) finalizeBefore(ts int64) {
	for len(t.pending) > 0 && t.pending[0].ts+int64(t.cfg.Horizon) < ts {
		t.finalize(t.pending[0], false)
	}
}

func (t *Tracker) process(r *record) {
	// Revokes whose horizon ended before this record are final: nothing at
	// or after this ts can change them.
	t.finalizeBefore(r.ts)
	// Expire tokens by the processed ts rather than the watermark, so a
	// whole file processed at Flush expires them as it goes too.
	if t.lastSweep == math.MinInt64 || r.ts-t.lastSweep >= int64(time.Minute) {
		t.sweepIndex(r.ts)
		t.lastSweep = r.ts
	}
	switch r.kind {
	case event.KindRevoke:
		t.startRevoke(r)
	case event.KindIssue, event.KindRefresh:
		t.indexToken(r)
	case event.KindValidate:
		info := t.indexToken(r)
		t.watchValidation(r, info)
	}
}

// indexToken records what the event says about its token and returns the
// merged knowledge (nil when the event names no token).
func (t *Tracker) indexToken(r *record) *tokenInfo {
	if r.token == "" {
		return nil
	}
	info := t.index[r.token]
	if info == nil {
		if len(t.index) >= t.cfg.MaxTokens {
			for k := range t.index {
				delete(t.index, k)
				t.stats.IndexEvictions++
				break
			}
		}
		info = &tokenInfo{firstSeen: r.ts, expires: r.ts + int64(t.cfg.MaxTokenLifetime)}
		t.index[r.token] = info
	}
	if r.session != "" {
		info.session = r.session
	}
	if r.subject != "" {
		info.subject = r.subject
	}
	if r.family != "" {
		info.family = r.family
	}
	issued := r.iat
	if r.kind == event.KindIssue || r.kind == event.KindRefresh {
		if r.outcome == event.OK && (issued == 0 || r.ts < issued) {
			issued = r.ts
		}
	}
	if issued != 0 && (info.issuedAt == 0 || issued < info.issuedAt) {
		info.issuedAt = issued
	}
	if r.exp != 0 {
		info.expires = r.exp
	}
	return info
}

func (t *Tracker) sweepIndex(now int64) {
	for k, info := range t.index {
		if info.expires < now {
			delete(t.index, k)
		}
	}
}

func (t *Tracker) startRevoke(r *record) {
	target := r.revoke.target
	if target == "" {
		switch {
		case r.token != "":
			target = "token"
		case r.family != "":
			target = "family"
		case r.session != "":
			target = "session"
		case r.subject != "":
			target = "subject"
		}
	}
	var id string
	switch target {
	case "token":
		id = r.token
	case "session":
		id = r.session
	case "subject":
		id = r.subject
	case "family":
		id = r.family
	}
	if id == "" {
		t.stats.RevokesWithoutTarget++
		return
	}
	if len(t.pending) >= t.cfg.MaxPending {
		t.stats.PendingEvictions++
		t.finalize(t.pending[0], true)
	}
	at := time.Unix(0, r.ts).UTC()
	p := &pendingRevoke{
		ts:   r.ts,
		keys: targetKey{target: target, id: id},
		rev: Revocation{
			ID:        revocationID(r.service, at, target, id),
			Service:   r.service,
			Issuer:    r.revoke.issuer,
			Region:    r.revoke.region,
			Target:    target,
			TokenID:   r.token,
			SessionID: r.session,
			Subject:   r.subject,
			FamilyID:  r.family,
			Reason:    r.revoke.reason,
			RevokedAt: at,
		},
		services: map[watchKey]*serviceWatch{},
		split:    t.cfg.Split != nil && t.cfg.Split.Broadcast(r.revoke.target, r.token),
	}
	t.pending = append(t.pending, p)
	t.byTarget[p.keys] = append(t.byTarget[p.keys], p)
}

func revocationID(service string, at time.Time, target, id string) string {
	h := sha256.Sum256([]byte(service + "\x00" + strconv.FormatInt(at.UnixNano(), 10) + "\x00" + target + "\x00" + id))
	return hex.EncodeToString(h[:12])
}

// watchValidation applies one validation to every pending revoke covering
// its token.
func (t *Tracker) watchValidation(r *record, info *tokenInfo) {
	session, subject, family, issued := r.session, r.subject, r.family, r.iat
	if info != nil {
		session, subject, family = or(session, info.session), or(subject, info.subject), or(family, info.family)
		if info.issuedAt != 0 {
			issued = info.issuedAt
		} else if info.firstSeen < r.ts {
			// Seen before this validation: it existed by then.
			issued = info.firstSeen
		}
	}
	if r.token != "" {
		t.watch(targetKey{"token", r.token}, r, 0)
	}
	if session != "" {
		t.watch(targetKey{"session", session}, r, 0)
	}
	if family != "" {
		t.watch(targetKey{"family", family}, r, 0)
	}
	// A subject revoke ends the sessions the subject had, not the ones it
	// opens afterwards, so only tokens known to predate it are covered.
	if subject != "" && issued != 0 {
		t.watch(targetKey{"subject", subject}, r, issued)
	}
}

func (t *Tracker) watch(k targetKey, r *record, issued int64) {
	for _, p := range t.byTarget[k] {
		if r.ts <= p.ts || issued > p.ts {
			continue // before the revoke, or a token issued after it
		}
		wk := watchKey{service: r.service}
		if p.split {
			wk.part = t.cfg.Split.PartitionOf(r.token, r.service)
		}
		w := p.services[wk]
		if w == nil {
			w = &serviceWatch{}
			p.services[wk] = w
		}
		switch r.outcome {
		case event.OK:
			w.accept(r.ts)
			// A split revoke's breach is the merging owner's to report.
			if t.cfg.BreachAfter > 0 && !p.breached && !p.split && r.ts-p.ts > int64(t.cfg.BreachAfter) {
				p.breached = true
				t.breaches = append(t.breaches, t.result(p, true))
			}
		case event.Revoked:
			w.reject(r.ts)
		}
	}
}

// finalize computes p's result, queues it for the callbacks and forgets p.
// p must be the oldest pending revoke.
func (t *Tracker) finalize(p *pendingRevoke, truncated bool) {
	t.pending = t.pending[1:]
	list := t.byTarget[p.keys]
	for i, q := range list {
		if q == p {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(t.byTarget, p.keys)
	} else {
		t.byTarget[p.keys] = list
	}

	if p.split {
		for _, part := range t.owned {
			t.partials = append(t.partials, t.partial(p, part, truncated))
		}
		return
	}
	if t.cfg.Split != nil && !t.owns(t.cfg.Split.PartitionOf(p.rev.TokenID, p.rev.Service)) {
		// A token revoke whose token's partition moved to another member:
		// that member, which rebuilt the partition and reads on, reports it.
		return
	}
	t.ready = append(t.ready, t.result(p, truncated))
}

func (t *Tracker) owns(part int32) bool {
	_, ok := slices.BinarySearch(t.owned, part)
	return ok
}

// result is p's outcome so far; truncated marks it as emitted before its
// horizon passed.
func (t *Tracker) result(p *pendingRevoke, truncated bool) Revocation {
	rev := p.rev
	rev.Truncated = truncated
	rev.Propagated = true
	rev.ByService = make(map[string]ServiceLag, len(p.services))
	for wk, w := range p.services {
		svc := wk.service // one partition per service unless split
		lag := ServiceLag{ResidualAcceptances: w.residual, Propagated: true}
		if w.residual > 0 {
			last := seconds(w.lastAccept - p.ts)
			lag.LastAcceptanceS = &last
			if after := w.rejectionAfter(); after != 0 {
				lag.LagS = seconds(after - p.ts)
			} else {
				lag.Propagated = false
				lag.LagS = last
				rev.Propagated = false
			}
		} else if w.firstRejection != 0 {
			first := seconds(w.firstRejection - p.ts)
			lag.FirstRejectionS = &first
		}
		rev.PropagationS = max(rev.PropagationS, lag.LagS)
		rev.ByService[svc] = lag
	}
	return rev
}

func toRecord(e *event.Event) (*record, bool) {
	switch e.Kind {
	case event.KindIssue, event.KindRefresh, event.KindValidate, event.KindRevoke:
	default:
		return nil, false
	}
	if e.TokenID == "" && e.SessionID == "" && e.Subject == "" && e.FamilyID == "" {
		return nil, false
	}
	r := &record{
		ts:      e.TS.UnixNano(),
		kind:    e.Kind,
		outcome: e.Outcome,
		service: e.Service,
		token:   e.TokenID,
		session: e.SessionID,
		subject: e.Subject,
		family:  e.FamilyID,
	}
	if !e.IAT.IsZero() {
		r.iat = e.IAT.UnixNano()
	}
	if !e.EXP.IsZero() {
		r.exp = e.EXP.UnixNano()
	}
	if e.Kind == event.KindRevoke {
		r.revoke = &revokeFields{target: e.Target, reason: e.Reason, issuer: e.Issuer, region: e.Region}
	}
	return r, true
}

func seconds(ns int64) float64 { return time.Duration(ns).Seconds() }

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// satSub is a − b without wrapping below MinInt64.
func satSub(a, b int64) int64 {
	if a < math.MinInt64+b {
		return math.MinInt64
	}
	return a - b
}

// recordHeap orders records by ts, then arrival, so equal inputs give equal
// outputs.
type recordHeap []*record

func (h recordHeap) Len() int { return len(h) }
func (h recordHeap) Less(i, j int) bool {
	if h[i].ts != h[j].ts {
		return h[i].ts < h[j].ts
	}
	return h[i].seq < h[j].seq
}
func (h recordHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *recordHeap) Push(x any)   { *h = append(*h, x.(*record)) }
func (h *recordHeap) Pop() any {
	old := *h
	n := len(old)
	r := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return r
}
