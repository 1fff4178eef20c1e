package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/tokenwatch/tokenwatch/dashboards"
	"github.com/tokenwatch/tokenwatch/slo"
)

func dashboardsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dashboards", "--out DIR [--slo slo.yaml] [--push URL --token TOKEN]", `
Generate the three Grafana dashboards (tokenwatch executive, on-call, debug) with
the Grafana Foundation SDK, and the provisioning files (datasources for the
ClickHouse plugin and Prometheus, a dashboard provider) into DIR — the repo keeps
them in deploy/grafana. SLO targets come from the spec (--slo, or the built-in
default) and are drawn as thresholds. With --push the dashboards are uploaded
through Grafana's HTTP API into a "tokenwatch" folder; pushing again replaces
them (idempotent). The API token may come from $GRAFANA_TOKEN.`, stdout, stderr)
	out := fs.String("out", "", "directory to write dashboards/ and provisioning/ into (e.g. deploy/grafana)")
	sloPath := fs.String("slo", "", "SLO spec (YAML); default: the built-in spec")
	push := fs.String("push", "", "Grafana base URL to upload the dashboards to")
	token := fs.String("token", os.Getenv("GRAFANA_TOKEN"), "Grafana API token (service account token) for --push; env GRAFANA_TOKEN")
	var opts dashboards.Options
	opts.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" && *push == "" {
		return usagef("give --out DIR, --push URL, or both")
	}
	opts.SLO = slo.Default()
	if *sloPath != "" {
		var err error
		if opts.SLO, err = slo.Load(*sloPath); err != nil {
			return err
		}
	}
	if *out != "" {
		written, err := dashboards.WriteDir(*out, opts)
		if err != nil {
			return err
		}
		for _, w := range written {
			fmt.Fprintf(stdout, "wrote %s\n", w)
		}
	}
	if *push != "" {
		if *token == "" {
			return usagef("--push needs --token or $GRAFANA_TOKEN")
		}
		boards, err := dashboards.Generate(opts)
		if err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := dashboards.Push(pctx, *push, *token, boards, &http.Client{Timeout: 30 * time.Second}); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "pushed %d dashboards to %s (folder tokenwatch)\n", len(boards), *push)
	}
	return nil
}
