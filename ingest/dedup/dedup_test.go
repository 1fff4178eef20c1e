package dedup

import (
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func ev(sec int, req, svc string) *event.Event {
	return &event.Event{TS: t0.Add(time.Duration(sec) * time.Second), Kind: event.KindValidate, Outcome: event.OK,
		Service: svc, TokenID: "tok", RequestID: req}
}

func TestSecondDeliveryIsACopy(t *testing.T) {
	f := New(Config{})
	if f.Seen(ev(1, "r1", "gateway")) {
		t.Fatal("first delivery taken for a copy")
	}
	if !f.Seen(ev(1, "r1", "gateway")) {
		t.Fatal("second delivery of the same event passed")
	}
}

// One request is validated by the gateway and by the service behind it:
// two events with one request_id, neither a copy.
func TestOneRequestSeenByTwoServicesIsTwoEvents(t *testing.T) {
	f := New(Config{})
	if f.Seen(ev(1, "r1", "gateway")) || f.Seen(ev(1, "r1", "orders")) {
		t.Fatal("the service's event behind the gateway's was taken for a copy")
	}
	// The same request retried later by the client is a new event.
	if f.Seen(ev(3, "r1", "gateway")) {
		t.Fatal("a later event with the same request_id was taken for a copy")
	}
}

func TestWithoutRequestIDNothingIsDropped(t *testing.T) {
	f := New(Config{})
	for range 3 {
		if f.Seen(ev(1, "", "gateway")) {
			t.Fatal("an event without request_id was dropped")
		}
	}
	if f.Len() != 0 {
		t.Fatalf("kept %d identities for events without request_id", f.Len())
	}
}

func TestMemoryIsBoundedByWindowAndCount(t *testing.T) {
	f := New(Config{Window: time.Minute, MaxEntries: 100})
	for i := range 1000 {
		f.Seen(ev(i/10, "r"+string(rune('a'+i%26))+time.Duration(i).String(), "gw"))
	}
	if f.Len() > 100 {
		t.Fatalf("kept %d identities, bound 100", f.Len())
	}
	g := New(Config{Window: time.Minute, MaxEntries: 1 << 20})
	for i := range 600 {
		g.Seen(ev(i, "r"+time.Duration(i).String(), "gw"))
	}
	if n := g.Len(); n > 62 {
		t.Fatalf("kept %d identities of 600 over 10 minutes with a 1-minute window", n)
	}
	// A copy older than the window passes: the window is the promise.
	if g.Seen(ev(0, "r"+time.Duration(0).String(), "gw")) {
		t.Fatal("a copy from before the window was still remembered")
	}
}

// A slow partition's event is remembered while the pipeline's watermark
// (SetLow) has not passed it by the window, however far a fast partition
// ran ahead: its copy, on the fast partition, is still a copy. Without the
// bound it is forgotten once the newest event is a window past it.
func TestAWatermarkKeepsTheSlowPartitionsEventsRemembered(t *testing.T) {
	for _, bounded := range []bool{false, true} {
		f := New(Config{Window: time.Minute})
		f.Seen(ev(0, "slow", "api")) // the slow partition's event at 0 s
		if bounded {
			f.SetLow(t0) // the slow partition has reached 0 s
		}
		for s := 1; s <= 600; s++ { // the fast partition reads 10 minutes ahead
			f.Seen(ev(s, "fast"+time.Duration(s).String(), "api"))
		}
		copied := f.Seen(ev(0, "slow", "api"))
		if bounded && !copied {
			t.Fatal("with the watermark at 0 s, the copy of the slow partition's event passed")
		}
		if !bounded && copied {
			t.Fatal("without a watermark the filter remembered past its window: the test tells nothing apart")
		}
	}
}
