package sli

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// A member takes over keyed partition 1 while its own partition 0 is past a
// session revoke's horizon (the previous owner died before it). Partition
// 1's tracker reports its share of the revoke from its own events, the
// residual acceptance included, and not before they pass the horizon; a
// tracker shared with partition 0 had reported that share (or lost it)
// before those events were read.
func TestAPartitionTakenOverBehindReportsItsShareFromItsOwnEvents(t *testing.T) {
	split := &Split{Partitions: 2, Broadcast: func(target, token string) bool { return target != "token" },
		PartitionOf: func(token, _ string) int32 {
			if strings.HasSuffix(token, "1") {
				return 1
			}
			return 0
		}}
	tasks, err := NewTasks(TrackerConfig{Horizon: 10 * time.Minute, Lateness: 30 * time.Second, Split: split})
	if err != nil {
		t.Fatal(err)
	}
	var got []RevocationPartial
	tasks.OnPartial(func(x RevocationPartial) { got = append(got, x) })
	ev := func(part int32, at time.Duration, kind event.Kind, token string, outcome event.Outcome) *event.Event {
		e := &event.Event{TS: t0.Add(at), Kind: kind, Outcome: outcome, Service: "gateway", TokenID: token, SessionID: "s1",
			Src: event.Source{Topic: "keyed", Partition: part}}
		if kind == event.KindRevoke {
			e.Service, e.TokenID, e.Target = "idp", "", "session"
		}
		return e
	}
	tasks.SetOwned([]int32{0})
	tasks.SetLag(0, 0)
	tasks.Observe(ev(0, 0, event.KindRevoke, "", event.OK))
	tasks.Observe(ev(0, time.Minute, event.KindValidate, "tok-0", event.Revoked))
	tasks.Observe(ev(0, 15*time.Minute, event.KindValidate, "tok-0", event.Revoked))
	if len(got) != 1 || got[0].Partition != 0 {
		t.Fatalf("partials after partition 0 passed the horizon: %+v, want partition 0's", got)
	}

	// Partition 1 comes from a member that died at 2 minutes: its history,
	// then its backlog, reach this member after partition 0 passed 15.
	tasks.SetOwned([]int32{0, 1})
	tasks.SetLag(1, 500)
	tasks.Observe(ev(1, 0, event.KindRevoke, "", event.OK))
	tasks.Observe(ev(1, 2*time.Minute, event.KindValidate, "tok-1", event.OK))
	tasks.Advance(t0.Add(16 * time.Minute)) // the member's watermark: partition 1 is behind
	if len(got) != 1 {
		t.Fatalf("partition 1 reported its share before its own events passed the horizon: %+v", got[1:])
	}
	tasks.Observe(ev(1, 5*time.Minute, event.KindValidate, "tok-1", event.OK))
	tasks.Observe(ev(1, 6*time.Minute, event.KindValidate, "tok-1", event.Revoked))
	tasks.Observe(ev(1, 12*time.Minute, event.KindValidate, "tok-1", event.Revoked))
	if len(got) != 2 || got[1].Partition != 1 {
		t.Fatalf("partials: %+v, want partition 1's after its events passed the horizon", got)
	}
	w := got[1].Services["gateway"]
	if w.Residual != 2 || w.FirstRejection != t0.Add(6*time.Minute).UnixNano() {
		t.Fatalf("partition 1's share: %+v, want 2 residual acceptances and the first rejection at 6 min", w)
	}
	if s := tasks.Stats(); s.LateEvents != 0 {
		t.Fatalf("%d late events: a partition's events are late only for its own tracker", s.LateEvents)
	}

	// Handed away, a partition's pending revokes are its new owner's.
	tasks.Observe(ev(1, 13*time.Minute, event.KindRevoke, "", event.OK))
	tasks.SetOwned([]int32{0})
	tasks.Flush()
	for _, x := range got[2:] {
		if x.Partition == 1 {
			t.Fatalf("a partition handed away reported %+v at Flush", x)
		}
	}
}
