// Package store keeps events, findings and revocation results in ClickHouse
// through clickhouse-go/v2. The same code serves a production cluster and the
// embedded engine (which speaks ClickHouse's HTTP interface on loopback).
package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tokenwatch/tokenwatch/config"
)

// Store is a connection to one tokenwatch database.
type Store struct {
	conn driver.Conn
	db   string
	ttl  int
	// cluster (clickhouse.cluster): tables are ReplicatedMergeTree on
	// every node with Distributed tables over them (docs/scaling.md).
	cluster string
}

// Open connects and pings. The database need not exist yet (Migrate makes it).
func Open(ctx context.Context, c config.ClickHouse) (*Store, error) {
	opts := &clickhouse.Options{
		Addr: c.Addr,
		Auth: clickhouse.Auth{Database: "default", Username: c.Username, Password: c.Password},
		Settings: clickhouse.Settings{
			// A retried batch with the same token is stored once, and the
			// materialized views that feed on it are not counted twice.
			"deduplicate_blocks_in_dependent_materialized_views": 1,
		},
		DialTimeout:     c.DialTimeout,
		ReadTimeout:     c.ReadTimeout,
		MaxOpenConns:    c.MaxOpenConns,
		ConnMaxLifetime: time.Hour,
	}
	// Unset (a config built by hand, not from config.Default): the defaults.
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 5 * time.Minute
	}
	if opts.MaxOpenConns <= 0 {
		opts.MaxOpenConns = 4
	}
	switch c.Protocol {
	case "native":
		opts.Protocol = clickhouse.Native
	default:
		opts.Protocol = clickhouse.HTTP
	}
	switch c.Compression {
	case "lz4":
		opts.Compression = &clickhouse.Compression{Method: clickhouse.CompressionLZ4}
	case "zstd":
		opts.Compression = &clickhouse.Compression{Method: clickhouse.CompressionZSTD}
	case "gzip":
		if opts.Protocol == clickhouse.HTTP {
			opts.Compression = &clickhouse.Compression{Method: clickhouse.CompressionGZIP}
		}
	}
	if c.TLS.Enabled {
		t, err := TLSConfig(c.TLS)
		if err != nil {
			return nil, fmt.Errorf("clickhouse.tls: %w", err)
		}
		opts.TLS = t
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", strings.Join(c.Addr, ","), err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse %s: ping (clickhouse.dial_timeout %v, read_timeout %v, max_open_conns %d): %w",
			strings.Join(c.Addr, ","), opts.DialTimeout, opts.ReadTimeout, opts.MaxOpenConns, err)
	}
	return &Store{conn: conn, db: c.Database, ttl: c.TTLDays, cluster: c.Cluster}, nil
}

// TLSConfig builds a client TLS config from the config's files.
func TLSConfig(c config.TLS) (*tls.Config, error) {
	t := &tls.Config{InsecureSkipVerify: c.InsecureSkipVerify, MinVersion: tls.VersionTLS12} //nolint:gosec // operator's explicit choice
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificates", c.CAFile)
		}
		t.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, err
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// Close releases the connection pool.
func (s *Store) Close() error { return s.conn.Close() }

// Conn is the underlying connection, for queries the store does not wrap.
func (s *Store) Conn() driver.Conn { return s.conn }

// Database is the database the store writes to.
func (s *Store) Database() string { return s.db }

// Migrate creates the database and brings the schema to the newest version.
// It returns the versions it applied (none when already current). With a
// cluster every statement runs ON CLUSTER.
func (s *Store) Migrate(ctx context.Context) ([]string, error) {
	boot := s.bootstrap()
	if err := s.conn.Exec(ctx, boot[0]); err != nil {
		return nil, fmt.Errorf("migrate: create database %s: %w", s.db, err)
	}
	if err := s.conn.Exec(ctx, boot[1]); err != nil {
		return nil, fmt.Errorf("migrate: schema_migrations: %w", err)
	}
	have := map[int]bool{}
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT version FROM "+s.db+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrate: read versions: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, fmt.Errorf("migrate: read versions: %w", err)
		}
		have[int(v)] = true
	}
	rows.Close()
	var applied []string
	for _, m := range migrations {
		if have[m.version] {
			continue
		}
		for _, stmt := range s.migration(m) {
			if err := s.conn.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("migrate: version %d (%s): %w", m.version, m.name, err)
			}
		}
		if err := s.conn.Exec(ctx, "INSERT INTO "+s.db+".schema_migrations (version, name) VALUES (?, ?)", uint32(m.version), m.name); err != nil {
			return applied, fmt.Errorf("migrate: record version %d: %w", m.version, err)
		}
		applied = append(applied, fmt.Sprintf("%d %s", m.version, m.name))
	}
	return applied, nil
}

// bootstrap is the database and the table of applied versions. On a
// cluster the versions table is replicated to every node of every shard
// (one Keeper path without {shard}), so any node tells what was applied.
func (s *Store) bootstrap() []string {
	if s.cluster == "" {
		return []string{"CREATE DATABASE IF NOT EXISTS " + s.db, `CREATE TABLE IF NOT EXISTS ` + s.db + `.schema_migrations (
    version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))
ENGINE = ReplacingMergeTree(applied_at) ORDER BY version`}
	}
	on := s.onCluster()
	return []string{"CREATE DATABASE IF NOT EXISTS " + s.db + on, `CREATE TABLE IF NOT EXISTS ` + s.db + `.schema_migrations` + on + ` (
    version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/` + s.db + `/schema_migrations', '{replica}', applied_at) ORDER BY version`}
}

// Statements are every statement Migrate runs on an empty database with
// config c, in order (docs/scaling.md says how the cluster's were checked).
func Statements(c config.ClickHouse) []string {
	s := &Store{db: c.Database, ttl: c.TTLDays, cluster: c.Cluster}
	return s.statements()
}

func (s *Store) statements() []string {
	out := s.bootstrap()
	for _, m := range migrations {
		out = append(out, s.migration(m)...)
	}
	return out
}

// migration is one version's statements for this store's layout.
func (s *Store) migration(m migration) []string {
	var out []string
	for _, stmt := range m.stmts {
		if strings.HasPrefix(stmt, "{cluster_only}") {
			if s.cluster == "" {
				continue
			}
			stmt = strings.TrimPrefix(stmt, "{cluster_only}")
		}
		out = append(out, s.expand(stmt))
	}
	if s.cluster != "" {
		for _, d := range m.distributed {
			out = append(out, fmt.Sprintf("\nCREATE TABLE IF NOT EXISTS %s.%s%s AS %s.%s_local\nENGINE = Distributed(%s, %s, %s_local, %s)",
				s.db, d.table, s.onCluster(), s.db, d.table, quote(s.cluster), quote(s.db), d.table, d.shardKey))
		}
	}
	return out
}

func (s *Store) onCluster() string {
	if s.cluster == "" {
		return ""
	}
	return " ON CLUSTER " + quote(s.cluster)
}

func quote(v string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), "'", `\'`) + "'"
}

// SchemaVersion is the newest version Migrate knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

func (s *Store) expand(stmt string) string {
	ttl, ttlMinute, ttlRev := "", "", ""
	if s.ttl > 0 {
		ttl = fmt.Sprintf("TTL toDateTime(ts) + INTERVAL %d DAY", s.ttl)
		// SLIs are small; keep them at least 400 days for year-on-year views.
		ttlMinute = fmt.Sprintf("TTL minute + INTERVAL %d DAY", max(s.ttl, 400))
		ttlRev = fmt.Sprintf("TTL toDateTime(revoked_at) + INTERVAL %d DAY", max(s.ttl, 400))
	}
	dedup := "non_replicated_deduplication_window = 10000"
	if s.cluster != "" {
		dedup = "replicated_deduplication_window = 10000"
	}
	stmt = localRE.ReplaceAllStringFunc(stmt, func(m string) string {
		t := localRE.FindStringSubmatch(m)[1]
		if s.cluster != "" {
			return t + "_local"
		}
		return t
	})
	stmt = engineRE.ReplaceAllStringFunc(stmt, func(m string) string {
		g := engineRE.FindStringSubmatch(m)
		table, engine, args := g[1], g[2], g[4]
		if s.cluster == "" {
			return g[2] + g[3]
		}
		path := fmt.Sprintf("'/clickhouse/tables/{shard}/%s/%s_local', '{replica}'", s.db, table)
		if args != "" {
			path += ", " + args
		}
		return "Replicated" + engine + "(" + path + ")"
	})
	r := strings.NewReplacer("{db}", s.db, "{ttl}", ttl, "{ttl_minute}", ttlMinute, "{ttl_revocations}", ttlRev,
		"{on_cluster}", s.onCluster(), "{dedup_window}", dedup)
	return r.Replace(stmt)
}

var (
	localRE  = regexp.MustCompile(`\{local (\w+)\}`)
	engineRE = regexp.MustCompile(`\{engine (\w+) (\w+)(\(([^)]*)\))?\}`)
)

// eventsTable is where events are written: on a cluster the local table of
// the node the client reached (ClickHouse's advice for heavy inserts: no
// second hop through a Distributed table's queue; the batch's dedup token
// protects it there, and the materialized view fills the same node's
// sli_minute_local). Reads go through the Distributed table.
func (s *Store) eventsTable() string {
	if s.cluster != "" {
		return s.db + ".events_local"
	}
	return s.db + ".events"
}
