package testkit

import (
	"strconv"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/rekey"
)

// PastTheHorizon is one validation per keyed partition (of partitions),
// stamped 11 minutes after the last event: past every revoke's horizon
// (10 min) and the lateness. Appended to a test's traffic, it moves the
// event time of every analyze member's partitions past every revoke, as a
// live stream does, so each revoke is reported whole rather than truncated
// at the members' shutdown.
func PastTheHorizon(events []event.Event, partitions int) []event.Event {
	var last time.Time
	for i := range events {
		if events[i].TS.After(last) {
			last = events[i].TS
		}
	}
	part := rekey.NewPartitioner(partitions)
	seen := map[int32]bool{}
	var out []event.Event
	for i := 0; len(seen) < partitions; i++ {
		id := "past-the-horizon-" + strconv.Itoa(i)
		e := event.Event{TS: last.Add(11 * time.Minute), Kind: event.KindValidate, Outcome: event.OK, Service: "gateway", TokenID: id, RequestID: id}
		if p := part.Partitions(rekey.RouteOf(&e), nil)[0]; !seen[p] {
			seen[p] = true
			out = append(out, e)
		}
	}
	return out
}
