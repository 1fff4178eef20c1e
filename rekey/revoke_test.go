package rekey

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/sli"
)

// resultRows flattens revocation results for comparison: one line per
// revoke and per service, with every figure the store keeps.
func resultRows(rs []sli.Revocation) []string {
	ms := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf("%.3f", *p)
	}
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s %s %s propagated=%v propagation=%.3f truncated=%v", r.RevokedAt.Format(time.RFC3339Nano), r.Target, r.TargetID(), r.Propagated, r.PropagationS, r.Truncated))
		for svc, l := range r.ByService {
			out = append(out, fmt.Sprintf("%s %s %s  %s residual=%d propagated=%v lag=%.3f last=%s first_rejection=%s", r.RevokedAt.Format(time.RFC3339Nano), r.Target, r.TargetID(), svc,
				l.ResidualAcceptances, l.Propagated, l.LagS, ms(l.LastAcceptanceS), ms(l.FirstRejectionS)))
		}
	}
	slices.Sort(out)
	return out
}

// TestBroadcastRevokesMergeToWhatOneTrackerReports computes the revocation
// results of traffic with slow, unpropagated and fast revocations (session,
// family and token revokes) with six trackers, each fed only the events its
// keyed partition receives, as six analyze members are: token revokes are
// reported whole by their token's owner, and the broadcast ones per
// partition and merged. A third of the validations name the token alone.
// Every result equals one tracker's on all events.
func TestBroadcastRevokesMergeToWhatOneTrackerReports(t *testing.T) {
	spec := gen.Default()
	spec.Seed, spec.Duration, spec.Rate, spec.Sessions = 31, 40*time.Minute, 40, 500
	spec.Start = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	spec.AccessTTLMin, spec.AccessTTLMax = 2*time.Minute, 4*time.Minute
	spec.Inject = map[string]int{gen.ScenarioSlowRevocation: 3, gen.ScenarioRevocationNotPropagated: 2, gen.ScenarioFastRevocation: 3}
	events, err := gen.All(spec)
	if err != nil {
		t.Fatal(err)
	}
	validations := 0
	for i := range events {
		if events[i].Kind == event.KindValidate {
			if validations++; validations%3 == 0 { // a gateway names the token alone
				events[i].SessionID, events[i].Subject = "", ""
			}
		}
	}
	cfg := sli.TrackerConfig{Horizon: 10 * time.Minute, Lateness: 30 * time.Second}

	one, err := sli.NewTracker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var want []sli.Revocation
	one.OnResult(func(r sli.Revocation) { want = append(want, r) })
	for i := range events {
		one.Observe(&events[i])
	}
	one.Flush()

	const n = 6
	part := NewPartitioner(n)
	merger := sli.NewRevocationMerger(time.Minute)
	var got []sli.Revocation
	var wide int
	// The analyze stage's tracking: a tracker per keyed partition (sli.Tasks),
	// each event handed over as read from its keyed partition.
	c := cfg
	c.Split = part.Split()
	tasks, err := sli.NewTasks(c)
	if err != nil {
		t.Fatal(err)
	}
	tasks.OnResult(func(r sli.Revocation) { got = append(got, r) })
	tasks.OnPartial(func(p sli.RevocationPartial) {
		if r, ok := merger.Add(p, time.Now()); ok {
			got = append(got, r)
			wide++
		}
	})
	tasks.SetOwned([]int32{0, 1, 2, 3, 4, 5})
	var dst []int32
	for i := range events {
		dst = part.Partitions(RouteOf(&events[i]), dst[:0])
		for _, p := range dst {
			e := events[i]
			e.Src.Partition = p
			tasks.Observe(&e)
		}
		if facts, ok := TokenFactsOf(&events[i]); ok && !slices.Contains(dst, part.TokenPartition(facts.Token)) {
			tasks.Learn(part.TokenPartition(facts.Token), facts) // as the publisher's token-facts record
		}
	}
	tasks.Flush()
	got = append(got, merger.Flush()...)
	if wide < 10 || len(want) == wide {
		t.Fatalf("%d results, %d of them merged from partials: want both token and broadcast revokes", len(want), wide)
	}
	t.Logf("%d revokes, %d of them broadcast and merged from %d partials each", len(want), wide, n)
	if g, w := resultRows(got), resultRows(want); !slices.Equal(g, w) {
		only, missing := diff(g, w)
		t.Errorf("merged results differ from one tracker's:\n only merged: %v\n only one tracker: %v", only, missing)
	}
}

func diff(a, b []string) (onlyA, onlyB []string) {
	n := map[string]int{}
	for _, x := range a {
		n[x]++
	}
	for _, x := range b {
		n[x]--
	}
	for k, v := range n {
		if v > 0 {
			onlyA = append(onlyA, k)
		} else if v < 0 {
			onlyB = append(onlyB, k)
		}
	}
	slices.Sort(onlyA)
	slices.Sort(onlyB)
	return
}

// TestASessionRevokeSeenInTwoPartitionsHasTheLagOneTrackerFinds: a session
// revoke whose two tokens went to different members. The gateway rejects
// token a at 12 s, 30 s and 50 s, and accepts token b at 20 s: its lag runs
// to the first rejection after that acceptance (30 s), which only the
// merge of both members' partials can tell.
func TestASessionRevokeSeenInTwoPartitionsHasTheLagOneTrackerFinds(t *testing.T) {
	const n = 6
	part := NewPartitioner(n)
	split := part.Split()
	a, b := "tok-a", ""
	for i := 0; b == ""; i++ {
		if c := fmt.Sprintf("tok-b%d", i); split.PartitionOf(c, "gateway") != split.PartitionOf(a, "gateway") {
			b = c
		}
	}
	t0 := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	ev := func(d time.Duration, kind event.Kind, o event.Outcome, tok string) event.Event {
		e := event.Event{TS: t0.Add(d), Kind: kind, Outcome: o, Service: "gateway", TokenID: tok, SessionID: "s1"}
		if kind == event.KindIssue || kind == event.KindRevoke {
			e.Service = "idp"
		}
		if kind == event.KindRevoke {
			e.Target, e.TokenID = "session", ""
		}
		return e
	}
	events := []event.Event{
		ev(-time.Minute, event.KindIssue, event.OK, a), ev(-time.Minute, event.KindIssue, event.OK, b),
		ev(0, event.KindRevoke, event.OK, ""),
		ev(12*time.Second, event.KindValidate, event.Revoked, a), ev(20*time.Second, event.KindValidate, event.OK, b),
		ev(30*time.Second, event.KindValidate, event.Revoked, a), ev(50*time.Second, event.KindValidate, event.Revoked, a),
		ev(20*time.Minute, event.KindValidate, event.OK, "tok-later"), // moves one partition's event time past the horizon
	}
	cfg := sli.TrackerConfig{Horizon: 10 * time.Minute}
	one, _ := sli.NewTracker(cfg)
	var want []sli.Revocation
	one.OnResult(func(r sli.Revocation) { want = append(want, r) })
	merger := sli.NewRevocationMerger(time.Minute)
	var got []sli.Revocation
	var trackers [n]*sli.Tracker
	for i := range trackers {
		c := cfg
		c.Split = split
		trackers[i], _ = sli.NewTracker(c)
		trackers[i].SetOwned([]int32{int32(i)})
		trackers[i].OnPartial(func(p sli.RevocationPartial) {
			if r, ok := merger.Add(p, time.Now()); ok {
				got = append(got, r)
			}
		})
	}
	var dst []int32
	for i := range events {
		one.Observe(&events[i])
		dst = part.Partitions(RouteOf(&events[i]), dst[:0])
		for _, p := range dst {
			trackers[p].Observe(&events[i])
		}
	}
	for _, tr := range trackers {
		tr.Advance(t0.Add(20 * time.Minute)) // the watermark of the member's other partitions
	}
	if len(want) != 1 || want[0].ByService["gateway"].LagS != 30 {
		t.Fatalf("one tracker: %+v, want one result with the gateway's lag 30 s", want)
	}
	if len(got) != 1 || got[0].Truncated {
		t.Fatalf("merged: %+v, want one complete result", got)
	}
	if g, w := resultRows(got), resultRows(want); !slices.Equal(g, w) {
		t.Errorf("merged result differs from one tracker's:\n merged: %v\n one:    %v", g, w)
	}
}
