// Package chdb runs the ClickHouse engine inside the process and serves it
// over ClickHouse's HTTP interface on loopback, so tokenwatch's demo and
// tests store data through the same clickhouse-go/v2 code path as production
// does against a ClickHouse server, and a user can point curl or Grafana at
// it.
//
// The engine is libchdb.so (chDB, ClickHouse 26.7), a 566 MB library loaded
// with purego only when Open is called: a binary importing this package
// starts anywhere, and only the embedded store needs the library.
// scripts/fetch-chdb.sh (make setup) puts it in CacheDir(); CHDB_LIB_PATH or
// Options.LibraryPath point elsewhere.
//
//	engine, err := chdb.Open(chdb.Options{DataDir: dir})
//	if errors.Is(err, chdb.ErrLibraryMissing) { /* tell the user to run make setup */ }
//	defer engine.Close()
//	srv, err := chdb.Serve(ctx, engine, "127.0.0.1:8123")
//	defer srv.Close()
//	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{srv.Addr()}, Protocol: clickhouse.HTTP})
//
// chDB is a process-wide singleton: one Engine per process (Open returns
// ErrEngineInUse otherwise), and it runs one statement at a time.
//
// Files: library.go finds the library, binding.go binds its C API,
// signals_linux.go keeps the Go runtime's signal handlers, engine.go is the
// Engine; server.go, request.go, insert.go, hello.go, compression.go and
// formats.go are the HTTP interface.
package chdb
