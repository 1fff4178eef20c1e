package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/tokenwatch/tokenwatch/embedded/chdb"
)

// sharedClickHouse is the one embedded engine of this test binary. chDB allows one engine per
// process and boots in about half a second, so every test shares it and gets a database of its
// own. Like sharedKafka it is never closed: the process's exit ends it, and the next test binary
// removes its data directory (makeOwnedTempDir).
var sharedClickHouse struct {
	once   sync.Once
	engine *chdb.Engine
	server *chdb.Server
	err    error
}

// ClickHouse returns the address (host:port) of a ClickHouse HTTP interface backed by the
// embedded ClickHouse 26.7 engine, and the name of a fresh database for this test, dropped when
// the test ends. Connect with clickhouse-go/v2 using Protocol: clickhouse.HTTP and
// Auth.Database set to database. The engine and its server start once per test binary.
// Without libchdb.so the test is skipped (or fails when TOKENWATCH_REQUIRE_COMPONENTS=1).
func ClickHouse(t testing.TB) (addr string, database string) {
	t.Helper()
	engine, server := startClickHouse(t)
	database = databaseName(t)
	if _, err := engine.Query("CREATE DATABASE "+database, ""); err != nil {
		t.Fatalf("creating the test database %s: %v", database, err)
	}
	t.Cleanup(func() {
		if _, err := engine.Query("DROP DATABASE IF EXISTS "+database+" SYNC", ""); err != nil {
			t.Errorf("dropping the test database %s: %v", database, err)
		}
	})
	return server.Addr(), database
}

// ClickHouseEngine returns the shared engine itself, for tests that query it without HTTP.
func ClickHouseEngine(t testing.TB) *chdb.Engine {
	t.Helper()
	engine, _ := startClickHouse(t)
	return engine
}

func startClickHouse(t testing.TB) (*chdb.Engine, *chdb.Server) {
	t.Helper()
	s := &sharedClickHouse
	s.once.Do(func() {
		dir, err := makeOwnedTempDir("tokenwatch-chdb-test-*")
		if err != nil {
			s.err = err
			return
		}
		s.engine, s.err = chdb.Open(chdb.Options{DataDir: dir})
		if s.err != nil {
			return
		}
		s.server, s.err = chdb.Serve(context.Background(), s.engine, "127.0.0.1:0")
	})
	switch {
	case errors.Is(s.err, chdb.ErrLibraryMissing):
		Require(t, "the embedded ClickHouse engine (libchdb.so)", s.err.Error())
	case s.err != nil:
		t.Fatalf("starting the embedded ClickHouse engine: %v", s.err)
	}
	return s.engine, s.server
}

// databaseName makes a database name of this test's own: its name made safe for an unquoted
// identifier, and a random suffix so that -count=N runs do not collide.
func databaseName(t testing.TB) string {
	var b strings.Builder
	b.WriteString("test_")
	for _, r := range strings.ToLower(t.Name()) {
		if b.Len() >= 60 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatalf("making a unique database name: %v", err)
	}
	return b.String() + "_" + hex.EncodeToString(suffix)
}
