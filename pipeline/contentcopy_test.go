package pipeline

import (
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest/dedup"
)

// In the fleet's analyze stage a broadcast revoke (or an issue) reaches
// several keyed partitions, and each partition's revocation tracker needs
// its copy. The content filter drops a fanned-out event only when it saw
// the same content on the same keyed partition (a producer's retry); seen
// on another keyed partition, it is kept and marked Copy (the detectors
// skip it). It used to drop it, and the partition's share of the revoke
// (its residual acceptances) was lost whenever the decoder's fan-out
// window no longer held the first copy.
func TestAFannedOutEventIsDroppedOnlyOnItsOwnKeyedPartition(t *testing.T) {
	p := &Pipeline{o: Options{Dedup: dedup.New(dedup.Config{})}}
	ts := time.Date(2026, 12, 8, 9, 11, 34, 0, time.UTC)
	revoke := event.Event{TS: ts, Kind: event.KindRevoke, Outcome: event.OK, Service: "idp", TokenID: "t1", SessionID: "s1",
		Target: "session", RequestID: "r1", Src: event.Source{Topic: "keyed", Partition: 0, Fanned: true}}
	at := func(e event.Event, part int32) *event.Event { e.Src.Partition = part; return &e }

	if first := at(revoke, 0); p.contentCopy(first) || first.Src.Copy {
		t.Fatal("the first copy was taken for a copy")
	}
	share := at(revoke, 3)
	if p.contentCopy(share) {
		t.Fatal("keyed partition 3's share of the broadcast revoke was dropped")
	}
	if !share.Src.Copy {
		t.Fatal("keyed partition 3's share was not marked Copy: the detectors would see the revoke twice")
	}
	if !p.contentCopy(at(revoke, 3)) {
		t.Fatal("a retry's copy on keyed partition 3 was kept")
	}
	// A share the decoder marked Copy is remembered too: the retry's copy
	// on that partition is dropped.
	marked := at(revoke, 5)
	marked.Src.Copy = true
	if p.contentCopy(marked) {
		t.Fatal("keyed partition 5's share, marked Copy by the decoder, was dropped")
	}
	if retry := at(revoke, 5); !p.contentCopy(retry) {
		t.Fatal("a retry's copy on keyed partition 5 was kept")
	}

	// An event routed to one keyed partition: a second copy is dropped.
	v := event.Event{TS: ts, Kind: event.KindValidate, Outcome: event.OK, Service: "api", TokenID: "t1", RequestID: "r2",
		Src: event.Source{Topic: "keyed", Partition: 2}}
	if p.contentCopy(at(v, 2)) || !p.contentCopy(at(v, 2)) {
		t.Fatal("a validation's second copy was not dropped, or its first was")
	}
}
