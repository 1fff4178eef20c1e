package main

import (
	"os"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
)

// TestFailoverOnAThreeBrokerCluster is Fleet 3/4's test: three `tokenwatch
// run` processes on a Kafka 4.4 cluster of three KRaft brokers (topics with
// replication factor 3 and min.insync.replicas 2) read unkeyed JSON from
// `tokenwatch gen` with every attack and look-alike injected, produced in
// four parts. While they read, one member is SIGKILLed and restarted, a
// fourth joins, and one broker is SIGKILLed and restarted. Then every event
// is stored once (by source partition, offset and record), the per-minute
// SLIs are one process's, the findings equal `tokenwatch analyze`'s on the
// same events with each incident once, and so do the revocation rows.
func TestFailoverOnAThreeBrokerCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-broker Kafka cluster and four processes")
	}
	// Off in `make test` until it passes every time (docs/fleet.md,
	// "Failover"): it passed seven runs in a row, then lost 9 of 366
	// revocation rows in one CI run.
	if os.Getenv("TOKENWATCH_FAILOVER_TEST") != "1" {
		t.Skip("set TOKENWATCH_FAILOVER_TEST=1 to run it (not yet reliable: docs/fleet.md, \"Failover\")")
	}
	cluster := testkit.StartKafkaCluster(t, 3)
	events := genTraffic(t, 31, "40m")
	events = append(events, testkit.PastTheHorizon(events, 6)...)
	f := newFleetRun(t, cluster.Brokers, ingest.FormatJSON, gen.Default().NATPrefixes(), 3)
	f.expect(events, 8)
	for range 3 {
		f.start()
	}
	deadline := time.Now().Add(10 * time.Minute)
	f.waitJoined(deadline)
	msgs := unkeyedMessages(t, events, ingest.FormatJSON) // one event per message
	quarter := len(msgs) / 4
	part := func(i int) {
		end := (i + 1) * quarter
		if i == 3 {
			end = len(msgs)
		}
		f.produce(msgs[i*quarter : end])
		t.Logf("part %d of 4 produced after %v", i+1, f.elapsed())
	}

	// A member dies mid-part and comes back as a new process.
	part(0)
	f.waitStored(quarter/2, deadline)
	f.kill(f.members[0])
	f.start()
	part(1)
	// A fourth member joins mid-part.
	f.waitStored(quarter+quarter/2, deadline)
	f.start()
	t.Logf("a fourth member started after %v", f.elapsed())
	part(2)
	// A broker dies mid-part, while the members read and publish, and
	// comes back.
	f.waitStored(2*quarter+quarter/2, deadline)
	cluster.Kill(2)
	t.Logf("broker 2 SIGKILLed after %v", f.elapsed())
	time.Sleep(10 * time.Second)
	cluster.Restart()
	t.Logf("broker 2 restarted after %v", f.elapsed())
	part(3)
	f.check(deadline)
}
