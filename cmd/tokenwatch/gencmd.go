package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/tokenwatch/tokenwatch/eval"
	"github.com/tokenwatch/tokenwatch/gen"
)

// genFlags are the generator's knobs, shared by gen and demo.
type genFlags struct {
	seed     uint64
	rate     float64
	sessions int
	services int
	duration time.Duration
	inject   string
}

func (g *genFlags) register(fs interface {
	Uint64Var(*uint64, string, uint64, string)
	Float64Var(*float64, string, float64, string)
	IntVar(*int, string, int, string)
	DurationVar(*time.Duration, string, time.Duration, string)
	StringVar(*string, string, string, string)
}, rate float64, inject string) {
	fs.Uint64Var(&g.seed, "seed", 1, "random seed: the same seed and flags give the same traffic")
	fs.Float64Var(&g.rate, "rate", rate, "events per second")
	fs.IntVar(&g.sessions, "sessions", 2000, "concurrent sessions")
	fs.IntVar(&g.services, "services", 4, "backend services that validate tokens (besides the IdP and the gateway)")
	fs.DurationVar(&g.duration, "duration", time.Minute, "how long to generate (traffic time)")
	fs.StringVar(&g.inject, "inject", inject, "attacks and look-alikes to inject, e.g. replay=3,nat_egress=2 or all=1; scenarios: "+strings.Join(gen.ScenarioNames(), ", "))
}

func (g *genFlags) spec(start time.Time) (gen.Spec, error) {
	inj, err := gen.ParseInject(g.inject)
	if err != nil {
		return gen.Spec{}, usagef("--inject: %v", err)
	}
	s := gen.Default()
	s.Seed, s.Start, s.Duration, s.Rate, s.Sessions, s.Services, s.Inject = g.seed, start, g.duration, g.rate, g.sessions, g.services, inj
	return s, nil
}

func genCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("gen", "(--brokers HOST:PORT --topic T | --out FILE.ndjson[.gz]) [flags]", `
Generate realistic auth traffic — sessions across an IdP, a gateway and several
services: issue, validate, refresh with rotation, logout revokes, key rotations —
with optional attacks and benign look-alikes, and write the ground truth (what
was injected, and when) as JSON beside the events.

To Kafka, events are paced by the wall clock at --rate, keyed by session_id.
To a file (--out), they are written as fast as possible with simulated
timestamps, for 'tokenwatch analyze' and 'tokenwatch eval'.`, stdout, stderr)
	var g genFlags
	g.register(fs, 1000, "")
	brokers := fs.String("brokers", "", "Kafka bootstrap servers, comma-separated")
	topic := fs.String("topic", "auth-events", "Kafka topic")
	format := fs.String("format", "json", "message format: json, otlp_proto or otlp_json")
	out := fs.String("out", "", "write NDJSON events to this file instead of Kafka (.gz to compress)")
	truth := fs.String("truth", "", "write the ground truth here (default: beside --out, or none for Kafka)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*brokers == "") == (*out == "") {
		return usagef("give exactly one of --brokers (send to Kafka) or --out (write a file)")
	}
	if *out != "" {
		spec, err := g.spec(time.Time{})
		if err != nil {
			return err
		}
		gn, err := gen.New(spec)
		if err != nil {
			return err
		}
		n, err := gen.WriteFiles(gn, *out)
		if err != nil {
			return err
		}
		tp := gen.TruthPath(*out)
		if *truth != "" && *truth != tp {
			if err := writeTruth(*truth, gn.Truth()); err != nil {
				return err
			}
			tp = *truth
		}
		fmt.Fprintf(stdout, "wrote %d events to %s and the ground truth (%d entries) to %s\n", n, *out, len(gn.Truth()), tp)
		fmt.Fprintf(stdout, "the generator's known NAT egress ranges (give them to the detectors): --set detect.nat_egress_ranges=%s\n",
			strings.Join(spec.NATPrefixes(), ","))
		return nil
	}
	spec, err := g.spec(time.Now())
	if err != nil {
		return err
	}
	gn, err := gen.New(spec)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	prog, err := gen.Produce(ctx, gn, gen.ProduceConfig{
		Brokers: strings.Split(*brokers, ","), Topic: *topic, Format: *format, Live: true, CreateTopic: true,
		Progress: func(p gen.ProduceProgress) {
			fmt.Fprintf(stderr, "\rsent %d events (%d messages, %d acked) in %s   ", p.Events, p.Messages, p.Acked, p.Elapsed.Round(time.Second))
		},
	}, log)
	fmt.Fprintln(stderr)
	if *truth != "" {
		if werr := writeTruth(*truth, gn.Truth()); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil && ctx.Err() == nil {
		return err
	}
	fmt.Fprintf(stdout, "sent %d events in %d messages to %s (%d failed)\n", prog.Events, prog.Messages, *topic, prog.Failed)
	return nil
}

func writeTruth(path string, t []eval.Truth) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return eval.WriteTruth(f, t)
}
