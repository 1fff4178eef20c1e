package detect

import (
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/aggregate"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// fleetOfEngines is three engines sharing six keyed partitions (two each),
// the way three analyze members share the keyed topic: each folds its own
// partitions' validations, and member 0 owns the aggregates.
type fleetOfEngines struct {
	members []*Engine
	recs    []*recorder
	owner   *recorder // member 0's: it owns dest 0, the per-service state's
	sent    []Partial // every partial the members published, in order
}

func newFleetOfEngines(t *testing.T) *fleetOfEngines {
	t.Helper()
	f := &fleetOfEngines{}
	for i := range 3 {
		en, rec, _ := newEngine(t, nil)
		if i == 0 {
			f.owner = rec
		}
		en.SetAggregates(AggregateConfig{Sources: 6, Wait: time.Hour, Retain: time.Hour, Global: 0,
			DestOf: func(scope, id string) int32 { return hash6(scope + ":" + id) },
			Publish: func(ps []Partial) {
				for _, p := range ps {
					p.Member = itoa(i)
					f.sent = append(f.sent, p)
				}
			}})
		en.SetSources([]int32{int32(2 * i), int32(2*i + 1)})
		f.members = append(f.members, en)
		f.recs = append(f.recs, rec)
	}
	return f
}

// partitionOf spreads tokens over the six partitions as the keyed topic
// does (a refresh goes with its family).
func partitionOf(e *event.Event) int32 {
	if e.Kind == event.KindRefresh && e.FamilyID != "" {
		return hash6("f:" + e.FamilyID)
	}
	return hash6(e.TokenID)
}

func hash6(s string) int32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return int32(h.Sum32() % 6)
}

// observe hands each event to the member owning its partition, in stream
// order, and after the input goes idle lets every member close its
// minutes; then the owner reads every partial, each delivered twice (as
// after a redelivery), interleaved as one topic partition would carry them.
func (f *fleetOfEngines) observe(events []*event.Event) {
	for _, e := range events {
		if e.Kind == event.KindKeyRotate {
			// Broadcast: every member reads it (once: the copies on its
			// other partitions are dropped before the detectors).
			for i, m := range f.members {
				cp := *e
				cp.Src.Partition = int32(2 * i)
				m.Observe(&cp)
			}
			continue
		}
		cp := *e
		cp.Src.Partition = partitionOf(e)
		f.members[cp.Src.Partition/2].Observe(&cp)
	}
	end := events[len(events)-1].TS.Add(5 * time.Minute)
	for _, m := range f.members {
		// The last events' tick, then the idle clock's (a member that saw
		// nothing starts its clock on the first).
		for i := range 3 {
			m.Advance(end.Add(time.Duration(i) * 2 * time.Second))
		}
	}
	for _, p := range f.sent {
		f.members[p.Dest/2].MergeAggregate(p)
		f.members[p.Dest/2].MergeAggregate(p)
	}
	for _, m := range f.members {
		m.Flush() // the input ended: pending updates go out
	}

}

// latest is the last version the sink got of each finding of kind k.
func latest(calls []finding.Finding, k finding.Kind) map[string]finding.Finding {
	out := map[string]finding.Finding{}
	for _, c := range calls {
		if c.Kind == k {
			out[c.Key] = c
		}
	}
	return out
}

func TestKeyRotationBreaksOverThreeMembersEqualOneEngine(t *testing.T) {
	for _, tt := range rotationCases() {
		t.Run(tt.name, func(t *testing.T) {
			one, _ := run(t, nil, tt.events)
			want := map[string]bool{}
			for _, f := range ofKind(one, finding.KeyRotationBreak) {
				want[f.Key] = true
			}
			if (tt.wantKid != "") != want["kid:"+tt.wantKid] {
				t.Fatalf("one engine found %v for %q", want, tt.wantKid)
			}
			f := newFleetOfEngines(t)
			f.observe(tt.events)
			got := latest(f.owner.calls, finding.KeyRotationBreak)
			if len(got) != len(want) {
				t.Fatalf("the owner found %d key_rotation_break, one engine %v", len(got), want)
			}
			for k, g := range got {
				if !want[k] {
					t.Errorf("the owner found %s, one engine did not", k)
				}
				if tt.wantSignal != "" && g.Evidence["signals"].([]string)[0] != tt.wantSignal {
					t.Errorf("%s: signals %v, want %s", k, g.Evidence["signals"], tt.wantSignal)
				}
			}
			for i, m := range f.members[1:] {
				if n := len(ofKind(m.book.all(), finding.KeyRotationBreak)); n != 0 {
					t.Errorf("member %d, which does not own the aggregates, found %d key_rotation_break", i+1, n)
				}
			}
		})
	}
}

func TestClockSkewOverThreeMembersEqualsOneEngine(t *testing.T) {
	for _, tt := range []struct {
		name   string
		events []*event.Event
	}{
		{"two minutes ahead", skewedFleet(2*time.Minute, "search", 60)},
		{"90 seconds behind", skewedFleet(-90*time.Second, "search", 60)},
		{"five minutes ahead, uses spread through the window", skewedFleetUsing(5*time.Minute, "search", 64, func(i int) time.Duration {
			return time.Duration((i*37)%64) * 5 * time.Minute / 64
		})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			one, _ := run(t, nil, tt.events)
			want := ofKind(one, finding.ClockSkew)
			if len(want) != 1 {
				t.Fatalf("one engine: want one clock_skew, got %+v", want)
			}
			f := newFleetOfEngines(t)
			f.observe(tt.events)
			got := latest(f.owner.calls, finding.ClockSkew)
			g, ok := got[want[0].Key]
			if len(got) != 1 || !ok {
				t.Fatalf("the owner found %v, want one %s", got, want[0].Key)
			}
			ws, gs := want[0].Evidence["skew_s"].(float64), g.Evidence["skew_s"].(float64)
			if math.Abs(ws-gs) > 3 {
				t.Errorf("skew_s: fleet %v, one engine %v", gs, ws)
			}
			for i, m := range f.members[1:] {
				if n := len(latest(m.book.all(), finding.ClockSkew)); n != 0 {
					t.Errorf("member %d, which does not own the aggregates, found %d clock_skew", i+1, n)
				}
			}
			var st AggregateStats
			for _, m := range f.members {
				s := m.AggregateStats()
				st.Duplicates, st.Late, st.Incomplete, st.Pending = st.Duplicates+s.Duplicates, st.Late+s.Late, st.Incomplete+s.Incomplete, st.Pending+s.Pending
			}
			if st.Duplicates != uint64(len(f.sent)) || st.Late != 0 || st.Incomplete != 0 || st.Pending != 0 {
				t.Errorf("owner's merge: %+v, want every second copy a duplicate (%d), none late, incomplete or pending", st, len(f.sent))
			}
		})
	}
}

func TestAMemberWithNothingToSaySendsEmptyPartials(t *testing.T) {
	f := newFleetOfEngines(t)
	// Only partition 0's tokens: members 1 and 2 see nothing at all but
	// still report each minute for their partitions, so the owner closes
	// every minute without waiting.
	var events []*event.Event
	for i := range 600 {
		e := validate(at(time.Duration(i)*time.Second), event.OK, svc("orders"), tok("t"+itoa(i)))
		if partitionOf(e) == 0 {
			events = append(events, e)
		}
	}
	// Members 1 and 2 hear of the time only from the idle clock.
	f.observe(events)
	for i, m := range f.members {
		if st := m.AggregateStats(); st.Pending != 0 || st.Incomplete != 0 {
			t.Fatalf("member %d: %+v, want every minute closed complete", i, st)
		}
	}
	empty := 0
	for _, p := range f.sent {
		if p.Seq == 0 {
			empty++
		}
	}
	if empty == 0 {
		t.Errorf("no empty partial among %d sent", len(f.sent))
	}
}

// TestRefreshRatesOverThreeMembersEqualOneEngine: a client and a subject
// refreshing far above their baselines, their refreshes spread over every
// partition (one family each refresh), and a busy client whose many users
// refresh steadily: the owners of the clients' and subjects' dests find
// what one engine finds.
func TestRefreshRatesOverThreeMembersEqualOneEngine(t *testing.T) {
	var events []*event.Event
	n := 0
	refresh := func(ts time.Time, client, subject string) {
		n++
		events = append(events, ev(ts, event.KindRefresh, event.OK, svc("auth"), fam("f"+itoa(n)), tok("t"+itoa(n)),
			func(e *event.Event) { e.ClientID, e.Subject = client, subject }))
	}
	for m := range 40 {
		base := at(time.Duration(m) * time.Minute)
		for i := range 4 { // a steady baseline for the thief's client and subject
			refresh(base.Add(time.Duration(i)*13*time.Second), "app", "alice")
		}
		for i := range 30 { // a busy client: many users, a steady rate
			refresh(base.Add(time.Duration(i)*2*time.Second), "portal", "user"+itoa(i))
		}
		if m == 35 {
			for i := range 60 { // a script with a stolen credential
				refresh(base.Add(time.Duration(i)*time.Second), "app", "alice")
			}
		}
	}
	events = append(events, validate(at(45*time.Minute), event.OK, svc("auth"), tok("end")))
	one, _ := run(t, nil, events)
	want := latest(one, finding.RefreshAnomaly)
	if _, ok := want["client:app"]; !ok || len(want) != 2 {
		t.Fatalf("one engine found %v, want client:app and subject:alice", want)
	}
	f := newFleetOfEngines(t)
	f.observe(events)
	got := map[string]finding.Finding{}
	for _, r := range f.recs {
		for k, v := range latest(r.calls, finding.RefreshAnomaly) {
			if _, dup := got[k]; dup {
				t.Errorf("%s found by two members", k)
			}
			got[k] = v
		}
	}
	if len(got) != len(want) {
		t.Fatalf("the fleet found %v, one engine %v", got, want)
	}
	for k, w := range want {
		g := got[k]
		if g.Evidence["refreshes_per_minute"] != w.Evidence["refreshes_per_minute"] {
			t.Errorf("%s: %v refreshes a minute in the fleet, %v in one engine", k, g.Evidence["refreshes_per_minute"], w.Evidence["refreshes_per_minute"])
		}
	}
}

var _ = aggregate.Merged

// TestAMemberThatStopsMidMinuteChangesNoFinding: member 1 stops in the
// middle of a minute, in the middle of a clock skew, a key rotation break
// and a client's refresh burst; member 2 takes its partitions and dests
// over, rebuilding as an analyze member does (the partials sent to its new
// dests read again, the partitions' events replayed), and carries on. The
// fleet's findings equal one engine's.
func TestAMemberThatStopsMidMinuteChangesNoFinding(t *testing.T) {
	events := cat(skewedFleet(2*time.Minute, "search", 60), rotationCases()[0].events)
	n := 0
	for m := range 40 {
		base := at(time.Duration(m) * time.Minute)
		rounds := 4
		if m == 12 {
			rounds = 60 // the burst, across the stop
		}
		for i := range rounds {
			n++
			events = append(events, ev(base.Add(time.Duration(i)*time.Second), event.KindRefresh, event.OK, svc("auth"), fam("f"+itoa(n)),
				tok("r"+itoa(n)), func(e *event.Event) { e.ClientID, e.Subject = "app", "alice" }))
		}
	}
	slices.SortStableFunc(events, func(a, b *event.Event) int { return a.TS.Compare(b.TS) })
	kinds := []finding.Kind{finding.ClockSkew, finding.KeyRotationBreak, finding.RefreshAnomaly}
	one, _ := run(t, nil, events)
	want := map[string]bool{}
	for _, k := range kinds {
		for key := range latest(one, k) {
			want[string(k)+" "+key] = true
		}
	}
	if len(want) < 3 {
		t.Fatalf("one engine found %v: want a clock skew, a key rotation break and a rate anomaly", want)
	}
	stop := at(12*time.Minute + 35*time.Second) // mid-minute, and mid-slice

	f := newFleetOfEngines(t)
	owner := map[int32]int{0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}
	delivered := 0
	deliver := func() {
		for ; delivered < len(f.sent); delivered++ {
			p := f.sent[delivered]
			f.members[owner[p.Dest]].MergeAggregate(p)
		}
	}
	memberOf := func(p int32) int { return owner[p] }
	stopped := false
	for _, e := range events {
		if !stopped && !e.TS.Before(stop) {
			stopped = true
			deliver()
			f.members[1].Flush()
			deliver()
			owner[2], owner[3] = 2, 2
			m2 := f.members[2]
			m2.SetSources([]int32{2, 3, 4, 5})
			// The rebuild: the new dests' partials read again, then the
			// partitions' events.
			for _, p := range f.sent {
				if p.Dest == 2 || p.Dest == 3 {
					p.Replayed = true
					m2.MergeAggregate(p)
				}
			}
			for _, h := range events {
				if !h.TS.Before(stop) {
					break
				}
				if p := partitionOf(h); h.Kind != event.KindKeyRotate && (p == 2 || p == 3) {
					cp := *h
					cp.Src.Partition = p
					m2.Replay(&cp)
				}
			}
		}
		if e.Kind == event.KindKeyRotate {
			for i, m := range f.members {
				if i == 1 && stopped {
					continue
				}
				cp := *e
				cp.Src.Partition = int32(2 * i)
				m.Observe(&cp)
			}
		} else {
			cp := *e
			cp.Src.Partition = partitionOf(e)
			f.members[memberOf(cp.Src.Partition)].Observe(&cp)
		}
		deliver()
	}
	end := events[len(events)-1].TS.Add(5 * time.Minute)
	for i, m := range f.members {
		if i == 1 {
			continue
		}
		for j := range 3 {
			m.Advance(end.Add(time.Duration(j) * 2 * time.Second))
		}
	}
	deliver()
	got := map[string]bool{}
	for _, r := range f.recs {
		for _, k := range kinds {
			for key := range latest(r.calls, k) {
				got[string(k)+" "+key] = true
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("the fleet found %v, one engine %v", got, want)
	}
	// The burst straddles the stop: the rate counts every refresh of its
	// minute once, neither half lost nor counted twice.
	wantRate := latest(one, finding.RefreshAnomaly)["client:app"].Evidence["refreshes_per_minute"]
	for i, r := range f.recs {
		if g, ok := latest(r.calls, finding.RefreshAnomaly)["client:app"]; ok && g.Evidence["refreshes_per_minute"] != wantRate {
			t.Errorf("member %d: client:app refreshes %v a minute, one engine %v", i, g.Evidence["refreshes_per_minute"], wantRate)
		}
	}
	for i, m := range f.members {
		if st := m.AggregateStats(); st.Late != 0 || st.Incomplete != 0 {
			t.Errorf("member %d: %+v, want no late partial and no minute closed incomplete", i, st)
		}
	}
}
