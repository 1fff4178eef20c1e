package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tokenwatch/tokenwatch/alerts"
	"github.com/tokenwatch/tokenwatch/slo"
)

func alertsCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "rules" {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			args = []string{"rules", "--help"}
		} else {
			return usagef("want 'alerts rules --out DIR' (see 'tokenwatch alerts rules --help')")
		}
	}
	fs := newFlags("alerts rules", "[--slo slo.yaml] --out DIR", `
Generate Prometheus rule files from the SLO spec: recording rules for each SLO's
error ratio over 5m, 30m, 1h, 2h, 6h, 1d and 3d, multiwindow multi-burn-rate
alerts (page: 14.4x over 1h and 5m, or 6x over 6h and 30m; ticket: 3x over 1d
and 2h, or 1x over 3d and 6h — for a 30-day window, scaled to the SLO's own),
and alerts on the security and pipeline-health metrics. Every alert carries
severity and team labels and summary, description and runbook_url annotations.
Without --slo the built-in default spec is used (print it with --print-default-slo).`, stdout, stderr)
	sloPath := fs.String("slo", "", "SLO spec (YAML); default: the built-in spec")
	out := fs.String("out", "", "directory to write the rule files to (required)")
	printDefault := fs.Bool("print-default-slo", false, "print the built-in SLO spec and exit")
	var opts alerts.Options
	opts.RegisterFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *printDefault {
		_, err := stdout.Write(slo.DefaultYAML())
		return err
	}
	if *out == "" {
		return usagef("--out DIR is required")
	}
	spec := slo.Default()
	if *sloPath != "" {
		var err error
		if spec, err = slo.Load(*sloPath); err != nil {
			return err
		}
	}
	files, err := alerts.Rules(spec, opts)
	if err != nil {
		return err
	}
	written, err := files.WriteDir(*out)
	if err != nil {
		return err
	}
	for _, w := range written {
		fmt.Fprintf(stdout, "wrote %s\n", w)
	}
	fmt.Fprintf(stdout, "check them with: promtool check rules %s/*.yml\n", *out)
	return nil
}
