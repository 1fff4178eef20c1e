package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/analyze"
	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/pipeline"
	"github.com/tokenwatch/tokenwatch/sli"
)

// TestThreeRunProcessesOnUnkeyedOTLPFindEachPerKeyIncidentOnce starts three
// `tokenwatch run` processes with fleet.keyed_topic set (each runs both
// stages) on unkeyed OTLP batches of 256 records spread round-robin over 6
// partitions, the way the OpenTelemetry Collector's Kafka exporter sends
// them. Every event is stored once, and the per-token and per-family
// findings equal `analyze`'s on the same events, each once.
func TestThreeRunProcessesOnUnkeyedOTLPFindEachPerKeyIncidentOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three processes")
	}
	spec := gen.Default()
	spec.Seed, spec.Duration, spec.Rate, spec.Sessions = 23, 20*time.Minute, 40, 400
	spec.Start = time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Minute)
	spec.AccessTTLMin, spec.AccessTTLMax = 2*time.Minute, 4*time.Minute
	spec.Inject = map[string]int{gen.ScenarioReplay: 2, gen.ScenarioSlowRevocation: 2, gen.ScenarioRefreshReuseIdP: 1,
		gen.ScenarioRefreshReuseTwoDevices: 1, gen.ScenarioRefreshRateFamily: 1, gen.ScenarioSameSubnet: 1, gen.ScenarioRefreshRace: 1}
	events, err := gen.All(spec)
	if err != nil {
		t.Fatal(err)
	}
	threeRunProcesses(t, events, ingest.FormatOTLPProto, nil, 5)
}

// TestThreeRunProcessesOnUnkeyedJSONFromGen does the same on the NDJSON
// `tokenwatch gen --out` writes, with every per-token and per-session
// attack and look-alike injected, session_id and subject removed from a
// third of the validations (a gateway names the token alone), one JSON
// event per message, batches of 256 messages round-robin over 6 partitions.
func TestThreeRunProcessesOnUnkeyedJSONFromGen(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three processes")
	}
	threeRunProcesses(t, genTraffic(t, 29, "40m"), ingest.FormatJSON, gen.Default().NATPrefixes(), 8)
}

// genTraffic is the NDJSON `tokenwatch gen --out` writes for seed and
// duration with every attack and look-alike injected (the per-token and
// per-session ones, and the per-service, per-kid, per-client ones: clock
// skew, key rotation breaks, client and subject refresh rates, busy
// clients, which the owners of the aggregates judge), with session_id and
// subject removed from a third of the validations, moved to two hours ago
// (a backlog of recent events, inside the store's retention).
func genTraffic(t *testing.T, seed int, duration string) []event.Event {
	t.Helper()
	file := filepath.Join(t.TempDir(), "traffic.ndjson")
	if out, err := exec.Command(buildBinary(t), "gen", "--out", file, "--seed", strconv.Itoa(seed), "--duration", duration, "--rate", "40",
		"--sessions", "400", "--inject", "all=1").CombinedOutput(); err != nil {
		t.Fatalf("tokenwatch gen: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := ingest.NewDecoder(ingest.FormatJSON)
	var events []event.Event
	validations := 0
	for i, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		var errs []error
		n := len(events)
		if events, errs = dec.Decode(event.Source{Topic: "file", Offset: int64(i)}, line, events); len(errs) > 0 {
			t.Fatalf("line %d of gen's output: %v", i+1, errs)
		}
		for j := n; j < len(events); j++ {
			if events[j].Kind == event.KindValidate {
				if validations++; validations%3 == 0 {
					events[j].SessionID, events[j].Subject = "", ""
				}
			}
		}
	}
	shift := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Minute).Sub(events[0].TS)
	for i := range events {
		e := &events[i]
		e.TS = e.TS.Add(shift)
		if !e.IAT.IsZero() {
			e.IAT = e.IAT.Add(shift)
		}
		if !e.EXP.IsZero() {
			e.EXP = e.EXP.Add(shift)
		}
	}
	return events
}

// threeRunProcesses produces events unkeyed in format (256 events, or 256
// messages of one event, per batch, batches round-robin over 6 partitions),
// runs three `tokenwatch run` processes on them and compares what they store
// with analyze on the same events: every event stored once, the per-key
// findings each once, the revocation rows.
func threeRunProcesses(t *testing.T, events []event.Event, format ingest.Format, nat []string, minIncidents int) {
	t.Helper()
	events = append(events, testkit.PastTheHorizon(events, 6)...)
	f := newFleetRun(t, testkit.Kafka(t), format, nat, 1)
	f.expect(events, minIncidents)
	for range 3 {
		f.start()
	}
	deadline := time.Now().Add(3 * time.Minute)
	// The three join both groups first: a member joining mid-backlog moves
	// partitions, which is Fleet 3/4's test (TestFailoverOnAThreeBrokerCluster);
	// here every member reads its share from the start.
	f.waitJoined(deadline)
	f.produce(unkeyedMessages(t, events, format))
	f.check(deadline)
}

// fleetRun is a fleet of `tokenwatch run` processes (each runs both
// stages) on one raw topic of 6 partitions, with what analyze finds on the
// same events to compare against.
type fleetRun struct {
	t         *testing.T
	brokers   []string
	topic     string
	keyed     string
	db        string
	bin       string
	args      []string
	natRanges []string
	members   []*fleetMember
	began     time.Time
	events    []event.Event
	want      []string
	wantRevs  []string
}

type fleetMember struct {
	cmd    *exec.Cmd
	logs   *syncBuffer
	killed bool
}

// newFleetRun creates the raw topic (replication factor rf; with rf 3,
// min.insync.replicas 2, as is the keyed topic) and the database, and
// migrates it.
func newFleetRun(t *testing.T, brokers []string, format ingest.Format, nat []string, rf int) *fleetRun {
	t.Helper()
	f := &fleetRun{t: t, brokers: brokers, topic: testkit.Topic(t), bin: buildBinary(t), began: time.Now(), natRanges: nat}
	f.keyed = f.topic + "-keyed"
	minInsync := 0
	if rf >= 3 {
		minInsync = 2
	}
	testkit.CreateReplicatedTopic(t, brokers, f.topic, 6, rf, minInsync)
	var addr string
	addr, f.db = testkit.ClickHouse(t)
	f.args = []string{
		"--set", "kafka.brokers=" + strings.Join(brokers, ","), "--set", "kafka.topics=" + f.topic,
		"--set", "kafka.group_id=fleet-" + f.topic, "--set", "kafka.max_wait=50ms", "--set", "kafka.format=" + format.String(),
		"--set", "clickhouse.addr=" + addr, "--set", "clickhouse.database=" + f.db,
		"--set", "clickhouse.batch_rows=5000", "--set", "clickhouse.batch_interval=200ms",
		"--set", "metrics.listen=127.0.0.1:0", "--set", "redaction.key=fleet",
		"--set", "fleet.keyed_topic=" + f.keyed, "--set", "fleet.keyed_partitions=6",
		"--set", "fleet.replication_factor=" + strconv.Itoa(rf), "--set", "fleet.min_insync_replicas=" + strconv.Itoa(minInsync),
	}
	if len(nat) > 0 {
		f.args = append(f.args, "--set", "detect.nat_egress_ranges="+strings.Join(nat, ","))
	}
	if out, err := exec.Command(f.bin, append([]string{"migrate"}, f.args...)...).CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		for _, m := range f.members {
			_ = m.cmd.Process.Kill()
		}
	})
	return f
}

// expect runs analyze on the events: the incidents and revocation rows the
// fleet must store.
func (f *fleetRun) expect(events []event.Event, minIncidents int) {
	f.t.Helper()
	incidents, wantRevs := analyzeIncidents(f.t, events, "fleet", f.natRanges)
	f.events, f.want, f.wantRevs = events, sortedIncidents(incidents), wantRevs
	if len(f.want) < minIncidents {
		f.t.Fatalf("analyze found %d incidents: too few to mean anything", len(f.want))
	}
}

// start starts one more member.
func (f *fleetRun) start() *fleetMember {
	f.t.Helper()
	m := &fleetMember{logs: &syncBuffer{}}
	m.cmd = exec.Command(f.bin, append([]string{"run"}, f.args...)...)
	m.cmd.Stdout, m.cmd.Stderr = m.logs, m.logs
	if err := m.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.members = append(f.members, m)
	return m
}

// kill SIGKILLs a member, as a crash.
func (f *fleetRun) kill(m *fleetMember) {
	f.t.Helper()
	m.killed = true
	_ = m.cmd.Process.Kill()
	_ = m.cmd.Wait()
	f.t.Logf("member %d SIGKILLed after %v", m.cmd.Process.Pid, f.elapsed())
}

func (f *fleetRun) live() []*fleetMember {
	var out []*fleetMember
	for _, m := range f.members {
		if !m.killed {
			out = append(out, m)
		}
	}
	return out
}

func (f *fleetRun) elapsed() time.Duration { return time.Since(f.began).Round(time.Second) }

// joined says whether every live member holds a share of the latest
// generation of both groups, the shares covering the 6 partitions.
func (f *fleetRun) joined() bool {
	for _, role := range []string{"ingest", "analyze"} {
		gens := map[string]bool{}
		total := 0
		for _, m := range f.live() {
			var last string
			for _, line := range strings.Split(m.logs.String(), "\n") {
				if strings.Contains(line, `msg="kafka partitions assigned" role=`+role+" ") {
					last = line
				}
			}
			g := regexp.MustCompile(`generation=(\d+) partitions="([^"]*)"`).FindStringSubmatch(last)
			if g == nil || strings.Count(g[2], "@") == 0 {
				return false
			}
			gens[g[1]] = true
			total += strings.Count(g[2], "@")
		}
		if len(gens) != 1 || total != 6 {
			return false
		}
	}
	return true
}

func (f *fleetRun) waitJoined(deadline time.Time) {
	for !f.joined() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	f.t.Logf("%d members joined after %v", len(f.live()), f.elapsed())
}

// produce writes msgs to the raw topic, each to the partition its "p"
// header names, with acks from every in-sync replica.
func (f *fleetRun) produce(msgs []kafka.Message) {
	f.t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(f.brokers...), Topic: f.topic, RequiredAcks: kafka.RequireAll, BatchSize: 100,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int { p, _ := strconv.Atoi(string(m.Headers[0].Value)); return p })}
	defer w.Close()
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fleetRun) stored() int { return engineCount(f.t, "SELECT count() FROM "+f.db+".events") }

// waitStored waits until at least n events are stored.
func (f *fleetRun) waitStored(n int, deadline time.Time) {
	for f.stored() < n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
}

// unkeyedMessages cuts events into batches of 256 (one OTLP message, or
// 256 JSON messages of one event) going round-robin over 6 partitions, the
// partition in the header "p".
func unkeyedMessages(t *testing.T, events []event.Event, format ingest.Format) []kafka.Message {
	t.Helper()
	var msgs []kafka.Message
	for i := 0; i*256 < len(events); i++ {
		batch := events[i*256 : min((i+1)*256, len(events))]
		h := []kafka.Header{{Key: "p", Value: []byte(strconv.Itoa(i % 6))}}
		if format == ingest.FormatJSON {
			for j := range batch {
				msgs = append(msgs, kafka.Message{Value: ingest.AppendJSON(nil, &batch[j]), Headers: h})
			}
			continue
		}
		v, err := ingest.EncodeOTLP(batch, format)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Value: v, Headers: h})
	}
	return msgs
}

// check waits (until deadline) for the fleet to store every event and what
// analyze finds, stops the live members, and compares: every event stored
// once, the per-minute SLIs, the findings (each incident once), the
// revocation rows.
func (f *fleetRun) check(deadline time.Time) {
	t := f.t
	t.Helper()
	f.waitStored(len(f.events), deadline)
	// Then until the analyze group has committed the end of every keyed partition.
	client := &kafka.Client{Addr: kafka.TCP(f.brokers...)}
	t.Logf("stored after %v", f.elapsed())
	for !analyzed(t, client, f.keyed, "fleet-"+f.topic+"-analyze") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	// A session revoke's slow-revocation finding comes when its owner has
	// merged every member's partial result, after the last offsets.
	findings := func() []string {
		out, err := testkit.ClickHouseEngine(t).Query("SELECT kind, key, position(evidence, 'superseded_by') > 0 FROM "+f.db+".findings FINAL", "TabSeparated")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			fs := strings.Split(line, "\t")
			if len(fs) == 3 && fs[2] == "0" {
				got = append(got, fs[0]+" "+fs[1])
			}
		}
		return sortedIncidents(got)
	}
	t.Logf("keyed topic read after %v", f.elapsed())
	for !slices.Equal(findings(), f.want) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	// Every revoke's horizon has passed on every member: the owners of the
	// session and family revokes merge the members' partial results.
	revs := func() []string {
		out, err := testkit.ClickHouseEngine(t).Query("SELECT revoked_at, target_id, service, propagated, residual_acceptances FROM "+f.db+".revocations FINAL", "TabSeparated")
		if err != nil {
			t.Fatal(err)
		}
		rows := strings.Split(strings.TrimSpace(string(out)), "\n")
		slices.Sort(rows)
		return rows
	}
	t.Logf("findings after %v", f.elapsed())
	// The revokes whose horizon lies past the traffic's end are reported
	// (truncated, as analyze reports them at the end of its file) when the
	// members stop: wait until the rows match, or stop changing for 30 s.
	last, settled := revs(), time.Now()
	for !slices.Equal(last, f.wantRevs) && time.Now().Before(deadline) && time.Since(settled) < 30*time.Second {
		time.Sleep(200 * time.Millisecond)
		if now := revs(); !slices.Equal(now, last) {
			last, settled = now, time.Now()
		}
	}
	live := f.live()
	for _, m := range live {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	for i, m := range live {
		if err := m.cmd.Wait(); err != nil {
			t.Errorf("member %d exited with %v; logs:\n%s", i, err, m.logs.String())
		}
	}
	t.Logf("stopped after %v", f.elapsed())
	logs := func() {
		for i, m := range f.members {
			t.Logf("member %d (killed %v):\n%s", i, m.killed, m.logs.String())
		}
	}
	if n := f.stored(); n != len(f.events) {
		t.Fatalf("stored %d events, produced %d", n, len(f.events))
	}
	if n := engineCount(t, "SELECT count() FROM (SELECT partition, offset, record FROM "+f.db+".events GROUP BY partition, offset, record HAVING count() > 1)"); n != 0 {
		t.Fatalf("%d events stored twice", n)
	}
	// The per-minute SLIs: what one process stores, every event once.
	wantSLI := map[string]int{}
	for i := range f.events {
		e := &f.events[i]
		wantSLI[e.TS.UTC().Truncate(time.Minute).Format(time.DateTime)+"\t"+e.Service+"\t"+e.Kind.String()+"\t"+e.Outcome.String()]++
	}
	out, err := testkit.ClickHouseEngine(t).Query("SELECT minute, service, kind, outcome, sum(events) FROM "+f.db+".sli_minute GROUP BY minute, service, kind, outcome", "TabSeparated")
	if err != nil {
		t.Fatal(err)
	}
	gotSLI := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if i := strings.LastIndexByte(line, '\t'); i > 0 {
			gotSLI[line[:i]], _ = strconv.Atoi(line[i+1:])
		}
	}
	if !maps.Equal(gotSLI, wantSLI) {
		diff := 0
		for k, v := range wantSLI {
			if gotSLI[k] != v {
				if diff++; diff <= 5 {
					t.Errorf("sli_minute %q: %d events, one process %d", k, gotSLI[k], v)
				}
			}
		}
		t.Errorf("sli_minute differs from one process's on %d of %d (minute, service, kind, outcome) rows (it has %d rows)", diff, len(wantSLI), len(gotSLI))
	}
	if got := findings(); !slices.Equal(got, f.want) {
		t.Errorf("findings of the fleet differ from analyze's:\n fleet:   %v\n analyze: %v", got, f.want)
		logs()
	}
	if got := revs(); !slices.Equal(got, f.wantRevs) {
		t.Errorf("revocation rows of the fleet differ from analyze's (%d rows, analyze %d):\n fleet:   %v\n analyze: %v", len(got), len(f.wantRevs), got, f.wantRevs)
		logs()
	}
	for i, m := range f.members {
		if !strings.Contains(m.logs.String(), "role=analyze") || !strings.Contains(m.logs.String(), "role=ingest") {
			t.Errorf("member %d did not run both stages:\n%s", i, m.logs.String())
		}
	}
}

// analyzed says whether the group has committed the end of every partition.
func analyzed(t *testing.T, c *kafka.Client, topic, group string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	parts := []int{0, 1, 2, 3, 4, 5}
	ends, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {
		kafka.LastOffsetOf(0), kafka.LastOffsetOf(1), kafka.LastOffsetOf(2), kafka.LastOffsetOf(3), kafka.LastOffsetOf(4), kafka.LastOffsetOf(5)}}})
	if err != nil {
		return false
	}
	committed, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return false
	}
	end := map[int]int64{}
	for _, p := range ends.Topics[topic] {
		end[p.Partition] = p.LastOffset
	}
	for _, p := range committed.Topics[topic] {
		if p.CommittedOffset < end[p.Partition] {
			return false
		}
	}
	return len(committed.Topics[topic]) == len(parts)
}

// analyzeIncidents runs analyze (the package, as the command does) on the
// events and returns "kind key" of each finding not folded into another,
// and its revocation rows as the revocations table would hold them, sorted.
func analyzeIncidents(t *testing.T, events []event.Event, key string, nat []string) ([]string, []string) {
	t.Helper()
	var ndjson bytes.Buffer
	for i := range events {
		ndjson.Write(ingest.AppendJSON(nil, &events[i]))
		ndjson.WriteByte('\n')
	}
	c := config.Default()
	c.Detect.NATEgressRanges = nat
	guard, _ := redact.New(redact.Config{Key: []byte(key)})
	det, err := newReportDetector(c.Detect)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := analyze.Run(context.Background(), analyze.Options{Input: &ndjson, Redact: guard, Detector: det,
		Revocation: sli.TrackerConfig{Horizon: c.Pipeline.RevocationHorizon}})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range rep.Findings {
		if f.Evidence["superseded_by"] == nil {
			out = append(out, string(f.Kind)+" "+f.Key)
		}
	}
	var revs []string
	for _, r := range rep.SLIs.Revocations {
		for _, row := range pipeline.RevocationRows(r) {
			revs = append(revs, fmt.Sprintf("%s\t%s\t%s\t%v\t%d", row.RevokedAt.UTC().Format("2006-01-02 15:04:05.000"), row.TargetID, row.Service, row.Propagated, row.ResidualAcceptances))
		}
	}
	slices.Sort(revs)
	return out, revs
}

// sortedIncidents sorts "kind key" lines. Every kind is compared: the
// per-service, per-kid, per-client and per-subject detectors are judged on
// the merged aggregates (Fleet 2/4), so a fleet finds what one process does.
func sortedIncidents(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
}
