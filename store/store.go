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
		DialTimeout:     10 * time.Second,
		ReadTimeout:     5 * time.Minute,
		MaxOpenConns:    4,
		ConnMaxLifetime: time.Hour,
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
		return nil, fmt.Errorf("clickhouse %s: ping: %w", strings.Join(c.Addr, ","), err)
	}
	return &Store{conn: conn, db: c.Database, ttl: c.TTLDays}, nil
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
// It returns the versions it applied (none when already current).
func (s *Store) Migrate(ctx context.Context) ([]string, error) {
	if err := s.conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+s.db); err != nil {
		return nil, fmt.Errorf("migrate: create database %s: %w", s.db, err)
	}
	if err := s.conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.db+`.schema_migrations (
    version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))
ENGINE = ReplacingMergeTree(applied_at) ORDER BY version`); err != nil {
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
		for _, stmt := range m.stmts {
			if err := s.conn.Exec(ctx, s.expand(stmt)); err != nil {
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
	r := strings.NewReplacer("{db}", s.db, "{ttl}", ttl, "{ttl_minute}", ttlMinute, "{ttl_revocations}", ttlRev)
	return r.Replace(stmt)
}
