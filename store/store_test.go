package store_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	addr, db := testkit.ClickHouse(t)
	c := config.Default().ClickHouse
	c.Addr = []string{addr}
	c.Database = db
	s, err := store.Open(context.Background(), c)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return s
}

func sampleEvents(topic string, partition int32, from, n int, base time.Time) []event.Event {
	out := make([]event.Event, n)
	for i := range out {
		off := int64(from + i)
		out[i] = event.Event{
			TS: base.Add(time.Duration(off) * 100 * time.Millisecond), Kind: event.KindValidate, Outcome: event.OK,
			Service: "api-gw", Issuer: "https://idp.example", Region: "eu-west-1",
			TokenID: fmt.Sprintf("tok-%08x", off), SessionID: fmt.Sprintf("ses-%04x", off%50),
			LatencyMS: 3.5, HasLatency: true, TokenBytes: 900, IP: netip.MustParseAddr("198.51.100.7"),
			HTTPStatus: 200, Extra: map[string]string{"tenant": `"acme"`},
			Src: event.Source{Topic: topic, Partition: partition, Offset: off},
		}
	}
	return out
}

func count(t *testing.T, s *store.Store, q string) uint64 {
	t.Helper()
	var n uint64
	if err := s.Conn().QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestMigrateTwiceIsANoOp(t *testing.T) {
	s := openStore(t)
	applied, err := s.Migrate(context.Background())
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if len(applied) != 0 {
		t.Fatalf("second migrate applied %v, want nothing", applied)
	}
	if n := count(t, s, "SELECT count() FROM "+s.Database()+".schema_migrations FINAL"); n != uint64(store.SchemaVersion()) {
		t.Fatalf("schema_migrations has %d versions, want %d", n, store.SchemaVersion())
	}
}

func TestARetriedBatchIsStoredOnce(t *testing.T) {
	s := openStore(t)
	base := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	b := store.NewBatch(100)
	for _, e := range sampleEvents("auth", 3, 0, 100, base) {
		b.Add(&e)
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ { // the first try landed, the client did not hear back, it retried twice
		if err := s.InsertEvents(ctx, b); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	if n := count(t, s, "SELECT count() FROM "+s.Database()+".events"); n != 100 {
		t.Fatalf("stored %d rows after 3 sends of one batch, want 100", n)
	}
	// The materialized view counts the batch once too.
	if n := count(t, s, "SELECT sum(events) FROM "+s.Database()+".sli_minute"); n != 100 {
		t.Fatalf("sli_minute counted %d events, want 100", n)
	}
	// A different batch (other offsets) is not mistaken for a duplicate.
	b2 := store.NewBatch(10)
	for _, e := range sampleEvents("auth", 3, 100, 10, base) {
		b2.Add(&e)
	}
	if err := s.InsertEvents(ctx, b2); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "SELECT count() FROM "+s.Database()+".events"); n != 110 {
		t.Fatalf("stored %d rows, want 110", n)
	}
}

func TestStoredOffsetsNameTheHighestOffsetPerPartition(t *testing.T) {
	s := openStore(t)
	base := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	b := store.NewBatch(100)
	for _, e := range sampleEvents("auth", 0, 0, 40, base) {
		b.Add(&e)
	}
	for _, e := range sampleEvents("auth", 5, 1000, 7, base) {
		b.Add(&e)
	}
	if err := s.InsertEvents(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	got, err := s.StoredOffsets(context.Background(), []string{"auth", "other"})
	if err != nil {
		t.Fatal(err)
	}
	if got["auth"][0] != 39 || got["auth"][5] != 1006 || len(got["other"]) != 0 {
		t.Fatalf("stored offsets = %v, want auth/0=39, auth/5=1006", got)
	}
}

func TestEventsRoundTripEveryColumn(t *testing.T) {
	s := openStore(t)
	ts := time.Date(2026, 11, 29, 12, 0, 0, 123_000_000, time.UTC)
	e := event.Event{TS: ts, Kind: event.KindRefresh, Outcome: event.Reused, Service: "idp", Issuer: "iss", Region: "us-east-1",
		TokenID: "t1", SessionID: "s1", Subject: "u1", ClientID: "c1", TokenType: "refresh", FamilyID: "f1", ParentTokenID: "p1",
		Audience: "api", ExpectedAudience: "api", Kid: "k2", PrevKid: "k1", IAT: ts.Add(-time.Minute), EXP: ts.Add(time.Hour),
		LatencyMS: 12.5, HasLatency: true, TokenBytes: 1234, IP: netip.MustParseAddr("2001:db8::1"), ASN: 64500, Country: "DE",
		Device: "d1", Binding: "dpop", BindingOK: event.False, HTTPStatus: 401, Target: "", Reason: "r", CacheTTLS: 30,
		RequestID: "req", TraceID: "trace", Extra: map[string]string{"x": "1"}, Redacted: []string{"reason"},
		Src: event.Source{Topic: "auth", Partition: 1, Offset: 9}}
	b := store.NewBatch(1)
	b.Add(&e)
	if err := s.InsertEvents(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	var (
		gotTS, iat, exp                           time.Time
		kind, outcome, fam, kid, dev, ip, binding string
		lat                                       float32
		bytes, asn                                uint32
		bok                                       int8
		status                                    uint16
		extra                                     map[string]string
		red                                       []string
	)
	err := s.Conn().QueryRow(context.Background(), "SELECT ts, iat, exp, kind, outcome, family_id, kid, device, toString(ip), binding, latency_ms, token_bytes, asn, binding_ok, http_status, extra, redacted FROM "+s.Database()+".events").
		Scan(&gotTS, &iat, &exp, &kind, &outcome, &fam, &kid, &dev, &ip, &binding, &lat, &bytes, &asn, &bok, &status, &extra, &red)
	if err != nil {
		t.Fatal(err)
	}
	if !gotTS.Equal(ts) || !iat.Equal(e.IAT) || !exp.Equal(e.EXP) || kind != "refresh" || outcome != "reused" || fam != "f1" || kid != "k2" ||
		dev != "d1" || ip != "2001:db8::1" || binding != "dpop" || lat != 12.5 || bytes != 1234 || asn != 64500 || bok != -1 || status != 401 ||
		extra["x"] != "1" || len(red) != 1 || red[0] != "reason" {
		t.Fatalf("round trip lost something: ts=%v iat=%v exp=%v kind=%s outcome=%s fam=%s kid=%s dev=%s ip=%s binding=%s lat=%v bytes=%d asn=%d bok=%d status=%d extra=%v red=%v",
			gotTS, iat, exp, kind, outcome, fam, kid, dev, ip, binding, lat, bytes, asn, bok, status, extra, red)
	}
}

func TestFindingsKeepTheNewestVersion(t *testing.T) {
	s := openStore(t)
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	f := finding.Finding{ID: finding.MakeID(finding.Replay, "tok"), Kind: finding.Replay, Severity: finding.Page, Status: finding.Open,
		Key: "tok", Service: "api", FirstSeen: now, LastSeen: now, DetectedAt: now, Count: 1,
		Evidence: map[string]any{"uses": []any{map[string]any{"country": "DE"}}}, Action: "revoke the session"}
	ctx := context.Background()
	if err := s.InsertFindings(ctx, []finding.Finding{f}); err != nil {
		t.Fatal(err)
	}
	f.Count, f.LastSeen, f.Status = 5, now.Add(time.Minute), finding.Closed
	if err := s.InsertFindings(ctx, []finding.Finding{f}); err != nil {
		t.Fatal(err)
	}
	var n uint64
	var status string
	if err := s.Conn().QueryRow(ctx, "SELECT count, status FROM "+s.Database()+".findings FINAL").Scan(&n, &status); err != nil {
		t.Fatal(err)
	}
	if n != 5 || status != "closed" {
		t.Fatalf("FINAL row: count=%d status=%s, want 5 closed", n, status)
	}
}

func TestReplayGivesBackTheStoredEventsOfThePartitionsInTimeOrder(t *testing.T) {
	s := openStore(t)
	base := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	b := store.NewBatch(100)
	evs := append(sampleEvents("auth", 1, 0, 30, base), sampleEvents("auth", 2, 0, 30, base.Add(time.Second))...)
	evs[3].HasLatency, evs[3].LatencyMS = false, 0
	evs[4].IAT = base.Add(-time.Minute)
	for i := range evs {
		b.Add(&evs[i])
	}
	if err := s.InsertEvents(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	var got []event.Event
	n, err := s.ReplayEvents(context.Background(), "auth", []int32{1}, base.Add(500*time.Millisecond), func(e *event.Event) { got = append(got, *e) })
	if err != nil {
		t.Fatal(err)
	}
	// Partition 1 only, and only ts >= base+500ms: offsets 5..29.
	if n != 25 || len(got) != 25 {
		t.Fatalf("replayed %d events, want 25", n)
	}
	for i := 1; i < len(got); i++ {
		if got[i].TS.Before(got[i-1].TS) {
			t.Fatalf("replay is not in ts order at %d", i)
		}
	}
	want := evs[5]
	g := got[0]
	if g.TokenID != want.TokenID || g.SessionID != want.SessionID || g.Kind != want.Kind || g.Outcome != want.Outcome ||
		g.IP != want.IP || !g.TS.Equal(want.TS) || !g.HasLatency || g.LatencyMS != want.LatencyMS || g.Src.Offset != 5 || !g.IAT.IsZero() {
		t.Fatalf("replayed %+v, want %+v", g, want)
	}
}

func TestALateEventLandsInItsOwnMinute(t *testing.T) {
	s := openStore(t)
	base := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	// First the 12:05 minute arrives, then, in a later batch, an event from 12:01.
	now := sampleEvents("auth", 0, 0, 3, base.Add(5*time.Minute))
	late := sampleEvents("auth", 0, 3, 1, base.Add(time.Minute))
	late[0].TS = base.Add(time.Minute + 30*time.Second)
	for _, evs := range [][]event.Event{now, late} {
		b := store.NewBatch(len(evs))
		for i := range evs {
			b.Add(&evs[i])
		}
		if err := s.InsertEvents(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := s.Conn().Query(ctx, "SELECT minute, sum(events) FROM "+s.Database()+".sli_minute GROUP BY minute ORDER BY minute")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[time.Time]uint64{}
	for rows.Next() {
		var m time.Time
		var n uint64
		if err := rows.Scan(&m, &n); err != nil {
			t.Fatal(err)
		}
		got[m.UTC()] = n
	}
	if got[base.Add(time.Minute)] != 1 || got[base.Add(5*time.Minute)] != 3 || len(got) != 2 {
		t.Fatalf("per-minute counts %v; want the late event in 12:01 and three in 12:05", got)
	}
}

func TestPerMinuteViewsOfRevocationsAndFindings(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	at := time.Date(2026, 11, 29, 12, 3, 20, 0, time.UTC)
	rows := []store.Revocation{
		{RevokedAt: at, RevokeService: "idp", Target: "session", TargetID: "s1", SessionID: "s1", Service: "api", ResidualAcceptances: 2, LagS: 4, Propagated: true, PropagationS: 9, RevokePropagated: true},
		{RevokedAt: at, RevokeService: "idp", Target: "session", TargetID: "s1", SessionID: "s1", Service: "orders", LagS: 9, Propagated: true, PropagationS: 9, RevokePropagated: true},
		{RevokedAt: at.Add(10 * time.Second), RevokeService: "idp", Target: "token", TargetID: "t9", TokenID: "t9", Service: "api", ResidualAcceptances: 5, LagS: 300, PropagationS: 300},
	}
	if err := s.InsertRevocations(ctx, rows); err != nil {
		t.Fatal(err)
	}
	var revokes, propagated, notPropagated uint64
	if err := s.Conn().QueryRow(ctx, "SELECT revokes, propagated, not_propagated FROM "+s.Database()+".revocations_minute WHERE service = 'idp'").
		Scan(&revokes, &propagated, &notPropagated); err != nil {
		t.Fatal(err)
	}
	if revokes != 2 || propagated != 1 || notPropagated != 1 {
		t.Fatalf("revocations_minute: %d revokes, %d propagated, %d not; want 2 revokes (one row per service each), 1 and 1", revokes, propagated, notPropagated)
	}
	f := finding.Finding{ID: "r1", Kind: finding.RefreshAnomaly, Severity: finding.Ticket, Status: finding.Open, Key: "fam", Service: "idp",
		FirstSeen: at, LastSeen: at, DetectedAt: at, Count: 1}
	g := f
	g.ID, g.Kind = "p1", finding.Replay
	if err := s.InsertFindings(ctx, []finding.Finding{f, f, g}); err != nil { // f twice: an update
		t.Fatal(err)
	}
	var n uint64
	if err := s.Conn().QueryRow(ctx, "SELECT sum(findings) FROM "+s.Database()+".findings_minute WHERE kind = 'refresh_anomaly' AND minute = toDateTime('2026-11-29 12:03:00', 'UTC')").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("findings_minute counts %d refresh anomalies, want 1 (an update is not a new finding)", n)
	}
}

func TestAReplayBoundedByEventsStartsAtTheLatestOfThem(t *testing.T) {
	s := openStore(t)
	base := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	b := store.NewBatch(100)
	evs := sampleEvents("auth", 1, 0, 30, base) // 100 ms apart
	for i := range evs {
		b.Add(&evs[i])
	}
	if err := s.InsertEvents(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	from, total, err := s.ReplayStart(ctx, "auth", []int32{1}, base, 12)
	if err != nil {
		t.Fatal(err)
	}
	if total != 30 || !from.Equal(evs[18].TS) {
		t.Fatalf("ReplayStart = %v, %d; want the 12th latest event's ts %v and 30 in the window", from, total, evs[18].TS)
	}
	n, err := s.ReplayEvents(ctx, "auth", []int32{1}, from, func(*event.Event) {})
	if err != nil || n != 12 {
		t.Fatalf("replayed %d (err %v), want the latest 12", n, err)
	}
	if from, total, err := s.ReplayStart(ctx, "auth", []int32{1}, base, 100); err != nil || total != 30 || !from.Equal(base) {
		t.Fatalf("a window under the bound: ReplayStart = %v, %d, %v; want the window's start and 30", from, total, err)
	}
}
