// Command tokenwatch watches session tokens: it consumes redacted auth events
// from Kafka, computes the session-token SLIs, detects token attacks, stores
// everything in ClickHouse, and generates the alerts and dashboards that go
// with them. Run `tokenwatch help` for the subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand: its one-line summary, and a run function that
// parses its own flags.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"run":        {"consume Kafka, compute SLIs, detect, store in ClickHouse, push alerts (production mode)", runCmd},
		"demo":       {"everything in one process: embedded Kafka broker, ClickHouse engine, traffic generator and pipeline", demoCmd},
		"gen":        {"send generated auth traffic (with optional attacks and look-alikes) to any Kafka, or to a file", genCmd},
		"migrate":    {"create or upgrade the ClickHouse schema (idempotent, safe from several replicas)", migrateCmd},
		"analyze":    {"run decoding, SLIs and detectors on a file of events and write a report (no Kafka or ClickHouse)", analyzeCmd},
		"eval":       {"score a report's findings against generator ground truth: precision, recall, latency per kind", evalCmd},
		"alerts":     {"generate Prometheus recording and alerting rules from the SLO spec (alerts rules --out DIR)", alertsCmd},
		"dashboards": {"generate the Grafana dashboards and provisioning files; optionally push them to Grafana", dashboardsCmd},
		"config":     {"check the config file and print the effective config with secrets masked (config check|keys)", configCmd},
		"engine":     {"serve the embedded ClickHouse engine over ClickHouse's HTTP interface on loopback", engineCmd},
		"version":    {"print the version", versionCmd},
	}
}

var version = "dev"

func main() {
	// The pipeline's garbage is short-lived (decoded events, batches):
	// collecting a quarter as often cut its CPU per event by a quarter on the
	// bench (docs/performance.md). GOGC and GOMEMLIMIT still win when set.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			if c, ok := cmds[args[1]]; ok {
				_ = c.run(ctx, []string{"--help"}, stdout, stderr)
				return 0
			}
		}
		usage(stdout)
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "tokenwatch: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	if err := c.run(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "tokenwatch %s: %v\n", args[0], err)
			return 2
		}
		fmt.Fprintf(stderr, "tokenwatch %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `tokenwatch watches session tokens: validation SLOs for the SREs who page on auth,
stolen-token detection for the security team.

Usage: tokenwatch <command> [flags]

Commands:
`)
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-11s %s\n", n, cmds[n].summary)
	}
	fmt.Fprint(w, `
Run 'tokenwatch <command> --help' for a command's flags.
Quick start on a fresh machine: 'make demo' (see README.md).
`)
}

// usageError is a mistake in the command line (exit code 2).
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// newFlags makes a FlagSet whose --help prints a summary, the usage line and
// the flags, to stdout, and whose errors go to stderr.
func newFlags(name, usageLine, about string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tokenwatch "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := stdout
		fmt.Fprintf(w, "Usage: tokenwatch %s %s\n\n%s\n\nFlags:\n", name, usageLine, strings.TrimSpace(about))
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	return fs
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func versionCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "", "Print the version.", stdout, stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "tokenwatch", version)
	return nil
}
