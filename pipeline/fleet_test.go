package pipeline_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/pipeline"
	"github.com/tokenwatch/tokenwatch/rekey"
)

// TestFleetOnUnkeyedInputFindsEachPerKeyIncidentOnce runs the two stages of
// the fleet on an unkeyed topic spread round-robin over 6 partitions: one
// ingest member, three analyze members on a 6-partition keyed topic, with
// session_id and subject missing from a third of the validations. The
// per-token and per-family findings equal analyze's on the same events,
// each once; every event is stored once. Then the whole keyed stream is
// published a second time (as after an ingest crash before its commit):
// the copies are dropped and the findings do not change.
func TestFleetOnUnkeyedInputFindsEachPerKeyIncidentOnce(t *testing.T) {
	events := generate(t, unkeyedSpec())
	n := 0
	for i := range events {
		if events[i].Kind == event.KindValidate {
			if n++; n%3 == 0 { // a gateway names the token alone
				events[i].SessionID, events[i].Subject = "", ""
			}
		}
	}
	events = append(events, testkit.PastTheHorizon(events, 6)...)
	c := config.Default()
	c.Redaction.Key = "fleet"
	want, wantRevs := analyzeReference(t, c, events)
	for _, k := range []finding.Kind{finding.ClockSkew, finding.KeyRotationBreak} {
		if len(want) < 4 || !slices.ContainsFunc(want, func(i incident) bool { return i.kind == k }) {
			t.Fatalf("analyze found %v: too few incidents to mean anything, or no %s to judge from the aggregates", want, k)
		}
	}

	h := newHarness(t, 6)
	cc, akcfg := fleetSetup(t, h, c)
	produceUnkeyed(t, h.brokers, h.topic, 6, ingest.FormatJSON, events)
	_, keyedTotal := keyedRecords(events, time.Time{})
	var analyzers []*member
	for range 3 {
		analyzers = append(analyzers, startMember(t, h, cc, config.RoleAnalyze, akcfg, nil))
	}
	// The three join their group before the keyed topic fills: a member
	// joining mid-backlog moves partitions, which the takeover and
	// mid-backlog tests cover.
	deadline := time.Now().Add(3 * time.Minute)
	for !joined(analyzers, 2) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	ing := startMember(t, h, cc, config.RoleIngest, h.kcfg, nil)
	consumed := func() int64 {
		var n int64
		for _, a := range analyzers {
			n += a.built.Pipeline.Stats().Consumed
		}
		return n
	}
	for (ing.built.Pipeline.Stats().Stored < int64(len(events)) || consumed() < keyedTotal) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	ing.stop()
	// Every revoke's horizon has passed on every member: each published
	// its partitions' partials and the owners merge them.
	revs := awaitRevocations(t, h, wantRevs, deadline, nil)
	if !slices.Equal(revs, wantRevs) {
		t.Errorf("revocation rows differ from analyze's: %s", listDiff(revs, wantRevs))
	}
	if s := ing.built.Pipeline.Stats(); s.Stored != int64(len(events)) {
		t.Fatalf("the ingest stage stored %d of %d events", s.Stored, len(events))
	}
	if got := consumed(); got < keyedTotal {
		t.Fatalf("the analyze members read %d of the %d keyed records", got, keyedTotal)
	}
	var stored uint64
	if err := h.store.Conn().QueryRow(context.Background(), `SELECT count() FROM `+h.store.Database()+`.events`).Scan(&stored); err != nil || stored != uint64(len(events)) {
		t.Fatalf("the events table holds %d rows (err %v), want each of the %d events once", stored, err, len(events))
	}
	// Three members share six keyed partitions: the per-service, per-kid,
	// per-client and per-subject detectors are judged on every partition's
	// partial aggregates, by their owners, so none reads a share.
	merged := 0.0
	for i, a := range analyzers {
		for _, k := range []string{"clock_skew", "key_rotation_break", "refresh_anomaly_rate"} {
			if v := metricValue(t, a.reg, `tokenwatch_detectors_partial_view{kind="`+k+`"}`); v != 0 {
				t.Errorf("analyze member %d: tokenwatch_detectors_partial_view{kind=%q} = %v, want 0 (judged on the merged aggregates)", i, k, v)
			}
		}
		if strings.Contains(a.logs.String(), "reads a share of the keyed partitions") {
			t.Errorf("analyze member %d logged that its detectors see a share", i)
		}
		merged += metricValue(t, a.reg, `tokenwatch_aggregate_partials_total{outcome="merged"}`)
	}
	if merged < 6*6*20 {
		t.Errorf("the aggregates' owners merged %v partials, want at least one per keyed partition and dest per minute of the 20-minute traffic", merged)
	}
	// Redelivery: the whole keyed stream again, same sources.
	pub, err := rekey.NewPublisher(rekey.PublisherConfig{Brokers: h.brokers, Topic: cc.Fleet.KeyedTopic, Partitions: 6}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.ReplayEvents(context.Background(), h.topic, []int32{0, 1, 2, 3, 4, 5}, time.Time{}, func(e *event.Event) {
		pub.Publish(e, 0)
	}); err != nil {
		t.Fatal(err)
	}
	if err := pub.Wait(context.Background(), pub.Mark()); err != nil {
		t.Fatal(err)
	}
	pub.Close()
	redelivered := func() float64 {
		var n float64
		for _, a := range analyzers {
			n += metricValue(t, a.reg, `tokenwatch_rekey_copies_dropped_total{cause="redelivered"}`)
		}
		return n
	}
	deadline = time.Now().Add(2 * time.Minute)
	for redelivered() < float64(keyedTotal) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	// Every partial aggregate again (as after a member's crash between
	// publishing and committing): each is a copy its dest's owner drops.
	aggCounter := func(outcome string) float64 {
		var n float64
		for _, a := range analyzers {
			n += metricValue(t, a.reg, `tokenwatch_aggregate_partials_total{outcome="`+outcome+`"}`)
		}
		return n
	}
	dupsBefore, lateBefore := aggCounter("duplicate"), aggCounter("late")
	copied := republishAggregatePartials(t, h.brokers, cc.Fleet.KeyedTopic, 6)
	if copied < 6*6*20 {
		t.Fatalf("the keyed topic holds %d partial aggregates, want one per partition and dest per minute of the 20-minute traffic", copied)
	}
	for aggCounter("duplicate")-dupsBefore < float64(copied) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if d, l := aggCounter("duplicate")-dupsBefore, aggCounter("late")-lateBefore; d != float64(copied) || l != 0 {
		t.Errorf("of %d partial aggregates delivered again, %v were dropped as copies and %v counted late; want every one a copy", copied, d, l)
	}
	time.Sleep(time.Second) // and nothing more than that
	for _, a := range analyzers {
		a.stop()
	}
	if redelivered := redelivered(); redelivered != float64(keyedTotal) {
		t.Errorf("the analyze members dropped %v redelivered records, want every one of the %d published again", redelivered, keyedTotal)
	}
	got, _ := storedResults(t, h)
	if g := got; !slices.Equal(g, want) {
		t.Errorf("per-key findings differ from analyze's:\n fleet:   %v\n analyze: %v", g, want)
	}
}

// joined says whether every member's newest assignment holds each
// partitions, all of one generation.
func joined(members []*member, each int) bool {
	gens := map[string]bool{}
	for _, m := range members {
		var last string
		for _, line := range strings.Split(m.logs.String(), "\n") {
			if strings.Contains(line, `msg="kafka partitions assigned"`) {
				last = line
			}
		}
		// One partition is not quoted, several are.
		g := regexp.MustCompile(`generation=(\d+) partitions=(?:"([^"]*)"|(\S+))`).FindStringSubmatch(last)
		if g == nil || strings.Count(g[2]+g[3], "@") != each {
			return false
		}
		gens[g[1]] = true
	}
	return len(gens) == 1
}

func isPartial(m consumer.Message) bool {
	for _, h := range m.Headers {
		if h.Key == rekey.HeaderKind {
			return true
		}
	}
	return false
}

// TestAnAnalyzeMemberTakingOverRebuildsFromTheKeyedTopic stops the only
// analyze member between the two exchanges of a stolen refresh token, and
// between the uses of replayed tokens, then starts another in its place:
// it rebuilds the state of its partitions' keys from the keyed records the
// first processed, so the incidents that straddle the move are found, and
// each once (the findings of both equal analyze's). Without the rebuild the
// second member takes the stolen token's second exchange for a refresh
// from a new device.
func TestAnAnalyzeMemberTakingOverRebuildsFromTheKeyedTopic(t *testing.T) {
	spec := unkeyedSpec()
	spec.Inject[gen.ScenarioRefreshReuseTwoDevices] = 1
	events := generate(t, spec)
	slices.SortStableFunc(events, func(a, b event.Event) int { return a.TS.Compare(b.TS) })
	// Split between the two exchanges of the parent exchanged twice.
	exchanged := map[string]time.Time{}
	var split time.Time
	for i := range events {
		e := &events[i]
		if e.Kind != event.KindRefresh || e.Outcome != event.OK || e.ParentTokenID == "" {
			continue
		}
		if first, ok := exchanged[e.ParentTokenID]; ok && split.IsZero() {
			split = first.Add(e.TS.Sub(first) / 2)
		}
		exchanged[e.ParentTokenID] = e.TS
	}
	if split.IsZero() {
		t.Fatal("the traffic has no refresh token exchanged twice")
	}
	c := config.Default()
	c.Redaction.Key = "takeover"
	want, _ := analyzeReference(t, c, events)

	h := newHarness(t, 1)
	cc, akcfg := fleetSetup(t, h, c)
	produceUnkeyed(t, h.brokers, h.topic, 1, ingest.FormatJSON, events)
	before, total := keyedRecords(events, split)
	deadline := time.Now().Add(3 * time.Minute)
	ingestAll(t, h, cc, len(events), deadline)

	var firstRead, secondRead atomic.Int64
	first := startMember(t, h, cc, config.RoleAnalyze, akcfg, func(p *pipeline.Pipeline) consumer.Sink { return holdAt{p, split, nil, &firstRead, nil} })
	for firstRead.Load() < before && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	first.stop()
	if got := firstRead.Load(); got != before {
		t.Fatalf("the first analyze member read %d keyed records, want the %d before %s", got, before, split)
	}
	never := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	second := startMember(t, h, cc, config.RoleAnalyze, akcfg, func(p *pipeline.Pipeline) consumer.Sink { return holdAt{p, never, nil, &secondRead, nil} })
	for secondRead.Load() < total-before && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	// A session revoke's result is merged from the partials the member
	// publishes to the keyed topic and reads back after the events (which
	// is all secondRead counts): let it store what it finds before it stops.
	settle := time.Now().Add(30 * time.Second)
	for got, _ := storedResults(t, h); !slices.Equal(got, want) && time.Now().Before(settle); got, _ = storedResults(t, h) {
		time.Sleep(200 * time.Millisecond)
	}
	second.stop()
	if got := secondRead.Load(); got != total-before {
		t.Fatalf("the second analyze member read %d keyed records, want the %d from %s on", got, total-before, split)
	}
	if l := second.logs.String(); !strings.Contains(l, "detector state rebuilt from the records processed before the committed offsets") {
		t.Errorf("the second member did not rebuild its state from the keyed topic:\n%s", l)
	}
	got, _ := storedResults(t, h)
	// One member at a time owns every keyed partition: even the
	// per-service detectors see every event, so every finding must match.
	if !slices.Equal(got, want) {
		t.Errorf("findings across the takeover differ from analyze's:\n fleet:   %v\n analyze: %v", got, want)
	}
}

// awaitRevocations reads the stored revocation rows until they equal want
// and done (nil: nothing more) holds, or the deadline passes; it returns
// the rows last read.
func awaitRevocations(t *testing.T, h *harness, want []string, deadline time.Time, done func() bool) []string {
	t.Helper()
	for {
		_, revs := storedResults(t, h)
		if slices.Equal(revs, want) && (done == nil || done()) || !time.Now().Before(deadline) {
			return revs
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ingestAll runs one ingest member until it has stored n events (or the
// deadline), then stops it: the keyed topic holds the whole backlog.
func ingestAll(t *testing.T, h *harness, cc config.Config, n int, deadline time.Time) {
	t.Helper()
	ing := startMember(t, h, cc, config.RoleIngest, h.kcfg, nil)
	for ing.built.Pipeline.Stats().Stored < int64(n) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	ing.stop()
}

// fleetSetup creates the keyed topic (6 partitions) and returns the
// members' config on the harness and the analyze group's Kafka config.
func fleetSetup(t *testing.T, h *harness, c config.Config) (config.Config, config.Kafka) {
	t.Helper()
	keyed := testkit.Topic(t) + "-keyed"
	testkit.CreateTopic(t, h.brokers, keyed, 6)
	cc := c
	cc.Kafka = h.kcfg
	cc.ClickHouse.Database = h.store.Database()
	cc.ClickHouse.BatchRows, cc.ClickHouse.BatchInterval = 5000, 200*time.Millisecond
	cc.Fleet.KeyedTopic, cc.Fleet.KeyedPartitions = keyed, 6
	akcfg := h.kcfg
	akcfg.Topics, akcfg.GroupID, akcfg.Format = []string{keyed}, h.kcfg.GroupID+"-analyze", "json"
	return cc, akcfg
}

// keyedRecords is how many keyed records the events make on a 6-partition
// keyed topic: those of events before at, and all.
func keyedRecords(events []event.Event, at time.Time) (before, total int64) {
	part := rekey.NewPartitioner(6)
	for i := range events {
		n := int64(len(part.Partitions(rekey.RouteOf(&events[i]), nil)))
		total += n
		if events[i].TS.Before(at) {
			before += n
		}
	}
	return before, total
}

// holdAt delivers a keyed partition's event records while their ts is
// before at, then holds until release is closed (nil: until the member
// stops), then delivers everything. It counts the event records it
// delivered (not the partial revocation results and token facts the
// members publish on the same topic), and the partitions it holds.
type holdAt struct {
	*pipeline.Pipeline
	at      time.Time
	release <-chan struct{}
	events  *atomic.Int64
	held    *atomic.Int64
}

func (s holdAt) Deliver(ctx context.Context, msgs []consumer.Message) error {
	select {
	case <-s.release:
		return s.deliver(ctx, msgs)
	default:
	}
	for i := range msgs {
		if isPartial(msgs[i]) {
			continue
		}
		var v struct {
			TS time.Time `json:"ts"`
		}
		if err := json.Unmarshal(msgs[i].Value, &v); err != nil {
			return err
		}
		if !v.TS.Before(s.at) {
			if err := s.deliver(ctx, msgs[:i]); err != nil {
				return err
			}
			if s.held != nil {
				s.held.Add(1)
			}
			select {
			case <-s.release:
				return s.deliver(ctx, msgs[i:])
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return s.deliver(ctx, msgs)
}

func (s holdAt) deliver(ctx context.Context, msgs []consumer.Message) error {
	if err := s.Pipeline.Deliver(ctx, msgs); err != nil {
		return err
	}
	for _, m := range msgs {
		if !isPartial(m) {
			s.events.Add(1)
		}
	}
	return nil
}

// TestAnalyzeMembersSharingPartitionsMidBacklogMergeEveryRevoke has one
// analyze member read the keyed backlog up to a moment when session and
// subject revokes are still within their horizon, then a second member
// joins and takes half the keyed partitions (the members' partials of
// those revokes now come from both, and some revokes' merges move). The
// revocation rows equal analyze's: none is lost in the move, none is
// reported twice with another result.
func TestAnalyzeMembersSharingPartitionsMidBacklogMergeEveryRevoke(t *testing.T) {
	events := generate(t, unkeyedSpec())
	n := 0
	for i := range events {
		if events[i].Kind == event.KindValidate {
			if n++; n%3 == 0 {
				events[i].SessionID, events[i].Subject = "", ""
			}
		}
	}
	events = append(events, testkit.PastTheHorizon(events, 6)...)
	slices.SortStableFunc(events, func(a, b event.Event) int { return a.TS.Compare(b.TS) })
	c := config.Default()
	c.Redaction.Key = "midbacklog"
	_, wantRevs := analyzeReference(t, c, events)
	// Hold the first member in the middle: broadcast revokes are pending
	// (within their horizon) there.
	at := events[0].TS.Add(events[len(events)-1].TS.Sub(events[0].TS) / 2)
	pending := 0
	for i := range events {
		e := &events[i]
		if e.Kind == event.KindRevoke && rekey.RevokeBroadcast(e.Target, e.TokenID) && e.TS.Before(at) && at.Sub(e.TS) < c.Pipeline.RevocationHorizon {
			pending++
		}
	}
	if pending < 3 {
		t.Fatalf("%d broadcast revokes are within their horizon at %s: too few to mean anything", pending, at)
	}

	h := newHarness(t, 6)
	cc, akcfg := fleetSetup(t, h, c)
	// The hold and the rebalance must not outlast the idle timeout (on a
	// loaded machine they took more than the default 5 s): a held stream
	// gone idle lets the watermark pass the records still behind it, which
	// then come late, as after any stall that long.
	cc.Pipeline.PartitionIdleTimeout = 30 * time.Second
	produceUnkeyed(t, h.brokers, h.topic, 6, ingest.FormatJSON, events)
	before, total := keyedRecords(events, at)
	deadline := time.Now().Add(3 * time.Minute)
	ingestAll(t, h, cc, len(events), deadline)

	release := make(chan struct{})
	var read, held atomic.Int64
	hold := func(p *pipeline.Pipeline) consumer.Sink { return holdAt{p, at, release, &read, &held} }
	members := []*member{startMember(t, h, cc, config.RoleAnalyze, akcfg, hold), startMember(t, h, cc, config.RoleAnalyze, akcfg, hold)}
	for !joined(members, 3) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	// The keyed partitions carry the raw partitions in the order the
	// ingest stage read them, not in ts order: records before at also
	// come after the first one past it (they are read after the move).
	for held.Load() < 6 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := read.Load(); got == 0 || got > before {
		t.Fatalf("the two analyze members read %d keyed records before holding, want most of the %d before %s", got, before, at)
	}
	time.Sleep(time.Second) // their batches stored and their offsets committed
	// A third joins: partitions move to it, and between the two (the range
	// assignor gives 0-2 and 3-5, then 0-1, 2-3 and 4-5), so a member
	// already past at takes over a partition whose history is behind it.
	members = append(members, startMember(t, h, cc, config.RoleAnalyze, akcfg, hold))
	for !joined(members, 2) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if !joined(members, 2) {
		t.Fatal("the three analyze members did not share the keyed partitions")
	}
	close(release)
	revs := awaitRevocations(t, h, wantRevs, deadline, nil)
	if !slices.Equal(revs, wantRevs) {
		t.Errorf("revocation rows differ from analyze's (%d broadcast revokes pending at the move): %s", pending, listDiff(revs, wantRevs))
	}
	for _, m := range members {
		m.stop()
	}
	// Records read again after the move are counted twice: at least all.
	if got := read.Load(); got < total {
		t.Errorf("the analyze members read %d keyed records, want all %d", got, total)
	}
}

// TestCopiesOnTwoRawPartitionsReadByTwoIngestMembersAreJudgedOnce has a
// producer retry every refresh and every tenth other event onto the other
// raw partition (an unkeyed producer's retry goes wherever its round-robin
// is), where another ingest member reads it: neither member's copy filter
// sees both, but both copies reach one keyed partition, and the analyze
// stage drops the second. The findings and revocation rows equal
// analyze's on the events sent once (a copied refresh would otherwise be
// a refresh token reused, a copied acceptance a residual one).
func TestCopiesOnTwoRawPartitionsReadByTwoIngestMembersAreJudgedOnce(t *testing.T) {
	events := generate(t, unkeyedSpec())
	events = append(events, testkit.PastTheHorizon(events, 6)...)
	slices.SortStableFunc(events, func(a, b event.Event) int { return a.TS.Compare(b.TS) })
	c := config.Default()
	c.Redaction.Key = "copies"
	want, wantRevs := analyzeReference(t, c, events)
	// Each copy goes about a produced batch (256 events) after its
	// original: mostly in the next batch, on the other of two partitions.
	var sent []event.Event
	due := map[int][]event.Event{}
	copies := 0
	for i := range events {
		sent = append(sent, events[i])
		sent = append(sent, due[i]...)
		delete(due, i)
		// (none of the last events: a copy behind the events past the
		// horizon would come more than pipeline.dedup_window late)
		if e := events[i]; e.RequestID != "" && (e.Kind == event.KindRefresh || i%10 == 0) && i+240 < len(events)-6 {
			due[i+240] = append(due[i+240], e)
			copies++
		}
	}
	if copies < 1000 {
		t.Fatalf("%d copies: too few to mean anything", copies)
	}

	h := newHarness(t, 2)
	cc, akcfg := fleetSetup(t, h, c)
	analyzer := startMember(t, h, cc, config.RoleAnalyze, akcfg, nil)
	ingesters := []*member{startMember(t, h, cc, config.RoleIngest, h.kcfg, nil), startMember(t, h, cc, config.RoleIngest, h.kcfg, nil)}
	deadline := time.Now().Add(3 * time.Minute)
	for !joined(ingesters, 1) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if !joined(ingesters, 1) {
		t.Fatal("the two ingest members did not share the raw partitions")
	}
	produceUnkeyed(t, h.brokers, h.topic, 2, ingest.FormatJSON, sent)
	dropped := func(m *member) float64 {
		return metricValue(t, m.reg, `tokenwatch_events_duplicate_total{topic="`+h.topic+`"}`)
	}
	inIngest := func() float64 { return dropped(ingesters[0]) + dropped(ingesters[1]) }
	inAnalyze := func() float64 {
		return metricValue(t, analyzer.reg, `tokenwatch_events_duplicate_total{topic="`+cc.Fleet.KeyedTopic+`"}`)
	}
	revs := awaitRevocations(t, h, wantRevs, deadline, func() bool { return inIngest()+inAnalyze() >= float64(copies) })
	for _, m := range append(ingesters, analyzer) {
		m.stop()
	}
	if !slices.Equal(revs, wantRevs) {
		t.Errorf("revocation rows differ from analyze's: %s", listDiff(revs, wantRevs))
	}
	if i, a := inIngest(), inAnalyze(); i+a != float64(copies) || a < float64(copies)/2 {
		t.Errorf("copies dropped: %v by the ingest members, %v by the analyze member; want the %d sent, most by the analyze member", i, a, copies)
	}
	got, _ := storedResults(t, h)
	if g, w := got, want; !slices.Equal(g, w) {
		t.Errorf("per-key findings differ from analyze's on the events sent once:\n fleet:   %v\n analyze: %v", g, w)
	}
}

// republishAggregatePartials writes every partial aggregate the keyed
// topic holds again, to its partition, and returns how many.
func republishAggregatePartials(t *testing.T, brokers []string, topic string, partitions int) int {
	t.Helper()
	var msgs []kafka.Message
	for p := range partitions {
		conn, err := kafka.DialLeader(context.Background(), "tcp", brokers[0], topic, p)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Seek(0, kafka.SeekAbsolute); err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < last; {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			b := conn.ReadBatch(1, 10<<20)
			for {
				m, err := b.ReadMessage()
				if err != nil {
					break
				}
				off = m.Offset + 1
				for _, hd := range m.Headers {
					if hd.Key == rekey.HeaderKind && string(hd.Value) == rekey.KindAggregatePartial {
						msgs = append(msgs, kafka.Message{Partition: p, Value: m.Value, Headers: m.Headers})
					}
				}
			}
			if err := b.Close(); err != nil && off < last {
				t.Fatal(err)
			}
		}
		conn.Close()
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { return m.Partition })}
	defer w.Close()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	return len(msgs)
}
