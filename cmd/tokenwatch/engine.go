package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/tokenwatch/tokenwatch/embedded/chdb"
)

func engineCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("engine", "[--listen 127.0.0.1:8123] [--data DIR]", `
Serve the embedded ClickHouse engine (libchdb, ClickHouse 26.7, in this process)
over ClickHouse's HTTP interface, so 'tokenwatch run', clickhouse-go, curl or a
Grafana ClickHouse datasource can use it like a ClickHouse server on localhost.
It runs one query at a time: for trying tokenwatch, not for production.`, stdout, stderr)
	listen := fs.String("listen", "127.0.0.1:8123", "address to listen on (keep it on loopback)")
	data := fs.String("data", "", "data directory (kept across restarts); empty: a temporary one removed at exit")
	lib := fs.String("lib", "", "path to libchdb.so (default: $CHDB_LIB_PATH, else "+chdb.CacheDir()+"/libchdb.so)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	eng, err := chdb.Open(chdb.Options{LibraryPath: *lib, DataDir: *data, Logger: log})
	if err != nil {
		return err
	}
	defer eng.Close()
	srv, err := chdb.Serve(ctx, eng, *listen)
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(stdout, "ClickHouse %s HTTP interface on %s (Ctrl-C to stop)\n", eng.Info().Version, srv.URL())
	<-ctx.Done()
	return nil
}
