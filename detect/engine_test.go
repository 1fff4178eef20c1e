package detect

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

func replayPair(offset time.Duration, token string) []*event.Event {
	exp := times(at(offset), at(offset+time.Hour))
	return []*event.Event{
		validate(at(offset), event.OK, tok(token), dev("laptop"), exp),
		validate(at(offset+time.Second), event.OK, tok(token), dev("thief"), exp),
	}
}

func TestFindingClosesAfterTheQuietPeriod(t *testing.T) {
	en, rec, reg := newEngine(t, func(c *Config) { c.QuietPeriod = 10 * time.Minute })
	for _, e := range replayPair(0, "t1") {
		en.Observe(e)
	}
	if n := value(en.m.findingsOpen.WithLabelValues("replay", "page")); n != 1 {
		t.Fatalf("findings_open = %v, want 1", n)
	}
	en.Advance(at(9 * time.Minute))
	if last := rec.calls[len(rec.calls)-1]; last.Status != finding.Open {
		t.Fatalf("closed before the quiet period ended: %+v", last)
	}
	en.Advance(at(11 * time.Minute))
	last := rec.calls[len(rec.calls)-1]
	if last.Status != finding.Closed || !last.ClosedAt.Equal(at(11*time.Minute)) {
		t.Fatalf("want the finding closed at 11m, got %+v", last)
	}
	if n := value(en.m.findingsOpen.WithLabelValues("replay", "page")); n != 0 {
		t.Errorf("findings_open = %v after close, want 0", n)
	}
	if n := value(en.m.findingsTotal.WithLabelValues("replay", "page", "api-gateway")); n != 1 {
		t.Errorf("findings_total = %v, want 1", n)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("gather: %v", err)
	}
	fs := en.Flush()
	if len(fs) != 1 || fs[0].Status != finding.Closed {
		t.Fatalf("flush = %+v", fs)
	}
}

func TestTheSameKeySignallingAfterItsFindingClosedIsANewIncident(t *testing.T) {
	en, rec, _ := newEngine(t, func(c *Config) { c.QuietPeriod = 5 * time.Minute })
	exp := times(at(0), at(time.Hour))
	en.Observe(validate(at(0), event.OK, tok("t1"), dev("laptop"), exp))
	en.Observe(validate(at(time.Second), event.OK, tok("t1"), dev("thief"), exp))
	en.Advance(at(10 * time.Minute))
	en.Observe(validate(at(11*time.Minute), event.OK, tok("t1"), dev("thief"), exp))
	fs := en.Flush()
	if len(fs) != 2 {
		t.Fatalf("want the closed finding and a new one, got %+v", fs)
	}
	if fs[0].Status != finding.Closed || fs[0].Count != 1 || fs[1].Status != finding.Open || fs[1].ID == fs[0].ID ||
		!fs[1].FirstSeen.Equal(at(11*time.Minute)) {
		t.Fatalf("want the first incident closed and the second open with an id of its own, got %+v", fs)
	}
	ids := map[string]bool{}
	for _, c := range rec.calls {
		ids[c.ID] = true
	}
	if len(ids) != 2 {
		t.Errorf("sink saw %d ids, want two incidents", len(ids))
	}
}

func TestUpdatesAreThrottledToOnePerSecondOfEventTime(t *testing.T) {
	en, rec, _ := newEngine(t, nil)
	exp := times(at(0), at(time.Hour))
	en.Observe(validate(at(0), event.OK, tok("t1"), dev("laptop"), exp))
	for i := 1; i <= 100; i++ { // 100 replayed uses within 100 ms
		en.Observe(validate(at(time.Duration(i)*time.Millisecond), event.OK, tok("t1"), dev("thief"), exp))
	}
	if len(rec.calls) != 1 {
		t.Fatalf("sink saw %d calls within one second, want only the open", len(rec.calls))
	}
	en.Advance(at(2 * time.Second))
	if len(rec.calls) != 2 || rec.calls[1].Count != 100 {
		t.Fatalf("want the pending update sent on the next tick with count 100, got %d calls", len(rec.calls))
	}
}

func TestTokenStateEvictionIsCountedAtTheCap(t *testing.T) {
	en, _, _ := newEngine(t, func(c *Config) { c.MaxTokens = 10 })
	for i := 0; i < 25; i++ {
		en.Observe(validate(at(time.Duration(i)*time.Millisecond), event.OK, tok("t"+itoa(i)), dev("d"),
			times(at(0), at(time.Hour+time.Duration(i)*time.Second))))
	}
	if n := en.tokens.len(); n != 10 {
		t.Errorf("tokens held = %d, want the cap of 10", n)
	}
	if n := value(en.m.evictions.WithLabelValues(stateToken)); n != 15 {
		t.Errorf("evictions = %v, want 15", n)
	}
	// Oldest first: the newest token is still there, the first is gone.
	if _, _, ok := en.tokens.get(hashID("t24")); !ok {
		t.Error("newest token was evicted")
	}
	if _, _, ok := en.tokens.get(hashID("t0")); ok {
		t.Error("oldest token survived eviction")
	}
}

func TestStateExpiresWithTheTokenLifetime(t *testing.T) {
	en, _, reg := newEngine(t, nil)
	for i := 0; i < 100; i++ {
		en.Observe(validate(at(0), event.OK, tok("t"+itoa(i)), dev("d"), times(at(0), at(5*time.Minute))))
	}
	en.Observe(validate(at(time.Second), event.OK, tok("long"), dev("d"), times(at(0), at(time.Hour))))
	en.Advance(at(4 * time.Minute))
	if n := en.tokens.len(); n != 101 {
		t.Fatalf("tokens = %d before expiry, want 101", n)
	}
	en.Advance(at(6 * time.Minute))
	if n := en.tokens.len(); n != 1 {
		t.Fatalf("tokens = %d after the 5-minute tokens expired, want the hour-long one", n)
	}
	if n := value(en.m.entries.WithLabelValues(stateToken)); n != 1 {
		t.Errorf("state entries gauge = %v, want 1", n)
	}
	if !gathered(t, reg, "tokenwatch_detector_state_entries") {
		t.Errorf("state entries not exported")
	}
}

func TestLateEventsStillMatchTheirToken(t *testing.T) {
	exp := times(at(0), at(time.Hour))
	// The thief's use arrives first although it happened later.
	fs, _ := run(t, nil, []*event.Event{
		validate(at(2*time.Minute), event.OK, tok("t1"), dev("thief"), exp),
		validate(at(time.Minute), event.OK, tok("t1"), dev("laptop"), exp),
	})
	if len(fs) != 1 || fs[0].Kind != finding.Replay {
		t.Fatalf("want the replay found whatever the arrival order, got %+v", fs)
	}
}

func TestFlushIsSortedAndLeavesOutSupersededFindings(t *testing.T) {
	events := append(replayPair(5*time.Minute, "tb"), replayPair(time.Minute, "ta")...)
	fs, _ := run(t, nil, events)
	if len(fs) != 2 || fs[0].Key != "ta" || fs[1].Key != "tb" {
		t.Fatalf("want ta then tb (first seen order), got %+v", fs)
	}
}

func TestReplayedTokensOfOneSessionAreOneIncident(t *testing.T) {
	exp := times(at(0), at(time.Hour))
	fs, _ := run(t, nil, []*event.Event{
		validate(at(0), event.OK, tok("t1"), sess("s1"), dev("laptop"), exp),
		validate(at(time.Second), event.OK, tok("t1"), sess("s1"), dev("thief"), exp),
		validate(at(2*time.Second), event.OK, tok("t2"), sess("s1"), dev("laptop"), exp),
		validate(at(3*time.Second), event.OK, tok("t2"), sess("s1"), dev("thief"), exp),
	})
	if len(fs) != 1 || fs[0].Key != "t1" {
		t.Fatalf("want one replay finding for the session, got %+v", fs)
	}
	if rel := fs[0].Evidence["related"].([]map[string]any); len(rel) != 1 || rel[0]["key"] != "t2" {
		t.Errorf("related = %v, want t2's replay", rel)
	}
}

func TestConfigValidateNamesTheKey(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"negative quiet period", func(c *Config) { c.QuietPeriod = -time.Second }, "detect.quiet_period"},
		{"bad NAT range", func(c *Config) { c.NATEgressRanges = []string{"10.0.0.0/33"} }, "nat_egress_ranges[0]"},
		{"unknown severity", func(c *Config) { c.Severity = map[finding.Kind]finding.Severity{finding.Replay: "urgent"} }, "detect.severity.replay"},
		{"burst of two", func(c *Config) { c.RefreshBurstCount = 2 }, "detect.refresh_burst_count"},
		{"burst fraction above one", func(c *Config) { c.RefreshBurstFraction = 2 }, "detect.refresh_burst_fraction"},
		{"zero revocation SLO", func(c *Config) { c.RevocationSLO = 0 }, "detect.revocation_slo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want it to name %s", err, tt.want)
			}
		})
	}
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestSeverityIsConfigurable(t *testing.T) {
	fs, _ := run(t, func(c *Config) {
		c.Severity = map[finding.Kind]finding.Severity{finding.Replay: finding.Ticket}
	}, replayPair(0, "t1"))
	if len(fs) != 1 || fs[0].Severity != finding.Ticket {
		t.Fatalf("want replay as a ticket, got %+v", fs)
	}
}

func TestNoRawCredentialReachesAFinding(t *testing.T) {
	// Detectors copy ids, never token values; a finding's JSON must not grow
	// a credential even when an emitter put a Bearer value in the reason.
	e := validate(at(0), event.OK, tok("t1"), dev("laptop"), times(at(0), at(time.Hour)))
	e.Reason = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"
	e2 := *e
	e2.TS, e2.Device = at(time.Second), "thief"
	fs, _ := run(t, nil, []*event.Event{e, &e2})
	if len(fs) != 1 {
		t.Fatalf("want one finding, got %d", len(fs))
	}
	if s := fmtFinding(fs[0]); strings.Contains(s, "eyJ") || strings.Contains(s, "Bearer") {
		t.Fatalf("finding carries a credential: %s", s)
	}
}

func TestAServiceWhoseClockRunsAheadDoesNotDragTheClock(t *testing.T) {
	en, _, _ := newEngine(t, nil)
	exp := times(at(0), at(time.Hour))
	for s := 0; s < 300; s++ {
		for _, name := range []string{"gateway", "orders", "billing"} {
			en.Observe(validate(at(time.Duration(s)*time.Second), event.OK, svc(name), tok("n"+itoa(s)), dev("d"), exp))
		}
		// search's clock is five minutes fast.
		en.Observe(validate(at(time.Duration(s)*time.Second+5*time.Minute), event.OK, svc("search"), tok("s"+itoa(s)), dev("d"), exp))
	}
	en.Observe(validate(at(300*time.Second), event.OK, tok("t1"), dev("laptop"), exp))
	en.Observe(validate(at(301*time.Second), event.OK, tok("t1"), dev("thief"), exp))
	fs := en.Flush()
	if len(fs) != 1 {
		t.Fatalf("want the replay, got %+v", fs)
	}
	if lag := fs[0].DetectedAt.Sub(at(301 * time.Second)); lag < 0 || lag > 3*time.Second {
		t.Errorf("detected_at is %s after the replayed use, want within the clock slack", lag)
	}
}

// A late event from within a closed finding's span (before it went quiet)
// belongs to that incident: it updates the closed finding, it does not open
// a second one. A signal after the quiet period is a new incident.
func TestLateSignalDoesNotReopenAClosedIncident(t *testing.T) {
	en, rec, _ := newEngine(t, func(c *Config) { c.QuietPeriod = 5 * time.Minute })
	exp := times(at(0), at(2*time.Hour))
	pop := func(ts time.Time) *event.Event {
		return validate(ts, event.Denied, tok("t1"), sess("s1"), dev("laptop"), binding("dpop", false), exp, svc("api"))
	}
	en.Observe(pop(at(time.Minute)))
	en.Observe(pop(at(2 * time.Minute)))
	en.Observe(validate(at(10*time.Minute), event.OK, tok("other"), exp, svc("api"))) // the clock moves on
	en.Advance(at(10 * time.Minute))
	en.Observe(validate(at(10*time.Minute+time.Second), event.OK, tok("other"), exp, svc("api")))
	en.Advance(at(10*time.Minute + 2*time.Second))
	ids := map[string]finding.Status{}
	for _, f := range rec.calls {
		ids[f.ID] = f.Status
	}
	if len(ids) != 1 {
		t.Fatalf("want one finding before the late event, got %v", ids)
	}
	for _, st := range ids {
		if st != finding.Closed {
			t.Fatalf("the finding is %s after the quiet period, want closed", st)
		}
	}
	en.Observe(pop(at(90 * time.Second))) // late, within the incident's span
	all := ofKind(en.Flush(), finding.Replay)
	if len(all) != 1 {
		t.Fatalf("the late event opened a second incident: %v", all)
	}
	if all[0].Count != 3 || all[0].Status != finding.Closed {
		t.Fatalf("finding count %d status %s, want the late signal folded in (3) and still closed", all[0].Count, all[0].Status)
	}
	en.Observe(pop(at(20 * time.Minute))) // after the quiet period: a new incident
	if n := len(ofKind(en.Flush(), finding.Replay)); n != 2 {
		t.Fatalf("a signal after the quiet period gave %d replay findings, want 2", n)
	}
}
