package detect_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/analyze"
	"github.com/tokenwatch/tokenwatch/detect"
	"github.com/tokenwatch/tokenwatch/eval"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
	"github.com/tokenwatch/tokenwatch/sli"
)

type reportDetector struct{ e *detect.Engine }

func (d reportDetector) Observe(e *event.Event)             { d.e.Observe(e) }
func (d reportDetector) ObserveRevocation(r sli.Revocation) { d.e.ObserveRevocation(detect.FromSLI(r)) }
func (d reportDetector) Flush() []finding.Finding           { return d.e.Flush() }

type nopSink struct{}

func (nopSink) Finding(finding.Finding) {}

// TestEveryAttackFoundAndNoLookAlikeReported is the acceptance suite: every
// attack and every benign look-alike injected five times into ordinary
// traffic, and a validator clock ahead once (each skewed clock takes a
// service of its own), run through the same decoding, SLIs and detectors
// as the pipeline (analyze), scored against the generator's ground truth.
// The clock ahead stamps acceptances just before revokes after them: the
// slow-revocation detector must not take them for residual acceptances.
func TestEveryAttackFoundAndNoLookAlikeReported(t *testing.T) {
	if testing.Short() {
		t.Skip("generates and analyzes about a million events")
	}
	inject, err := gen.ParseInject("all=5,clock_skew_ahead=1")
	if err != nil {
		t.Fatal(err)
	}
	spec := gen.Default()
	spec.Seed, spec.Duration, spec.Rate, spec.Sessions, spec.Services = 42, 3*time.Hour, 100, 1500, 6
	spec.Inject = inject
	g, err := gen.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := gen.WriteNDJSON(g, &file); err != nil {
		t.Fatal(err)
	}
	cfg := detect.DefaultConfig()
	cfg.NATEgressRanges = spec.NATPrefixes() // the operator lists their known NAT egress ranges
	en, err := detect.New(cfg, nopSink{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	guard, _ := redact.New(redact.Config{Key: []byte("acceptance")})
	rep, err := analyze.Run(context.Background(), analyze.Options{Input: &file, Detector: reportDetector{en}, Redact: guard})
	if err != nil {
		t.Fatal(err)
	}
	res := eval.Evaluate(g.Truth(), rep.Findings)
	t.Logf("%d events\n%s", rep.Events.Accepted, res.String())
	// Clock skew has no look-alike scenario of its own: its benign
	// counterpart, ordinary expiry of long-expired tokens, is in the
	// ordinary traffic around the attacks.
	hasLookAlike := map[finding.Kind]bool{}
	for _, sc := range gen.Scenarios() {
		if !sc.Attack {
			hasLookAlike[sc.Kind] = true
		}
	}
	for _, k := range res.Kinds {
		if k.Attacks < 5 || (hasLookAlike[k.Kind] && k.LookAlikes < 5) {
			t.Errorf("%s: the suite holds %d attacks and %d look-alikes, want at least 5 of each", k.Kind, k.Attacks, k.LookAlikes)
		}
		if k.Recall < 1 {
			t.Errorf("%s: recall %.3f, want 1.0 (missed %d)", k.Kind, k.Recall, k.FalseNegatives)
		}
		if k.Precision < 0.99 {
			t.Errorf("%s: precision %.3f, want >= 0.99 (%d false positives: %d look-alike hits, %d duplicates, %d unmatched)",
				k.Kind, k.Precision, k.FalsePositives, k.LookAlikeHits, k.Duplicates, k.Unmatched)
		}
	}
	for _, m := range res.Missed {
		t.Logf("missed: %+v", m)
	}
	for _, fp := range res.FalsePositives {
		t.Logf("false positive: %+v", fp)
	}
}
