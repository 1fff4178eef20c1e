package rekey

import (
	"slices"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/gen"
)

func partitionsOf(p *Partitioner, e *event.Event) []int32 {
	return p.Partitions(RouteOf(e), nil)
}

// The key depends on the fields the contract requires, never on the
// optional ones: a gateway's validation naming the token alone meets the
// IdP's validation naming its session and family, and the token's issue.
func TestOptionalFieldsDoNotMoveAToken(t *testing.T) {
	p := NewPartitioner(12)
	bare := &event.Event{Kind: event.KindValidate, Outcome: event.OK, Service: "gateway", TokenID: "tok-1"}
	full := &event.Event{Kind: event.KindValidate, Outcome: event.OK, Service: "orders", TokenID: "tok-1",
		SessionID: "sess-1", Subject: "sub-1", FamilyID: "fam-1", ClientID: "web"}
	intro := &event.Event{Kind: event.KindIntrospect, Outcome: event.OK, Service: "idp", TokenID: "tok-1"}
	issue := &event.Event{Kind: event.KindIssue, Outcome: event.OK, Service: "idp", TokenID: "tok-1", SessionID: "sess-1", FamilyID: "fam-1"}
	want := partitionsOf(p, bare)
	if len(want) != 1 {
		t.Fatalf("a validation goes to %v, want one partition", want)
	}
	for _, e := range []*event.Event{full, intro} {
		if got := partitionsOf(p, e); !slices.Equal(got, want) {
			t.Errorf("%s of the same token with other optional fields goes to %v, the bare validation to %v", e.Kind, got, want)
		}
	}
	if got := partitionsOf(p, issue); !slices.Contains(got, want[0]) {
		t.Errorf("the token's issue goes to %v, which misses its uses' partition %d", got, want[0])
	}
}

// A family's refreshes meet its issue events whatever token they present,
// and a refresh without session or subject goes to the same place.
func TestRefreshesOfAFamilyMeetItsIssues(t *testing.T) {
	p := NewPartitioner(12)
	issue := &event.Event{Kind: event.KindIssue, Service: "idp", TokenID: "r2", FamilyID: "fam-9", SessionID: "s"}
	fam := partitionsOf(p, &event.Event{Kind: event.KindRefresh, Service: "idp", TokenID: "r1", FamilyID: "fam-9"})
	other := partitionsOf(p, &event.Event{Kind: event.KindRefresh, Service: "idp", TokenID: "r2", FamilyID: "fam-9", Subject: "u"})
	if !slices.Equal(fam, other) || len(fam) != 1 {
		t.Fatalf("refreshes of one family go to %v and %v, want one same partition", fam, other)
	}
	if !slices.Contains(partitionsOf(p, issue), fam[0]) {
		t.Fatalf("the family's issue goes to %v, missing the family's partition %d", partitionsOf(p, issue), fam[0])
	}
}

// A successful refresh issues a token whose validations may name no
// session (a gateway's): the refresh goes to its family alone, and the
// token's partition is told the token's session, subject and family in a
// token-facts record, as an issue event would tell it. A failed refresh
// issued nothing.
func TestARefreshTellsTheTokenItIssuedItsSession(t *testing.T) {
	p := NewPartitioner(12)
	refresh := &event.Event{Kind: event.KindRefresh, Outcome: event.OK, Service: "idp", TokenID: "a1", FamilyID: "fam-9", SessionID: "s", Subject: "u",
		TS: time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)}
	if got := partitionsOf(p, refresh); len(got) != 1 || got[0] != p.Of("f:fam-9") {
		t.Fatalf("the refresh goes to %v, want its family's partition alone", got)
	}
	facts, ok := TokenFactsOf(refresh)
	if !ok || facts.Token != "a1" || facts.Session != "s" || facts.Subject != "u" || facts.Family != "fam-9" || !facts.IssuedAt.Equal(refresh.TS) {
		t.Fatalf("token facts %+v (%v): want token a1 of session s, subject u, family fam-9, issued at the refresh", facts, ok)
	}
	use := &event.Event{Kind: event.KindValidate, Outcome: event.OK, Service: "gateway", TokenID: "a1"}
	if p.TokenPartition("a1") != partitionsOf(p, use)[0] {
		t.Fatalf("token facts go to partition %d, the token's validations to %v", p.TokenPartition("a1"), partitionsOf(p, use))
	}
	failed := *refresh
	failed.Outcome = event.Reused
	if _, ok := TokenFactsOf(&failed); ok {
		t.Fatal("a failed refresh issued no token, but has token facts")
	}
}

// Revokes wider than a token reach every partition; a token revoke reaches
// the token's owner. Key rotations reach everyone.
func TestWideRevokesAreBroadcast(t *testing.T) {
	p := NewPartitioner(6)
	for _, target := range []string{"session", "subject", "family"} {
		e := &event.Event{Kind: event.KindRevoke, Service: "idp", Target: target, SessionID: "s", Subject: "u", FamilyID: "f"}
		if got := partitionsOf(p, e); len(got) != 6 {
			t.Errorf("a %s revoke reaches %v, want all 6 partitions", target, got)
		}
	}
	tokRevoke := &event.Event{Kind: event.KindRevoke, Service: "idp", Target: "token", TokenID: "tok-7", SessionID: "s"}
	use := &event.Event{Kind: event.KindValidate, Service: "api", TokenID: "tok-7"}
	if got, want := partitionsOf(p, tokRevoke), partitionsOf(p, use); !slices.Equal(got, want) {
		t.Errorf("a token revoke goes to %v, the token's uses to %v", got, want)
	}
	if got := partitionsOf(p, &event.Event{Kind: event.KindKeyRotate, Service: "idp", Kid: "k2"}); len(got) != 6 {
		t.Errorf("a key rotation reaches %v, want all partitions", got)
	}
	malformed := &event.Event{Kind: event.KindValidate, Outcome: event.Malformed, Service: "api"}
	if got := partitionsOf(p, malformed); len(got) != 1 {
		t.Errorf("a malformed validation without token_id goes to %v, want its service's one partition", got)
	}
}

// On generated traffic with session_id and subject stripped from a third
// of the events, every use and every revoke of a token still reaches the
// partition of the token's issue event, and every refresh that of its
// family's issue events.
func TestGeneratedTrafficWithMissingFieldsStaysTogether(t *testing.T) {
	spec := gen.Default()
	spec.Seed, spec.Duration, spec.Rate, spec.Sessions = 5, 10*time.Minute, 50, 200
	spec.Start = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	g, err := gen.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPartitioner(12)
	issuedAt := map[string][]int32{} // token → partitions of its issue
	familyAt := map[string]int32{}
	n, checked := 0, 0
	for b := g.Next(nil); b != nil; b = g.Next(nil) {
		for i := range b {
			e := &b[i]
			n++
			if n%3 == 0 {
				e.SessionID, e.Subject = "", ""
			}
			parts := partitionsOf(p, e)
			switch e.Kind {
			case event.KindIssue:
				issuedAt[e.TokenID] = parts
				if e.FamilyID != "" {
					familyAt[e.FamilyID] = p.Partitions(Route{Keys: []string{familyKey + e.FamilyID}}, nil)[0]
				}
			case event.KindValidate, event.KindIntrospect:
				if at, ok := issuedAt[e.TokenID]; ok && e.TokenID != "" {
					checked++
					if !slices.Contains(at, parts[0]) {
						t.Fatalf("a %s of token %s goes to %v; its issue went to %v", e.Kind, e.TokenID, parts, at)
					}
				}
			case event.KindRefresh:
				if at, ok := familyAt[e.FamilyID]; ok {
					checked++
					if parts[0] != at {
						t.Fatalf("a refresh of family %s goes to %v; the family's issues to %d", e.FamilyID, parts, at)
					}
				}
			}
		}
	}
	if checked < 1000 {
		t.Fatalf("only %d uses checked: the traffic is too thin to mean anything", checked)
	}
}

func TestSourceHeadersRoundTrip(t *testing.T) {
	src := Source{Topic: "auth-events", Partition: 4, Offset: 1234567, Record: 255}
	got, err := SourceOf(Headers(src))
	if err != nil || got != src {
		t.Fatalf("round trip gave %+v, %v; want %+v", got, err, src)
	}
	if _, err := SourceOf(Headers(src)[:3]); err == nil {
		t.Fatal("a record missing a source header was accepted")
	}
}

// A crashed ingest member's range produced again, and fan-out copies
// reaching one member through several keyed partitions, are dropped; the
// first delivery of everything passes.
func TestDedupDropsRedeliveryAndFanoutCopies(t *testing.T) {
	d := NewDedup(4)
	src := func(off int64, rec int32) Source { return Source{Topic: "raw", Partition: 1, Offset: off, Record: rec} }
	for off := int64(100); off < 110; off++ {
		for rec := int32(0); rec < 3; rec++ {
			if d.Copy(7, src(off, rec), false) {
				t.Fatalf("first delivery of %d/%d dropped", off, rec)
			}
		}
	}
	// The next ingest member starts again from offset 105.
	for off := int64(105); off < 110; off++ {
		if !d.Copy(7, src(off, 1), false) {
			t.Fatalf("redelivered %d passed", off)
		}
	}
	if d.Copy(7, src(110, 0), false) {
		t.Fatal("new data after a redelivered range was dropped")
	}
	// The same source on another keyed partition is its own sequence...
	if d.Copy(8, src(50, 0), false) {
		t.Fatal("first delivery on keyed partition 8 dropped")
	}
	// ...but a fanned-out event seen on 7 is a copy on 8.
	if d.Copy(7, src(111, 0), true) {
		t.Fatal("first copy of a fanned-out event dropped")
	}
	if !d.Copy(8, src(111, 0), true) {
		t.Fatal("second copy of a fanned-out event, through another keyed partition, passed")
	}
	if d.Redelivered != 5 || d.FannedOut != 1 {
		t.Fatalf("counted %d redelivered and %d fanned out, want 5 and 1", d.Redelivered, d.FannedOut)
	}
	// The fan-out window is bounded: 4 sources here.
	for off := int64(200); off < 210; off++ {
		d.Copy(7, src(off, 0), true)
	}
	if len(d.fanout) != 4 || len(d.ring) != 4 {
		t.Fatalf("fan-out window holds %d (ring %d), want its bound 4", len(d.fanout), len(d.ring))
	}
	d.Forget(7)
	if d.Copy(7, src(105, 1), false) {
		t.Fatal("after Forget, keyed partition 7 still remembered its positions")
	}
}

// A keyed partition handed to another member and taken back later is read
// again from the group's committed offset: the positions this member had
// reached on it before must not make those records look redelivered
// (Decoder.Owned forgets the positions of the partitions it no longer
// owns).
func TestAKeyedPartitionTakenBackIsNotTakenForARedelivery(t *testing.T) {
	d, err := NewDecoder(4, nil)
	if err != nil {
		t.Fatal(err)
	}
	src := Source{Topic: "raw", Partition: 1, Offset: 500}
	// This member read keyed partition 2 up to raw offset 500...
	if d.dedup.Copy(2, src, false) {
		t.Fatal("first delivery dropped")
	}
	// ...handed it away (it owns 0 and 1 now), and took it back.
	d.Owned([]int32{0, 1})
	d.Owned([]int32{0, 1, 2})
	src.Offset = 400 // the new owner's committed offset was behind this member's old position
	if d.dedup.Copy(2, src, false) {
		t.Fatal("a record of the partition taken back was taken for a redelivery")
	}
	// A partition kept all along keeps its positions.
	if !d.dedup.Copy(2, src, false) {
		t.Fatal("a real redelivery on a kept partition passed")
	}
}
