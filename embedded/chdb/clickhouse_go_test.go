package chdb_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/tokenwatch/tokenwatch/internal/testkit"
)

// connect opens clickhouse-go/v2 over HTTP against the embedded engine's
// server, unmodified, as the store does against a real ClickHouse.
func connect(t *testing.T, compression clickhouse.CompressionMethod) (driver.Conn, string) {
	t.Helper()
	addr, database := testkit.ClickHouse(t)
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Protocol:    clickhouse.HTTP,
		Auth:        clickhouse.Auth{Database: database},
		Compression: &clickhouse.Compression{Method: compression},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("opening clickhouse-go over HTTP: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, database
}

func exec(t *testing.T, conn driver.Conn, sql string) {
	t.Helper()
	if err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestClickHouseGoPingsAndSeesTheEngineVersion(t *testing.T) {
	conn, _ := connect(t, clickhouse.CompressionNone)
	if err := conn.Ping(t.Context()); err != nil {
		t.Fatalf("ping: %v", err)
	}
	v, err := conn.ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if v.Version.Major != 26 || v.Version.Minor != 7 {
		t.Errorf("server version = %s, want the engine's 26.7", v.Version)
	}
	if v.Timezone == nil {
		t.Error("server time zone missing from the hello")
	}
}

// eventRow covers the column types the store's tables use.
type eventRow struct {
	id       uint64
	service  string
	attrs    map[string]string
	ts       time.Time
	ip       net.IP
	latency  *float32
	scopes   []string
	session  uuid.UUID
	ok       bool
	outcome  string
	skew     int32
	sizeFrac float64
}

func makeEventRow(i int) eventRow {
	r := eventRow{
		id:       uint64(i),
		service:  fmt.Sprintf("svc-%d", i%7),
		attrs:    map[string]string{"region": fmt.Sprintf("r%d", i%3), "n": fmt.Sprint(i)},
		ts:       time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
		ip:       net.ParseIP(fmt.Sprintf("2001:db8::%x", i%65536)),
		scopes:   []string{"read", fmt.Sprintf("s%d", i%5)},
		session:  uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint(i))),
		ok:       i%2 == 0,
		outcome:  []string{"ok", "expired", "revoked"}[i%3],
		skew:     int32(i%200 - 100),
		sizeFrac: float64(i) / 3,
	}
	if i%10 != 0 {
		l := float32(i%1000) / 1000
		r.latency = &l
	}
	return r
}

const eventsDDL = `CREATE TABLE events (
	id UInt64,
	service LowCardinality(String),
	attrs Map(String, String),
	ts DateTime64(3, 'UTC'),
	ip IPv6,
	latency Nullable(Float32),
	scopes Array(String),
	session UUID,
	ok Bool,
	outcome Enum8('ok' = 1, 'expired' = 2, 'revoked' = 3),
	skew Int32,
	size_frac Float64,
	day Date MATERIALIZED toDate(ts)
) ENGINE = MergeTree ORDER BY (service, ts)`

// insertEvents sends rows from..from+n in one batch and reports how long the
// client spent appending and how long the server took to store the batch.
func insertEvents(t *testing.T, ctx context.Context, conn driver.Conn, from, n int) (appending, sending time.Duration) {
	t.Helper()
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO events")
	if err != nil {
		t.Fatalf("prepare batch: %v", err)
	}
	start := time.Now()
	for i := from; i < from+n; i++ {
		r := makeEventRow(i)
		if err := batch.Append(r.id, r.service, r.attrs, r.ts, r.ip, r.latency, r.scopes, r.session, r.ok, r.outcome, r.skew, r.sizeFrac); err != nil {
			t.Fatalf("append row %d: %v", i, err)
		}
	}
	appending = time.Since(start)
	start = time.Now()
	if err := batch.Send(); err != nil {
		t.Fatalf("send batch of %d rows: %v", n, err)
	}
	return appending, time.Since(start)
}

func TestClickHouseGoBatchOf100kRowsReadsBackEveryTypeIntact(t *testing.T) {
	conn, _ := connect(t, clickhouse.CompressionNone)
	exec(t, conn, eventsDDL)

	const rows = 100_000
	appending, sending := insertEvents(t, t.Context(), conn, 0, rows)
	t.Logf("batch of %d rows, 12 columns: Append %s (client), Send %s (%.0f rows/s stored by the engine over HTTP)",
		rows, appending.Round(time.Millisecond), sending.Round(time.Millisecond), rows/sending.Seconds())

	var count uint64
	if err := conn.QueryRow(t.Context(), "SELECT count() FROM events").Scan(&count); err != nil {
		t.Fatalf("count: %v", err)
	}
	if count != rows {
		t.Fatalf("count() = %d, want %d", count, rows)
	}

	got, err := conn.Query(t.Context(), `SELECT id, service, attrs, ts, ip, latency, scopes, session, ok, outcome, skew, size_frac, day
		FROM events WHERE id IN (0, 1, 77777, 99999) ORDER BY id`)
	if err != nil {
		t.Fatalf("query back: %v", err)
	}
	defer got.Close()
	var seen int
	for got.Next() {
		var r eventRow
		var day time.Time
		var outcome string
		if err := got.Scan(&r.id, &r.service, &r.attrs, &r.ts, &r.ip, &r.latency, &r.scopes, &r.session, &r.ok, &outcome, &r.skew, &r.sizeFrac, &day); err != nil {
			t.Fatalf("scan: %v", err)
		}
		r.outcome = outcome
		want := makeEventRow(int(r.id))
		assertSameRow(t, r, want)
		if wantDay := want.ts.Truncate(24 * time.Hour); !day.Equal(wantDay) {
			t.Errorf("row %d: materialized day = %s, want %s", r.id, day, wantDay)
		}
		seen++
	}
	if err := got.Err(); err != nil {
		t.Fatalf("rows: %v", err)
	}
	if seen != 4 {
		t.Fatalf("read back %d rows, want 4", seen)
	}
}

func assertSameRow(t *testing.T, got, want eventRow) {
	t.Helper()
	id := want.id
	if got.service != want.service || got.outcome != want.outcome || got.ok != want.ok || got.skew != want.skew || got.sizeFrac != want.sizeFrac {
		t.Errorf("row %d: scalars = %+v, want %+v", id, got, want)
	}
	if fmt.Sprint(got.attrs) != fmt.Sprint(want.attrs) || fmt.Sprint(got.scopes) != fmt.Sprint(want.scopes) {
		t.Errorf("row %d: attrs/scopes = %v %v, want %v %v", id, got.attrs, got.scopes, want.attrs, want.scopes)
	}
	if !got.ts.Equal(want.ts) {
		t.Errorf("row %d: ts = %s, want %s", id, got.ts, want.ts)
	}
	if !got.ip.Equal(want.ip) {
		t.Errorf("row %d: ip = %s, want %s", id, got.ip, want.ip)
	}
	if got.session != want.session {
		t.Errorf("row %d: session = %s, want %s", id, got.session, want.session)
	}
	switch {
	case (got.latency == nil) != (want.latency == nil):
		t.Errorf("row %d: latency null = %v, want %v", id, got.latency == nil, want.latency == nil)
	case got.latency != nil && *got.latency != *want.latency:
		t.Errorf("row %d: latency = %v, want %v", id, *got.latency, *want.latency)
	}
}

func TestClickHouseGoBatchWithColumnListFillsTheRestWithDefaults(t *testing.T) {
	conn, _ := connect(t, clickhouse.CompressionNone)
	exec(t, conn, `CREATE TABLE findings (id String, kind LowCardinality(String), severity UInt8 DEFAULT 3, note String DEFAULT 'none')
		ENGINE = MergeTree ORDER BY id`)
	// The column list is in another order than the table's, and leaves two out.
	batch, err := conn.PrepareBatch(t.Context(), "INSERT INTO findings (kind, id)")
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if err := batch.Append("replay", "f1"); err != nil {
		t.Fatalf("append: %v", err)
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("send: %v", err)
	}
	var id, kind, note string
	var severity uint8
	if err := conn.QueryRow(t.Context(), "SELECT id, kind, severity, note FROM findings").Scan(&id, &kind, &severity, &note); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if id != "f1" || kind != "replay" || severity != 3 || note != "none" {
		t.Errorf("row = (%q, %q, %d, %q), want (f1, replay, 3, none)", id, kind, severity, note)
	}
}

func TestClickHouseGoMaterializedViewFillsAggregatingMergeTree(t *testing.T) {
	conn, _ := connect(t, clickhouse.CompressionNone)
	exec(t, conn, eventsDDL)
	exec(t, conn, `CREATE TABLE per_service (service LowCardinality(String), n AggregateFunction(count),
		p50 AggregateFunction(quantile(0.5), Float32)) ENGINE = AggregatingMergeTree ORDER BY service`)
	exec(t, conn, `CREATE MATERIALIZED VIEW per_service_mv TO per_service AS
		SELECT service, countState() AS n, quantileState(0.5)(assumeNotNull(latency)) AS p50 FROM events GROUP BY service`)

	insertEvents(t, t.Context(), conn, 0, 700)
	insertEvents(t, t.Context(), conn, 700, 700)

	rows, err := conn.Query(t.Context(), "SELECT service, countMerge(n) FROM per_service GROUP BY service ORDER BY service")
	if err != nil {
		t.Fatalf("query view: %v", err)
	}
	defer rows.Close()
	services := 0
	for rows.Next() {
		var service string
		var n uint64
		if err := rows.Scan(&service, &n); err != nil {
			t.Fatalf("scan: %v", err)
		}
		if n != 200 {
			t.Errorf("service %s: countMerge = %d, want 200 (1400 rows over 7 services)", service, n)
		}
		services++
	}
	if services != 7 {
		t.Errorf("view has %d services, want 7", services)
	}
}

func TestClickHouseGoQueryParametersAreBoundByTheEngine(t *testing.T) {
	conn, _ := connect(t, clickhouse.CompressionNone)
	ctx := clickhouse.Context(t.Context(), clickhouse.WithParameters(clickhouse.Parameters{
		"service": "it's \"quoted\"",
		"n":       "41",
	}))
	var s string
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT {service:String}, {n:UInt64} + 1").Scan(&s, &n); err != nil {
		t.Fatalf("query with parameters: %v", err)
	}
	if s != "it's \"quoted\"" || n != 42 {
		t.Errorf("got (%q, %d), want the bound values back", s, n)
	}
	// Parameters live for one request only: the next one without them fails.
	err := conn.QueryRow(t.Context(), "SELECT {n:UInt64}").Scan(&n)
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) || ex.Code != 456 {
		t.Errorf("query after the parameterised one: err = %v, want UNKNOWN_QUERY_PARAMETER (456)", err)
	}
}

func TestClickHouseGoSeesEngineExceptionsWithTheirCode(t *testing.T) {
	conn, _ := connect(t, clickhouse.CompressionNone)
	tests := []struct {
		name string
		sql  string
		code int32
	}{
		{"unknown table", "SELECT * FROM no_such_table", 60},
		{"syntax error", "SELEC 1", 62},
		{"unknown function", "SELECT no_such_function(1)", 46},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := conn.Exec(t.Context(), tt.sql)
			var ex *clickhouse.Exception
			if !errors.As(err, &ex) {
				t.Fatalf("err = %v, want a *clickhouse.Exception", err)
			}
			if ex.Code != tt.code {
				t.Errorf("code = %d, want %d (%s)", ex.Code, tt.code, ex.Message)
			}
		})
	}
}

func TestClickHouseGoWorksWithEveryCompression(t *testing.T) {
	methods := []struct {
		name   string
		method clickhouse.CompressionMethod
	}{
		{"lz4 blocks", clickhouse.CompressionLZ4},
		{"zstd blocks", clickhouse.CompressionZSTD},
		{"gzip content encoding", clickhouse.CompressionGZIP},
		{"deflate content encoding", clickhouse.CompressionDeflate},
		{"brotli content encoding", clickhouse.CompressionBrotli},
	}
	for _, m := range methods {
		t.Run(m.name, func(t *testing.T) {
			conn, _ := connect(t, m.method)
			exec(t, conn, eventsDDL)
			insertEvents(t, t.Context(), conn, 0, 5000)
			var n, sum uint64
			if err := conn.QueryRow(t.Context(), "SELECT count(), sum(id) FROM events").Scan(&n, &sum); err != nil {
				t.Fatalf("read back: %v", err)
			}
			if n != 5000 || sum != 4999*5000/2 {
				t.Errorf("count, sum = %d, %d; want 5000, %d", n, sum, 4999*5000/2)
			}
			// An error must still reach the client as an exception.
			var ex *clickhouse.Exception
			if err := conn.Exec(t.Context(), "SELECT * FROM no_such_table"); !errors.As(err, &ex) || ex.Code != 60 {
				t.Errorf("error over %s: %v, want exception 60", m.name, err)
			}
		})
	}
}

func TestClickHouseGoRepeatedBatchWithSameDedupTokenIsStoredOnce(t *testing.T) {
	conn, _ := connect(t, clickhouse.CompressionLZ4)
	exec(t, conn, `CREATE TABLE events (id UInt64, service String) ENGINE = MergeTree ORDER BY id
		SETTINGS non_replicated_deduplication_window = 100`)
	send := func(token string, from int) {
		t.Helper()
		ctx := clickhouse.Context(t.Context(), clickhouse.WithSettings(clickhouse.Settings{"insert_deduplication_token": token}))
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO events")
		if err != nil {
			t.Fatalf("prepare: %v", err)
		}
		for i := from; i < from+10; i++ {
			if err := batch.Append(uint64(i), "svc"); err != nil {
				t.Fatalf("append: %v", err)
			}
		}
		if err := batch.Send(); err != nil {
			t.Fatalf("send with token %s: %v", token, err)
		}
	}
	// Each step sends 10 rows starting at from; rows is the table's count after it.
	steps := []struct {
		name  string
		token string
		from  int
		rows  uint64
	}{
		{"first delivery is stored", "p0-offsets-0-9", 0, 10},
		{"retry after a lost acknowledgement is stored once", "p0-offsets-0-9", 0, 10},
		{"same token with other rows is still a duplicate, so the token is what counts", "p0-offsets-0-9", 100, 10},
		{"same rows under a new token are a new batch", "p0-offsets-10-19", 0, 20},
	}
	for _, step := range steps {
		send(step.token, step.from)
		var n uint64
		if err := conn.QueryRow(t.Context(), "SELECT count() FROM events").Scan(&n); err != nil {
			t.Fatalf("count: %v", err)
		}
		if n != step.rows {
			t.Fatalf("%s: %d rows, want %d", step.name, n, step.rows)
		}
	}
	// The token is a per-request setting: it must not stick to the engine
	// and silently deduplicate the next, unrelated insert.
	var token string
	if err := conn.QueryRow(t.Context(), "SELECT getSetting('insert_deduplication_token')").Scan(&token); err != nil {
		t.Fatalf("read setting: %v", err)
	}
	if token != "" {
		t.Errorf("insert_deduplication_token leaked into the next request: %q", token)
	}
}

func TestDatabaseSQLWorksOverHTTP(t *testing.T) {
	addr, database := testkit.ClickHouse(t)
	db := clickhouse.OpenDB(&clickhouse.Options{Addr: []string{addr}, Protocol: clickhouse.HTTP, Auth: clickhouse.Auth{Database: database}})
	defer db.Close()
	if _, err := db.ExecContext(t.Context(), "CREATE TABLE kv (k String, v UInt32) ENGINE = MergeTree ORDER BY k"); err != nil {
		t.Fatalf("create: %v", err)
	}
	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	stmt, err := tx.PrepareContext(t.Context(), "INSERT INTO kv")
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	for i := range 3 {
		if _, err := stmt.ExecContext(t.Context(), fmt.Sprintf("k%d", i), uint32(i)); err != nil {
			t.Fatalf("exec: %v", err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}
	var sum uint64
	if err := db.QueryRowContext(t.Context(), "SELECT sum(v) FROM kv WHERE k != ?", "none").Scan(&sum); err != nil {
		t.Fatalf("query: %v", err)
	}
	if sum != 3 {
		t.Errorf("sum = %d, want 3", sum)
	}
}

func TestConcurrentClientsEachSeeOnlyTheirOwnSettings(t *testing.T) {
	conn, _ := connect(t, clickhouse.CompressionNone)
	const clients = 8
	errs := make(chan error, clients)
	for c := range clients {
		go func() {
			want := uint64(1000 + c)
			ctx := clickhouse.Context(t.Context(), clickhouse.WithSettings(clickhouse.Settings{"max_result_rows": want}))
			for range 20 {
				var got string
				if err := conn.QueryRow(ctx, "SELECT toString(getSetting('max_result_rows'))").Scan(&got); err != nil {
					errs <- err
					return
				}
				if got != fmt.Sprint(want) {
					errs <- fmt.Errorf("client %d saw max_result_rows = %s, want %d", c, got, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
