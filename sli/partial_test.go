package sli

import (
	"testing"
	"time"
)

func partialOf(part int32, residual int) RevocationPartial {
	p := RevocationPartial{Revoke: Revocation{ID: "r1", Target: "session", SessionID: "s1", RevokedAt: t0}, Partition: part, Partitions: 3}
	if residual > 0 {
		p.Services = map[string]PartialWatch{"gateway": {Residual: residual, LastAccept: t0.Add(20 * time.Second).UnixNano(),
			Rejections: []int64{t0.Add(30 * time.Second).UnixNano()}, LastRejection: t0.Add(30 * time.Second).UnixNano()}}
	}
	return p
}

// The owner of a broadcast revoke reports it once every partition's partial
// has come; a copy changes nothing; a revoke still incomplete after the wait
// is reported truncated, and a partial arriving after that is merged in and
// the revoke reported again, counted late.
func TestTheMergerReportsOnceCompleteAndAgainWhenALatePartialComes(t *testing.T) {
	now := time.Now()
	m := NewRevocationMerger(time.Minute)
	if _, ok := m.Add(partialOf(0, 1), now); ok {
		t.Fatal("reported with one partial of three")
	}
	if _, ok := m.Add(partialOf(0, 1), now); ok {
		t.Fatal("a copy of a partial made the revoke complete")
	}
	if _, ok := m.Add(partialOf(1, 0), now); ok {
		t.Fatal("reported with two partials of three")
	}
	r, ok := m.Add(partialOf(2, 2), now)
	if !ok || r.Truncated || r.ByService["gateway"].ResidualAcceptances != 3 || r.ByService["gateway"].LagS != 30 {
		t.Fatalf("complete: %+v (%v), want 3 residual acceptances, lag 30 s, not truncated", r, ok)
	}
	if _, ok := m.Add(partialOf(2, 2), now); ok {
		t.Fatal("a redelivered partial reported a complete revoke again")
	}

	m = NewRevocationMerger(time.Minute)
	m.Add(partialOf(0, 1), now)
	m.Add(partialOf(1, 0), now)
	if got := m.Expire(now.Add(30 * time.Second)); len(got) != 0 || m.Pending() != 1 {
		t.Fatalf("reported %d before the wait passed", len(got))
	}
	got := m.Expire(now.Add(2 * time.Minute))
	if len(got) != 1 || !got[0].Truncated || got[0].ByService["gateway"].ResidualAcceptances != 1 {
		t.Fatalf("after the wait: %+v, want one truncated report with what had come", got)
	}
	r, ok = m.Add(partialOf(2, 2), now.Add(3*time.Minute))
	if !ok || r.Truncated || r.ByService["gateway"].ResidualAcceptances != 3 || m.Late != 1 {
		t.Fatalf("late partial: %+v (%v), late %d: want the complete result again, counted late", r, ok, m.Late)
	}
}

// A member that no longer owns a revoke's merge forgets it: it must not
// report it truncated at the wait or at shutdown.
func TestTheMergerForgetsTheRevokesItNoLongerOwns(t *testing.T) {
	m := NewRevocationMerger(time.Minute)
	m.Add(partialOf(0, 1), time.Now())
	m.Retain(func(id string) bool { return id != "r1" })
	if got := m.Flush(); len(got) != 0 {
		t.Fatalf("flushed %+v of a revoke owned elsewhere", got)
	}
}
