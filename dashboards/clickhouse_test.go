package dashboards

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/store"
)

// The traffic the ClickHouse tests store: two hours of sessions that log in
// at the IdP, call the gateway and two services, refresh, get revoked, and a
// signing-key rotation that breaks validators for a while.
var (
	trafficStart = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	trafficEnd   = trafficStart.Add(2 * time.Hour)
)

// traffic is what the fixture stored, and the ids a responder would paste
// into the debug board.
type traffic struct {
	events      []event.Event
	revocations []store.Revocation
	findings    []finding.Finding
	// revokedSession and oneRequest have events, a revocation and (for the
	// session) a finding, so every panel of the debug board has rows.
	revokedSession string
	oneRequest     string
}

// makeTraffic builds about five thousand events, deterministically.
func makeTraffic() traffic {
	rng := rand.New(rand.NewPCG(7, 11))
	issuers := []string{"https://idp.example", "https://partner-idp.example"}
	regions := []string{"eu-west-1", "us-east-1"}
	clients := []string{"web", "ios", "android", "batch-exporter"}
	validators := []struct {
		name string
		ttl  int32
	}{{"api-gw", 30}, {"orders", 45}, {"payments", 120}}

	var tr traffic
	var offset int64
	add := func(e event.Event) {
		e.Src = event.Source{Topic: "auth", Partition: int32(offset % 3), Offset: offset}
		offset++
		tr.events = append(tr.events, e)
	}
	latency := func(median float64) float64 { return median * (0.5 + rng.ExpFloat64()) }

	// A key rotation at 10:40 that the payments service misses for ten
	// minutes: its validations fail with unknown_kid until it refetches keys.
	rotation := trafficStart.Add(40 * time.Minute)
	add(event.Event{TS: rotation, Kind: event.KindKeyRotate, Outcome: event.OK, Service: "idp",
		Issuer: issuers[0], Region: regions[0], Kid: "k2", PrevKid: "k1"})

	for s := 0; s < 320; s++ {
		start := trafficStart.Add(time.Duration(rng.Int64N(int64(100 * time.Minute))))
		session := fmt.Sprintf("ses-%04x", s)
		family := fmt.Sprintf("fam-%04x", s)
		issuer, region := issuers[s%len(issuers)], regions[(s/2)%len(regions)]
		client := clients[rng.IntN(len(clients))]
		device := fmt.Sprintf("dev-%04x", s)
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(s)})
		size := int32(700 + rng.IntN(1800))
		lifetime := []time.Duration{5 * time.Minute, 15 * time.Minute, time.Hour}[s%3]
		tokenType := []string{"access", "access", "id"}[s%3]
		kid := "k1"
		if start.After(rotation) {
			kid = "k2"
		}
		token := fmt.Sprintf("tok-%04x-0", s)
		add(event.Event{TS: start, Kind: event.KindIssue, Outcome: event.OK, Service: "idp", Issuer: issuer, Region: region,
			TokenID: token, SessionID: session, Subject: fmt.Sprintf("sub-%03x", s%97), ClientID: client, TokenType: tokenType,
			FamilyID: family, Kid: kid, IAT: start, EXP: start.Add(lifetime), TokenBytes: size,
			LatencyMS: latency(8), HasLatency: true, IP: ip, Device: device, HTTPStatus: 200, Audience: "api"})

		revoked := s%23 == 5
		var revokedAt time.Time
		if revoked {
			revokedAt = start.Add(4 * time.Minute)
		}
		requests := 3 + rng.IntN(10)
		for r := 0; r < requests; r++ {
			at := start.Add(time.Duration(r+1) * time.Duration(10+rng.IntN(50)) * time.Second)
			if !at.Before(trafficEnd) {
				break
			}
			request := fmt.Sprintf("req-%04x-%02d", s, r)
			if tr.oneRequest == "" && revoked && r == 1 {
				tr.oneRequest = request
				tr.revokedSession = session
			}
			for hop, v := range validators[:1+rng.IntN(len(validators))] {
				outcome, status := event.OK, int32(200)
				switch {
				case revoked && at.After(revokedAt.Add(time.Duration(v.ttl)*time.Second)):
					outcome, status = event.Revoked, 401
				case v.name == "payments" && kid == "k2" && at.Before(rotation.Add(10*time.Minute)):
					outcome, status = event.UnknownKid, 401
				case at.After(start.Add(lifetime)):
					outcome, status = event.Expired, 401
				case rng.IntN(400) == 0:
					outcome, status = event.Error, 500
				case rng.IntN(300) == 0:
					outcome, status = event.BadSignature, 401
				}
				kind := event.KindValidate
				if v.name == "payments" && hop > 0 && rng.IntN(3) == 0 {
					kind = event.KindIntrospect
					if rng.IntN(20) == 0 {
						outcome, status = event.Error, 503
					}
				}
				add(event.Event{TS: at.Add(time.Duration(hop) * 3 * time.Millisecond), Kind: kind, Outcome: outcome,
					Service: v.name, Issuer: issuer, Region: region, TokenID: token, SessionID: session, ClientID: client,
					TokenType: tokenType, Kid: kid, IAT: start, EXP: start.Add(lifetime), TokenBytes: size,
					LatencyMS: latency(4), HasLatency: true, IP: ip, Device: device, HTTPStatus: status,
					Audience: "api", ExpectedAudience: "api", Binding: "none", CacheTTLS: v.ttl,
					RequestID: request, TraceID: fmt.Sprintf("trace-%04x-%02d", s, r)})
			}
		}

		// Refreshes: most succeed; the batch exporter's tokens are sometimes
		// reused (a second exchange of the same parent).
		parent := token
		for f := 1; f <= 1+rng.IntN(3); f++ {
			at := start.Add(time.Duration(f) * lifetime * 9 / 10)
			if !at.Before(trafficEnd) {
				break
			}
			outcome := event.OK
			if client == "batch-exporter" && rng.IntN(3) == 0 {
				outcome = event.Reused
			} else if rng.IntN(25) == 0 {
				outcome = event.Expired
			}
			child := fmt.Sprintf("tok-%04x-%d", s, f)
			add(event.Event{TS: at, Kind: event.KindRefresh, Outcome: outcome, Service: "idp", Issuer: issuer, Region: region,
				TokenID: child, ParentTokenID: parent, SessionID: session, ClientID: client, TokenType: "refresh", FamilyID: family,
				IAT: at, EXP: at.Add(24 * time.Hour), TokenBytes: size / 2, LatencyMS: latency(12), HasLatency: true,
				IP: ip, Device: device, HTTPStatus: 200})
			parent = child
		}

		if revoked {
			add(event.Event{TS: revokedAt, Kind: event.KindRevoke, Outcome: event.OK, Service: "idp", Issuer: issuer,
				Region: region, SessionID: session, Target: "session", Reason: "user_logout"})
			propagation := 0.0
			var rows []store.Revocation
			for _, v := range validators {
				lag := float64(v.ttl) * (0.3 + rng.Float64())
				propagation = max(propagation, lag)
				rows = append(rows, store.Revocation{RevokedAt: revokedAt, RevokeService: "idp", Target: "session",
					TargetID: session, SessionID: session, Service: v.name, ResidualAcceptances: uint32(rng.IntN(4)),
					LagS: lag, FirstRejectionS: lag + 1, Propagated: true})
			}
			for i := range rows {
				rows[i].PropagationS, rows[i].RevokePropagated = propagation, true
			}
			tr.revocations = append(tr.revocations, rows...)
		}
	}

	// Audience misuse: "reports" accepts tokens issued for the admin API
	// for ten minutes, and one token is tried at three services.
	misuse := trafficStart.Add(50 * time.Minute)
	for i := range 10 {
		add(event.Event{TS: misuse.Add(time.Duration(i) * time.Minute), Kind: event.KindValidate, Outcome: event.OK, Service: "reports",
			Issuer: issuers[0], Region: regions[0], TokenID: fmt.Sprintf("tok-aud-%d", i), ClientID: clients[0],
			Audience: "admin", ExpectedAudience: "api", HTTPStatus: 200})
	}
	for i, svc := range []string{"payments", "orders", "admin"} {
		add(event.Event{TS: misuse.Add(time.Duration(i) * 40 * time.Second), Kind: event.KindValidate, Outcome: event.BadAudience, Service: svc,
			Issuer: issuers[0], Region: regions[0], TokenID: "tok-probe", Audience: "api", ExpectedAudience: svc, HTTPStatus: 401})
	}

	seen := func(kind finding.Kind, key, service, session string, at time.Time, sev finding.Severity, status finding.Status, action string) {
		tr.findings = append(tr.findings, finding.Finding{ID: finding.MakeID(kind, key), Kind: kind, Severity: sev, Status: status,
			Key: key, Service: service, SessionID: session, FirstSeen: at, LastSeen: at.Add(3 * time.Minute), DetectedAt: at.Add(time.Second),
			Count: 3, Evidence: map[string]any{"note": "fixture"}, Action: action})
	}
	seen(finding.KeyRotationBreak, "payments/k2", "payments", "", rotation.Add(time.Minute), finding.Page, finding.Closed, "push the new key k2 to payments")
	seen(finding.RefreshReuse, "fam-0003", "idp", "ses-0003", trafficStart.Add(30*time.Minute), finding.Page, finding.Open, "revoke family fam-0003")
	seen(finding.Replay, "tok-0042-0", "api-gw", "ses-0042", trafficStart.Add(70*time.Minute), finding.Ticket, finding.Open, "revoke session ses-0042")
	seen(finding.AudienceMisuse, "reports", "reports", "", misuse, finding.Page, finding.Open, "make reports check the audience")
	seen(finding.SlowRevocation, tr.revokedSession, "idp", tr.revokedSession, trafficStart.Add(80*time.Minute), finding.Ticket, finding.Open, "check payments' revocation cache")
	return tr
}

// storeTraffic migrates a fresh database on the embedded engine and stores
// the traffic the way the pipeline does.
func storeTraffic(t *testing.T, tr traffic) *store.Store {
	t.Helper()
	addr, db := testkit.ClickHouse(t)
	c := config.Default().ClickHouse
	c.Addr, c.Database = []string{addr}, db
	ctx := context.Background()
	s, err := store.Open(ctx, c)
	if err != nil {
		t.Fatalf("opening the store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	b := store.NewBatch(len(tr.events))
	for i := range tr.events {
		b.Add(&tr.events[i])
	}
	if err := s.InsertEvents(ctx, b); err != nil {
		t.Fatalf("storing %d events: %v", len(tr.events), err)
	}
	if err := s.InsertRevocations(ctx, tr.revocations); err != nil {
		t.Fatalf("storing revocations: %v", err)
	}
	if err := s.InsertFindings(ctx, tr.findings); err != nil {
		t.Fatalf("storing findings: %v", err)
	}
	return s
}

// rowsOf runs sql and counts the rows it returns.
func rowsOf(ctx context.Context, s *store.Store, sql string) (int, error) {
	rows, err := s.Conn().Query(ctx, sql)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	return n, rows.Err()
}

func TestEveryClickHouseQueryReturnsRowsOnRealisticTraffic(t *testing.T) {
	tr := makeTraffic()
	if tr.revokedSession == "" || len(tr.events) < 3000 {
		t.Fatalf("the fixture made %d events and revoked session %q; want thousands and one", len(tr.events), tr.revokedSession)
	}
	s := storeTraffic(t, tr)
	boards := generate(t, Options{Database: s.Database()})

	all := map[string]string{"service": AllValue, "issuer": AllValue, "region": AllValue,
		"request_id": tr.oneRequest, "session_id": tr.revokedSession}
	ctx := context.Background()
	ran := 0
	for _, b := range boards {
		for _, q := range b.Queries() {
			if q.Datasource != ClickHousePluginID {
				continue
			}
			ran++
			t.Run(b.UID+"/"+q.Panel+"/"+q.RefID, func(t *testing.T) {
				sql := q.ExpandSQL(trafficStart, trafficEnd, all)
				n, err := rowsOf(ctx, s, sql)
				if err != nil {
					t.Fatalf("query fails on ClickHouse: %v\n%s", err, sql)
				}
				if n == 0 {
					t.Fatalf("query returns no rows on two hours of traffic (a panel that shows nothing):\n%s", sql)
				}
			})
		}
	}
	if ran < 20 {
		t.Fatalf("ran %d ClickHouse queries; the boards should have more", ran)
	}
}

func TestClickHouseQueriesRunWithAConcreteSelection(t *testing.T) {
	tr := makeTraffic()
	s := storeTraffic(t, tr)
	boards := generate(t, Options{Database: s.Database()})

	// Several services, one issuer with a quote in it (escaping), one
	// region, and empty id boxes: every query must still be valid SQL.
	vars := map[string]string{"service": "api-gw,payments", "issuer": "https://idp.example,it's-odd", "region": "eu-west-1",
		"request_id": "", "session_id": ""}
	ctx := context.Background()
	for _, b := range boards {
		for _, q := range b.Queries() {
			if q.Datasource != ClickHousePluginID {
				continue
			}
			sql := q.ExpandSQL(trafficStart, trafficEnd, vars)
			if strings.Contains(sql, "$") {
				t.Errorf("%s / %s: unexpanded variable or macro left:\n%s", b.UID, q.Panel, sql)
				continue
			}
			if _, err := rowsOf(ctx, s, sql); err != nil {
				t.Errorf("%s / %s: query fails with a concrete selection: %v\n%s", b.UID, q.Panel, err, sql)
			}
		}
	}
}
