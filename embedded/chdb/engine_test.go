package chdb_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenwatch/tokenwatch/embedded/chdb"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
)

func TestOpenWithoutTheLibraryTellsHowToFetchIt(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty", "libchdb.so")
	if err := os.MkdirAll(filepath.Dir(empty), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		option   string
		env      string
		cacheDir string
		wantPath string
	}{
		{"explicit path does not exist", filepath.Join(dir, "nope.so"), "", dir, filepath.Join(dir, "nope.so")},
		{"CHDB_LIB_PATH points nowhere", "", filepath.Join(dir, "env.so"), dir, filepath.Join(dir, "env.so")},
		{"nothing fetched into the cache yet", "", "", filepath.Join(dir, "cache"), filepath.Join(dir, "cache", "libchdb.so")},
		{"an interrupted download left an empty file", "", "", filepath.Join(dir, "empty"), empty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(chdb.LibraryEnv, tt.env)
			t.Setenv(chdb.CacheDirEnv, tt.cacheDir)
			e, err := chdb.Open(chdb.Options{LibraryPath: tt.option})
			if err == nil {
				_ = e.Close()
				t.Fatal("Open succeeded without a library")
			}
			if !errors.Is(err, chdb.ErrLibraryMissing) {
				t.Errorf("err = %v, want ErrLibraryMissing", err)
			}
			for _, want := range []string{tt.wantPath, "make setup", "scripts/fetch-chdb.sh"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestEngineAnswersQueriesDirectly(t *testing.T) {
	engine := testkit.ClickHouseEngine(t)
	t.Logf("library load and engine boot took %s", engine.LoadTime())
	out, err := engine.QueryWithParams("SELECT {a:UInt8} * 2 AS x FORMAT JSONEachRow", "", map[string]string{"a": "21"})
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	if string(out) != "{\"x\":42}\n" {
		t.Errorf("answer = %q, want {\"x\":42}", out)
	}
	_, err = engine.Query("SELECT * FROM no_such_table", "")
	var ex *chdb.Exception
	if !errors.As(err, &ex) || ex.Code != 60 {
		t.Errorf("err = %v, want exception 60 (unknown table)", err)
	}
	if v := engine.Info().Version; !strings.HasPrefix(v, "26.7.") {
		t.Errorf("version = %q, want 26.7.x", v)
	}
}

func TestSecondEngineInOneProcessIsRefused(t *testing.T) {
	testkit.ClickHouseEngine(t) // the shared engine is open
	e, err := chdb.Open(chdb.Options{})
	if err == nil {
		_ = e.Close()
		t.Fatal("a second engine opened while the first is open")
	}
	if !errors.Is(err, chdb.ErrEngineInUse) {
		t.Errorf("err = %v, want ErrEngineInUse", err)
	}
}

func TestGoRuntimeKeepsItsSignalHandlersWhileTheEngineRuns(t *testing.T) {
	engine := testkit.ClickHouseEngine(t)
	// Enough work for the engine to start its thread pools.
	if _, err := engine.Query("SELECT sum(number) FROM numbers(10000000)", ""); err != nil {
		t.Fatalf("query: %v", err)
	}
	if goSignals.Changed() {
		t.Fatal("signal handlers differ from the Go runtime's: the engine replaced them")
	}
	// With chDB's crash handler on SIGSEGV instead of Go's, this would hang
	// for minutes and kill the process instead of panicking.
	recovered := func() (r any) {
		defer func() { r = recover() }()
		var p *int
		return *p
	}()
	if recovered == nil {
		t.Fatal("a nil dereference did not panic")
	}
}
