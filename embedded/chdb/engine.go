package chdb

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Options configure Open. The zero value is usable: library from
// $CHDB_LIB_PATH or the fetch cache, data in a fresh temporary directory.
type Options struct {
	// LibraryPath is libchdb.so; empty means $CHDB_LIB_PATH, else
	// CacheDir()/libchdb.so.
	LibraryPath string
	// DataDir holds the databases. Empty means a temporary directory that
	// Close removes; a given directory is kept, so data survives restarts.
	DataDir string
	// Logger receives startup and shutdown lines; nil means slog.Default().
	Logger *slog.Logger
}

// Engine is the ClickHouse engine running inside this process. It executes
// one statement at a time: chDB keeps session state (current database,
// SET values) on its connection, and the HTTP server relies on a request's
// statements running back to back.
type Engine struct {
	mu       sync.Mutex
	lib      *libchdb
	connPtr  unsafe.Pointer // chdb_connection *, as chdb_connect returned it
	conn     unsafe.Pointer // chdb_connection, what queries take
	dataDir  string
	tempData bool
	log      *slog.Logger
	info     ServerInfo
	closed   bool
	// currentDB is the engine session's current database as far as this
	// Engine knows, "" when unknown (a statement ran USE itself). Switching
	// only when it differs saves two engine calls per HTTP request.
	currentDB string
	loadTime  time.Duration
}

// ServerInfo is what the engine reports about itself, answered to clients
// that ask (clickhouse-go's hello, X-ClickHouse-* headers).
type ServerInfo struct {
	DisplayName string
	Version     string
	Timezone    string
}

// engineOpen guards the one engine per process. chDB is a process-wide
// singleton (one storage path, one set of global contexts), so this flag is
// the only package-level state and deliberately so.
var engineOpen atomic.Bool

// ErrEngineInUse is returned by Open while another Engine is open in this
// process.
var ErrEngineInUse = errors.New("embedded ClickHouse engine: already open in this process (chDB allows one engine per process)")

// Open loads libchdb.so and boots the engine on Options.DataDir. A missing
// library gives ErrLibraryMissing with instructions to fetch it.
func Open(opts Options) (*Engine, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	path, source := LibraryPath(opts.LibraryPath)
	if err := checkLibrary(path, source); err != nil {
		return nil, err
	}
	if !engineOpen.CompareAndSwap(false, true) {
		return nil, ErrEngineInUse
	}
	e, err := open(path, opts, log)
	if err != nil {
		engineOpen.Store(false)
		return nil, err
	}
	return e, nil
}

func open(path string, opts Options, log *slog.Logger) (*Engine, error) {
	start := time.Now()
	e := &Engine{dataDir: opts.DataDir, log: log}
	if e.dataDir == "" {
		dir, err := os.MkdirTemp("", "tokenwatch-chdb-*")
		if err != nil {
			return nil, fmt.Errorf("embedded ClickHouse engine: create data dir: %w", err)
		}
		e.dataDir, e.tempData = dir, true
	} else if err := os.MkdirAll(e.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded ClickHouse engine: create data dir %s: %w", e.dataDir, err)
	}

	lib, err := loadLibrary(path)
	if err != nil {
		e.removeTempData()
		return nil, err
	}
	e.lib = lib

	signals := saveSignals()
	lib.setSignalHandlersOn(0)
	argv, pin := connectArgs([]string{"--path=" + e.dataDir})
	connPtr := lib.connect(int32(len(argv)), &argv[0])
	pin.Unpin()
	signals.restore()
	if connPtr == nil {
		e.removeTempData()
		return nil, fmt.Errorf("embedded ClickHouse engine: chdb_connect on %s failed", e.dataDir)
	}
	e.connPtr = connPtr
	// chdb_connect returns a pointer to the connection handle; queries take
	// the handle itself, so read it once here.
	e.conn = *(*unsafe.Pointer)(connPtr)

	info, err := e.queryInfo()
	if err != nil {
		_ = e.Close()
		return nil, err
	}
	e.info = info
	e.loadTime = time.Since(start)
	log.Info("embedded ClickHouse engine started",
		slog.String("library", path), slog.String("version", info.Version),
		slog.String("data_dir", e.dataDir), slog.Duration("load_time", e.loadTime))
	return e, nil
}

func (e *Engine) queryInfo() (ServerInfo, error) {
	out, err := e.Query("SELECT displayName(), version(), timezone()", "TabSeparated")
	if err != nil {
		return ServerInfo{}, fmt.Errorf("embedded ClickHouse engine: read server info: %w", err)
	}
	fields := strings.Split(strings.TrimRight(string(out), "\n"), "\t")
	if len(fields) != 3 {
		return ServerInfo{}, fmt.Errorf("embedded ClickHouse engine: server info %q: want 3 fields", out)
	}
	return ServerInfo{DisplayName: fields[0], Version: fields[1], Timezone: fields[2]}, nil
}

// Info reports the engine's display name, version and time zone.
func (e *Engine) Info() ServerInfo { return e.info }

// LoadTime is how long loading the library and booting the engine took.
func (e *Engine) LoadTime() time.Duration { return e.loadTime }

// DataDir is the directory holding the engine's databases.
func (e *Engine) DataDir() string { return e.dataDir }

// Query runs one statement in the default database and returns its output
// in format (TabSeparated when empty; a FORMAT clause in sql wins). Engine
// errors are *Exception.
func (e *Engine) Query(sql, format string) ([]byte, error) {
	return e.QueryWithParams(sql, format, nil)
}

// QueryWithParams is Query with {name:Type} placeholders bound by the engine
// from params (values in ClickHouse's escaped text form, as in the HTTP
// interface's param_<name>).
func (e *Engine) QueryWithParams(sql, format string, params map[string]string) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	res, err := e.runIn("", sql, format, params)
	return res.data, err
}

// run executes with e.mu held, in whatever database is current.
func (e *Engine) run(sql, format string, params map[string]string) (rawResult, error) {
	if e.closed {
		return rawResult{}, errors.New("embedded ClickHouse engine: closed")
	}
	return e.lib.query(e.conn, sql, format, params)
}

// runIn executes with e.mu held, in database ("" means default), as each
// request to a ClickHouse server starts in its own database.
func (e *Engine) runIn(database, sql, format string, params map[string]string) (rawResult, error) {
	if database == "" {
		database = "default"
	}
	if database != e.currentDB {
		if _, err := e.run("USE "+quoteIdentifier(database), "", nil); err != nil {
			e.currentDB = ""
			return rawResult{}, err
		}
		e.currentDB = database
	}
	if isUse(sql) {
		e.currentDB = "" // the statement moves the session elsewhere
	}
	return e.run(sql, format, params)
}

// locked runs fn with the engine to itself, for callers that must run
// several statements with nothing in between (SET, query, reset).
func (e *Engine) locked(fn func() error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return fn()
}

// Close shuts the engine down and removes a temporary data directory. After
// Close another Engine may be opened, but chDB advises against rebooting the
// engine repeatedly in one process: keep one Engine for the process's life.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if e.connPtr != nil {
		signals := saveSignals()
		e.lib.closeConn(e.connPtr)
		signals.restore()
		e.connPtr, e.conn = nil, nil
	}
	e.removeTempData()
	engineOpen.Store(false)
	e.log.Info("embedded ClickHouse engine stopped", slog.String("data_dir", e.dataDir))
	return nil
}

func (e *Engine) removeTempData() {
	if e.tempData {
		if err := os.RemoveAll(e.dataDir); err != nil {
			e.log.Warn("embedded ClickHouse engine: remove temporary data dir", slog.String("dir", e.dataDir), slog.Any("error", err))
		}
	}
}
