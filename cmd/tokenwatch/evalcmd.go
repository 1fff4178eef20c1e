package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/tokenwatch/tokenwatch/eval"
)

func evalCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval", "--truth TRUTH.json --report REPORT.json [--json OUT.json] [--min-precision P --min-recall R]", `
Score the findings of an analyze report (or the demo's findings) against the
ground truth that 'tokenwatch gen' wrote beside the events: per kind, true and
false positives, missed attacks, precision, recall and detection latency (the
finding's detected_at minus the attack's first event). A finding that matches a
benign look-alike, or nothing, is a false positive; two findings for one
incident count the second as a false positive.`, stdout, stderr)
	truthPath := fs.String("truth", "", "ground-truth JSON written by tokenwatch gen (required)")
	reportPath := fs.String("report", "", "report JSON written by tokenwatch analyze (required)")
	jsonOut := fs.String("json", "", "also write the scores as JSON to this file")
	minP := fs.Float64("min-precision", 0, "exit 1 when any kind's precision is below this")
	minR := fs.Float64("min-recall", 0, "exit 1 when any kind's recall is below this")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *truthPath == "" || *reportPath == "" {
		return usagef("--truth and --report are required")
	}
	truth, err := eval.LoadTruth(*truthPath)
	if err != nil {
		return err
	}
	findings, err := eval.LoadFindings(*reportPath)
	if err != nil {
		return err
	}
	res := eval.Evaluate(truth, findings)
	fmt.Fprint(stdout, res.String())
	if *jsonOut != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	for _, k := range res.Kinds {
		if k.TruePositives+k.FalsePositives > 0 && k.Precision < *minP {
			return fmt.Errorf("%s: precision %.3f is below --min-precision %.3f", k.Kind, k.Precision, *minP)
		}
		if k.TruePositives+k.FalseNegatives > 0 && k.Recall < *minR {
			return fmt.Errorf("%s: recall %.3f is below --min-recall %.3f", k.Kind, k.Recall, *minR)
		}
	}
	return nil
}
