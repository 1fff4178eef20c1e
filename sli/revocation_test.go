package sli

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// at builds an event at t0 + offset seconds.
func at(offset float64, kind event.Kind, outcome event.Outcome, service string, set func(*event.Event)) event.Event {
	e := event.Event{TS: t0.Add(time.Duration(offset * float64(time.Second))), Kind: kind, Outcome: outcome, Service: service}
	if set != nil {
		set(&e)
	}
	return e
}

func token(id string) func(*event.Event) { return func(e *event.Event) { e.TokenID = id } }

func issue(offset float64, tok, session, subject, family string) event.Event {
	return at(offset, event.KindIssue, event.OK, "idp", func(e *event.Event) {
		e.TokenID, e.SessionID, e.Subject, e.FamilyID = tok, session, subject, family
	})
}

func revoke(offset float64, target string, set func(*event.Event)) event.Event {
	return at(offset, event.KindRevoke, event.OK, "idp", func(e *event.Event) {
		e.Target = target
		set(e)
	})
}

func validate(offset float64, service string, outcome event.Outcome, tok string) event.Event {
	return at(offset, event.KindValidate, outcome, service, token(tok))
}

// wantLag is what a test expects of one service; nil pointers mean absent.
type wantLag struct {
	residual   int
	propagated bool
	lag        float64
	firstRej   *float64
}

func f(v float64) *float64 { return &v }

func runTracker(t *testing.T, cfg TrackerConfig, events []event.Event) []Revocation {
	t.Helper()
	tr, err := NewTracker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []Revocation
	tr.OnResult(func(r Revocation) { got = append(got, r) })
	for i := range events {
		tr.Observe(&events[i])
	}
	tr.Flush()
	return got
}

func TestRevocationPropagation(t *testing.T) {
	cases := []struct {
		name        string
		cfg         TrackerConfig
		events      []event.Event
		propagated  bool
		propagation float64
		services    map[string]wantLag
	}{{
		name: "fast: a cached acceptance then a revoked rejection 5 s after the revoke",
		events: []event.Event{
			issue(-60, "t1", "s1", "u1", ""),
			validate(-10, "api", event.OK, "t1"), // before the revoke: not residual
			revoke(0, "token", token("t1")),
			validate(2, "api", event.OK, "t1"),
			validate(5, "api", event.Revoked, "t1"),
		},
		propagated: true, propagation: 5,
		services: map[string]wantLag{"api": {residual: 1, propagated: true, lag: 5}},
	}, {
		name: "slow: a cache keeps accepting for 90 s past the SLO",
		events: []event.Event{
			issue(-60, "t1", "s1", "u1", ""),
			revoke(0, "token", token("t1")),
			validate(30, "api", event.OK, "t1"),
			validate(60, "api", event.OK, "t1"),
			validate(90, "api", event.OK, "t1"),
			validate(95, "api", event.Revoked, "t1"),
			validate(100, "api", event.Revoked, "t1"),
		},
		propagated: true, propagation: 95,
		services: map[string]wantLag{"api": {residual: 3, propagated: true, lag: 95}},
	}, {
		name: "never propagated: a service still accepts at the end of the horizon",
		events: []event.Event{
			issue(-60, "t1", "s1", "u1", ""),
			revoke(0, "token", token("t1")),
			validate(30, "api", event.OK, "t1"),
			validate(500, "api", event.OK, "t1"),
			validate(700, "api", event.Revoked, "t1"), // after the 10 min horizon: too late to count
		},
		propagated: false, propagation: 500,
		services: map[string]wantLag{"api": {residual: 2, propagated: false, lag: 500}},
	}, {
		name: "a rejection between two residual acceptances is not propagation",
		events: []event.Event{
			issue(-60, "t1", "s1", "u1", ""),
			revoke(0, "token", token("t1")),
			validate(3, "api", event.Revoked, "t1"), // one replica knew
			validate(8, "api", event.OK, "t1"),      // another still served from cache
			validate(20, "api", event.Revoked, "t1"),
		},
		propagated: true, propagation: 20,
		services: map[string]wantLag{"api": {residual: 1, propagated: true, lag: 20}},
	}, {
		name: "residual acceptances on one service, an immediate rejection on another",
		events: []event.Event{
			issue(-60, "t1", "s1", "u1", ""),
			revoke(0, "token", token("t1")),
			validate(1, "api", event.OK, "t1"),
			validate(2, "billing", event.Revoked, "t1"),
			validate(3, "api", event.OK, "t1"),
			validate(4, "api", event.Revoked, "t1"),
		},
		propagated: true, propagation: 4,
		services: map[string]wantLag{
			"api":     {residual: 2, propagated: true, lag: 4},
			"billing": {residual: 0, propagated: true, lag: 0, firstRej: f(2)},
		},
	}, {
		name: "a service that first sees the token an hour later is not an hour's lag",
		cfg:  TrackerConfig{Horizon: 2 * time.Hour},
		events: []event.Event{
			issue(-60, "t1", "s1", "u1", ""),
			revoke(0, "token", token("t1")),
			validate(3600, "reports", event.Revoked, "t1"),
		},
		propagated: true, propagation: 0,
		services: map[string]wantLag{"reports": {residual: 0, propagated: true, lag: 0, firstRej: f(3600)}},
	}, {
		name: "revoke by session covers every token of the session, named or not",
		events: []event.Event{
			issue(-120, "t1", "s1", "u1", ""),
			issue(-60, "t2", "s1", "u1", ""),
			issue(-60, "t9", "s9", "u9", ""),
			revoke(0, "session", func(e *event.Event) { e.SessionID = "s1" }),
			validate(10, "api", event.OK, "t2"), // the validator does not report the session
			validate(15, "api", event.OK, "t9"), // another session: not covered
			validate(20, "api", event.Revoked, "t2"),
			validate(25, "gateway", event.Revoked, "t1"),
		},
		propagated: true, propagation: 20,
		services: map[string]wantLag{
			"api":     {residual: 1, propagated: true, lag: 20},
			"gateway": {residual: 0, propagated: true, lag: 0, firstRej: f(25)},
		},
	}, {
		name: "revoke by subject covers the tokens issued before it, not a new login after it",
		events: []event.Event{
			issue(-60, "t1", "s1", "u1", ""),
			revoke(0, "subject", func(e *event.Event) { e.Subject = "u1" }),
			validate(10, "api", event.OK, "t1"),
			validate(12, "api", event.Revoked, "t1"),
			issue(30, "t3", "s2", "u1", ""), // the user logs in again
			validate(40, "api", event.OK, "t3"),
		},
		propagated: true, propagation: 12,
		services: map[string]wantLag{"api": {residual: 1, propagated: true, lag: 12}},
	}, {
		name: "revoke by family covers the family's rotated tokens",
		events: []event.Event{
			issue(-600, "r1", "s1", "u1", "f1"),
			at(-30, event.KindRefresh, event.OK, "idp", func(e *event.Event) {
				e.TokenID, e.ParentTokenID, e.FamilyID = "r2", "r1", "f1"
			}),
			revoke(0, "family", func(e *event.Event) { e.FamilyID = "f1" }),
			validate(5, "api", event.OK, "r2"),
			validate(8, "api", event.Revoked, "r2"),
		},
		propagated: true, propagation: 8,
		services: map[string]wantLag{"api": {residual: 1, propagated: true, lag: 8}},
	}, {
		name: "events arriving out of order within the lateness are put back in order",
		events: []event.Event{
			issue(-60, "t1", "s1", "u1", ""),
			validate(20, "api", event.OK, "t1"), // arrives before the revoke it follows
			revoke(0, "token", token("t1")),
			validate(25, "api", event.Revoked, "t1"),
			validate(22, "api", event.OK, "t1"),
		},
		propagated: true, propagation: 25,
		services: map[string]wantLag{"api": {residual: 2, propagated: true, lag: 25}},
	}, {
		name: "a revoke no service sees again is propagated at once",
		events: []event.Event{
			issue(-60, "t1", "s1", "u1", ""),
			revoke(0, "token", token("t1")),
		},
		propagated: true, propagation: 0,
		services: map[string]wantLag{},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := runTracker(t, c.cfg, c.events)
			if len(got) != 1 {
				t.Fatalf("got %d results, want 1", len(got))
			}
			r := got[0]
			if !r.RevokedAt.Equal(t0) {
				t.Errorf("revoked at %s, want %s", r.RevokedAt, t0)
			}
			if r.Propagated != c.propagated || r.PropagationS != c.propagation {
				t.Errorf("propagated=%v propagation=%vs, want %v %vs", r.Propagated, r.PropagationS, c.propagated, c.propagation)
			}
			if len(r.ByService) != len(c.services) {
				b, _ := json.Marshal(r.ByService)
				t.Errorf("services = %s, want %d", b, len(c.services))
			}
			for svc, w := range c.services {
				g, ok := r.ByService[svc]
				if !ok {
					t.Errorf("%s: missing", svc)
					continue
				}
				if g.ResidualAcceptances != w.residual || g.Propagated != w.propagated || g.LagS != w.lag {
					t.Errorf("%s: residual=%d propagated=%v lag=%vs, want %d %v %vs", svc,
						g.ResidualAcceptances, g.Propagated, g.LagS, w.residual, w.propagated, w.lag)
				}
				switch {
				case w.firstRej == nil && g.FirstRejectionS != nil:
					t.Errorf("%s: first rejection %vs reported for a service that accepted after the revoke", svc, *g.FirstRejectionS)
				case w.firstRej != nil && (g.FirstRejectionS == nil || *g.FirstRejectionS != *w.firstRej):
					t.Errorf("%s: first rejection = %v, want %vs", svc, g.FirstRejectionS, *w.firstRej)
				}
				if (w.residual > 0) != (g.LastAcceptanceS != nil) {
					t.Errorf("%s: last acceptance %v with %d residual acceptances", svc, g.LastAcceptanceS, w.residual)
				}
			}
		})
	}
}

func TestAServiceSeenOnlyAfterTheHorizonIsNotInTheResult(t *testing.T) {
	got := runTracker(t, TrackerConfig{}, []event.Event{
		issue(-60, "t1", "s1", "u1", ""),
		revoke(0, "token", token("t1")),
		validate(3600, "reports", event.Revoked, "t1"),
	})
	if len(got) != 1 || len(got[0].ByService) != 0 {
		t.Fatalf("got %+v, want one revoke with no services (an hour is past the 10 min horizon)", got)
	}
}

func TestARevokeIsReportedWhenItsHorizonPassesInEventTime(t *testing.T) {
	tr, err := NewTracker(TrackerConfig{Horizon: time.Minute, Lateness: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var got []Revocation
	tr.OnResult(func(r Revocation) { got = append(got, r) })
	events := []event.Event{
		issue(-60, "t1", "s1", "u1", ""),
		revoke(0, "token", token("t1")),
		validate(30, "api", event.OK, "t1"),
		validate(65, "api", event.OK, "t1"), // horizon 60 s + lateness 10 s not yet passed
	}
	for i := range events {
		tr.Observe(&events[i])
	}
	if len(got) != 0 {
		t.Fatalf("reported before revoke + horizon + lateness: %+v", got)
	}
	later := validate(71, "api", event.OK, "t9")
	tr.Observe(&later)
	if len(got) != 1 {
		t.Fatalf("got %d results once the watermark passed revoke + horizon, want 1", len(got))
	}
	if r := got[0]; r.Truncated || r.Propagated || r.ByService["api"].ResidualAcceptances != 1 {
		t.Errorf("got %+v, want a complete, not propagated result with only the acceptance inside the horizon", r)
	}
	tr.Flush()
	if len(got) != 1 {
		t.Errorf("flush reported the revoke again")
	}
}

func TestFlushReportsAnUnfinishedRevokeAsTruncated(t *testing.T) {
	got := runTracker(t, TrackerConfig{}, []event.Event{
		issue(-60, "t1", "s1", "u1", ""),
		revoke(0, "token", token("t1")),
		validate(30, "api", event.OK, "t1"),
	})
	if len(got) != 1 || !got[0].Truncated {
		t.Fatalf("got %+v, want one truncated result", got)
	}
}

func TestTrackerMemoryIsBounded(t *testing.T) {
	t.Run("an event later than the lateness is counted", func(t *testing.T) {
		tr, _ := NewTracker(TrackerConfig{Lateness: 10 * time.Second})
		for _, e := range []event.Event{validate(100, "api", event.OK, "t1"), validate(50, "api", event.OK, "t2")} {
			tr.Observe(&e)
		}
		if s := tr.Stats(); s.LateEvents != 1 {
			t.Errorf("late events = %d, want 1", s.LateEvents)
		}
	})
	t.Run("a full token index evicts and counts", func(t *testing.T) {
		tr, _ := NewTracker(TrackerConfig{MaxTokens: 2, Lateness: time.Nanosecond})
		for i, tok := range []string{"a", "b", "c", "d"} {
			e := issue(float64(i), tok, "s", "u", "")
			tr.Observe(&e)
		}
		tr.Flush()
		if s := tr.Stats(); s.IndexedTokens != 2 || s.IndexEvictions != 2 {
			t.Errorf("index holds %d tokens after %d evictions, want 2 and 2", s.IndexedTokens, s.IndexEvictions)
		}
	})
	t.Run("expired tokens leave the index", func(t *testing.T) {
		tr, _ := NewTracker(TrackerConfig{Lateness: time.Second})
		e := issue(0, "a", "s", "u", "")
		e.EXP = t0.Add(5 * time.Minute)
		tr.Observe(&e)
		noExp := issue(1, "b", "s", "u", "") // kept for MaxTokenLifetime (24h)
		tr.Observe(&noExp)
		later := validate(20*60, "api", event.OK, "z")
		tr.Observe(&later)
		later2 := validate(22*60, "api", event.OK, "z")
		tr.Observe(&later2)
		if s := tr.Stats(); s.IndexedTokens != 2 { // b and z
			t.Errorf("index holds %d tokens, want 2 (the expired one gone)", s.IndexedTokens)
		}
	})
	t.Run("a full reorder buffer processes its oldest early", func(t *testing.T) {
		tr, _ := NewTracker(TrackerConfig{MaxBuffered: 3, Lateness: time.Hour})
		for i := range 5 {
			e := validate(float64(i), "api", event.OK, "t")
			tr.Observe(&e)
		}
		if s := tr.Stats(); s.BufferedEvents != 3 || s.ReorderOverflows != 2 {
			t.Errorf("buffer holds %d with %d overflows, want 3 and 2", s.BufferedEvents, s.ReorderOverflows)
		}
	})
}

func TestAServiceStillAcceptingPastTheSLOIsReportedBeforeTheHorizon(t *testing.T) {
	tr, err := NewTracker(TrackerConfig{Horizon: 10 * time.Minute, Lateness: 5 * time.Second, BreachAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var early, final []Revocation
	tr.OnBreach(func(r Revocation) { early = append(early, r) })
	tr.OnResult(func(r Revocation) { final = append(final, r) })
	events := []event.Event{
		issue(-60, "t1", "s1", "u1", ""),
		revoke(0, "session", func(e *event.Event) { e.SessionID = "s1" }),
		validate(20, "api", event.OK, "t1"), // inside the SLO: cache behaviour, no early report
		validate(45, "api", event.OK, "t1"),
		validate(61, "billing", event.OK, "t1"), // past the SLO
		validate(75, "billing", event.OK, "t1"), // the same revoke again: reported once
		validate(90, "api", event.OK, "t9"),     // moves the watermark past 75
	}
	for i := range events {
		tr.Observe(&events[i])
	}
	if len(early) != 1 || len(final) != 0 {
		t.Fatalf("got %d early and %d final reports, want one early report and none final before the horizon", len(early), len(final))
	}
	r := early[0]
	if !r.Truncated || r.Propagated || *r.ByService["billing"].LastAcceptanceS < 60 {
		t.Errorf("early report %+v: want truncated, not propagated, billing's last acceptance past 60 s", r)
	}
	tr.Flush()
	if len(final) != 1 || len(early) != 1 {
		t.Fatalf("after flush: %d final, %d early; want the final result once", len(final), len(early))
	}
}

func TestAcceptancesInsideTheSLOAreNeverReportedEarly(t *testing.T) {
	tr, _ := NewTracker(TrackerConfig{Horizon: 10 * time.Minute, Lateness: 5 * time.Second, BreachAfter: time.Minute})
	var early []Revocation
	tr.OnBreach(func(r Revocation) { early = append(early, r) })
	events := []event.Event{
		issue(-60, "t1", "s1", "u1", ""),
		revoke(0, "token", token("t1")),
		validate(10, "api", event.OK, "t1"),
		validate(30, "api", event.Revoked, "t1"),
		validate(200, "api", event.Revoked, "t1"),
	}
	for i := range events {
		tr.Observe(&events[i])
	}
	tr.Flush()
	if len(early) != 0 {
		t.Fatalf("a revoke whose residual acceptances all came inside the SLO was reported early: %+v", early)
	}
}

// TestAnAcceptanceArrivingLateStillCounts: a gateway's acceptance of a
// revoked token (20 s after the revoke) arrives behind a rejection (30 s)
// and behind the tracker's event time by more than the lateness, as when
// one source is read late. The revoke is still pending, so the result is
// the in-order one: one residual acceptance, lag 30 s.
func TestAnAcceptanceArrivingLateStillCounts(t *testing.T) {
	rev := revoke(0, "session", func(e *event.Event) { e.SessionID = "s1" })
	inOrder := []event.Event{
		issue(-60, "a", "s1", "u", ""), rev,
		validate(20, "gateway", event.OK, "a"), validate(30, "gateway", event.Revoked, "a"), validate(90, "api", event.OK, "other"),
	}
	late := []event.Event{inOrder[0], inOrder[1], inOrder[3], inOrder[4], inOrder[2]}
	want := runTracker(t, TrackerConfig{Lateness: time.Second}, inOrder)
	got := runTracker(t, TrackerConfig{Lateness: time.Second}, late)
	if len(want) != 1 || want[0].ByService["gateway"].LagS != 30 || want[0].ByService["gateway"].ResidualAcceptances != 1 {
		t.Fatalf("in order: %+v, want the gateway's one residual acceptance and lag 30 s", want)
	}
	wj, _ := json.Marshal(want)
	gj, _ := json.Marshal(got)
	if string(wj) != string(gj) {
		t.Errorf("with the acceptance late:\n %s\nin order:\n %s", gj, wj)
	}
}
