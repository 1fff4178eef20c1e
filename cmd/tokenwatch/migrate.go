package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/tokenwatch/tokenwatch/store"
)

func migrateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cf configFlags
	fs := newFlags("migrate", "[--config FILE] [--set key=value ...] [--print]", `
Create the ClickHouse database and bring its schema to the newest version.
Every statement is idempotent and versions are recorded in schema_migrations,
so running it twice, or from several replicas at once, is safe. With
clickhouse.cluster set every statement runs ON CLUSTER (docs/scaling.md).

Example: review a cluster's statements before running them
  tokenwatch migrate --print --set clickhouse.cluster=tokenwatch`, stdout, stderr)
	cf.register(fs)
	printOnly := fs.Bool("print", false, "print every statement migrate runs on an empty database, without connecting")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := cf.load()
	if err != nil {
		return err
	}
	if *printOnly {
		for _, stmt := range store.Statements(c.ClickHouse) {
			fmt.Fprintf(stdout, "%s;\n\n", strings.TrimSpace(stmt))
		}
		return nil
	}
	s, err := store.Open(ctx, c.ClickHouse)
	if err != nil {
		return err
	}
	defer s.Close()
	applied, err := s.Migrate(ctx)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintf(stdout, "schema of %s is current (version %d)\n", c.ClickHouse.Database, store.SchemaVersion())
		return nil
	}
	for _, a := range applied {
		fmt.Fprintf(stdout, "applied %s\n", a)
	}
	fmt.Fprintf(stdout, "schema of %s is now at version %d\n", c.ClickHouse.Database, store.SchemaVersion())
	return nil
}
