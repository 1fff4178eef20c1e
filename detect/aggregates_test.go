package detect

import (
	"hash/fnv"
	"math"
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
	owner   *recorder
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
		en.SetAggregates(AggregateConfig{Sources: 6, Wait: time.Hour, Retain: time.Hour,
			Publish: func(p Partial) { p.Member = itoa(i); f.sent = append(f.sent, p) }})
		en.SetSources([]int32{int32(2 * i), int32(2*i + 1)}, i == 0)
		f.members = append(f.members, en)
	}
	return f
}

// partitionOf spreads tokens over the six partitions as the keyed topic does.
func partitionOf(e *event.Event) int32 {
	h := fnv.New32a()
	h.Write([]byte(e.TokenID))
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
		f.members[0].MergeAggregate(p)
		f.members[0].MergeAggregate(p)
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
			st := f.members[0].AggregateStats()
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
	st := f.members[0].AggregateStats()
	if st.Pending != 0 || st.Incomplete != 0 {
		t.Fatalf("owner: %+v, want every minute closed complete", st)
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

var _ = aggregate.Merged
