package chdb_test

import (
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tokenwatch/tokenwatch/internal/testkit"
)

// BenchmarkEngineCallOverhead is the cost of one trivial engine call, the
// floor under every statement the server runs.
func BenchmarkEngineCallOverhead(b *testing.B) {
	engine := testkit.ClickHouseEngine(b)
	for b.Loop() {
		if _, err := engine.Query("SET max_result_rows = DEFAULT", ""); err != nil {
			b.Fatal(err)
		}
	}
}

func benchConn(b *testing.B, m clickhouse.CompressionMethod) clickhouse.Conn {
	addr, database := testkit.ClickHouse(b)
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Protocol: clickhouse.HTTP,
		Auth: clickhouse.Auth{Database: database}, Compression: &clickhouse.Compression{Method: m}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	return conn
}

// BenchmarkClickHouseGoSelectOverHTTP is one small query's round trip.
func BenchmarkClickHouseGoSelectOverHTTP(b *testing.B) {
	for _, m := range []clickhouse.CompressionMethod{clickhouse.CompressionNone, clickhouse.CompressionLZ4} {
		b.Run(m.String(), func(b *testing.B) {
			conn := benchConn(b, m)
			for b.Loop() {
				var n uint8
				if err := conn.QueryRow(b.Context(), "SELECT 1").Scan(&n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkClickHouseGoSendOf100kRows times batch.Send alone (encode, HTTP,
// spool, INSERT ... SELECT FROM file) for the 12-column event rows.
func BenchmarkClickHouseGoSendOf100kRows(b *testing.B) {
	conn := benchConn(b, clickhouse.CompressionLZ4)
	if err := conn.Exec(b.Context(), eventsDDL); err != nil {
		b.Fatal(err)
	}
	const rows = 100_000
	var sending time.Duration
	for b.Loop() {
		b.StopTimer()
		batch, err := conn.PrepareBatch(b.Context(), "INSERT INTO events")
		if err != nil {
			b.Fatal(err)
		}
		for i := range rows {
			r := makeEventRow(i)
			if err := batch.Append(r.id, r.service, r.attrs, r.ts, r.ip, r.latency, r.scopes, r.session, r.ok, r.outcome, r.skew, r.sizeFrac); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		if err := batch.Send(); err != nil {
			b.Fatal(err)
		}
		sending += time.Since(start)
	}
	b.ReportMetric(float64(rows*b.N)/sending.Seconds(), "rows/s")
}
