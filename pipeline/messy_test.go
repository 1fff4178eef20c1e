package pipeline_test

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/pipeline"
	"github.com/tokenwatch/tokenwatch/store"
)

// collect is the stages' sink: every finding's newest state and every
// revocation row, as the pipeline stores them.
type collect struct {
	findings map[string]finding.Finding
	revs     []string
}

func (c *collect) Finding(f finding.Finding) { c.findings[f.ID] = f }
func (c *collect) Revocation(rows []store.Revocation) {
	for _, r := range rows {
		c.revs = append(c.revs, revocationRow(r.RevokedAt, r.TargetID, r.Service, r.Propagated, r.ResidualAcceptances))
	}
}

// streamThroughStages runs events, in the order given, through what the
// pipeline runs each accepted event through after the merge: the copy
// filter, then the SLI exporter, the revocation tracker and the detectors.
// It returns the incidents, the revocation rows and the SLI series.
func streamThroughStages(t *testing.T, c config.Config, events []event.Event) ([]incident, []string, string) {
	t.Helper()
	reg := prometheus.NewRegistry()
	st, err := pipeline.BuildStages(c, reg)
	if err != nil {
		t.Fatal(err)
	}
	sink := &collect{findings: map[string]finding.Finding{}}
	st.SetSink(sink)
	dd := pipeline.NewDedup(c.Pipeline)
	for i := range events {
		e := events[i] // the stages may keep what they see
		if dd != nil && dd.Seen(&e) {
			continue
		}
		st.Observe(&e)
	}
	st.Flush()
	var fs []finding.Finding
	for _, f := range sink.findings {
		fs = append(fs, f)
	}
	slices.Sort(sink.revs)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sli bytes.Buffer
	for _, mf := range mfs {
		// The SLIs; the detectors' own health series (state sizes, late
		// events) are not SLIs and may differ with arrival order.
		if strings.HasPrefix(mf.GetName(), "tokenwatch_detector") || strings.HasPrefix(mf.GetName(), "tokenwatch_findings") {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&sli, mf); err != nil {
			t.Fatal(err)
		}
	}
	return incidents(fs), sink.revs, sli.String()
}

// TestDuplicatesAndShuffleWithinLatenessChangeNothing is SIGNALS.md's
// "Duplicates and order (v2)" as a property: every attack and look-alike
// scenario injected into ordinary traffic, then 5 % of the events
// delivered a second time and every event's arrival moved by a random delay
// within the allowed lateness. The findings, the revocation results and the
// SLIs equal the clean run's, for several seeds.
func TestDuplicatesAndShuffleWithinLatenessChangeNothing(t *testing.T) {
	inject, err := gen.ParseInject("all=2")
	if err != nil {
		t.Fatal(err)
	}
	spec := gen.Default()
	spec.Seed, spec.Duration, spec.Rate, spec.Sessions, spec.Services = 7, 45*time.Minute, 40, 600, 6
	spec.Start = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	spec.Inject = inject
	events := generate(t, spec)
	slices.SortStableFunc(events, func(a, b event.Event) int { return a.TS.Compare(b.TS) })
	c := config.Default()
	c.Detect.NATEgressRanges = spec.NATPrefixes()
	want, wantRevs, wantSLI := streamThroughStages(t, c, events)
	if len(want) < 20 {
		t.Fatalf("the clean run found %d incidents: the traffic does not exercise the detectors", len(want))
	}
	t.Logf("%d events, %d incidents, %d revocation rows in the clean run", len(events), len(want), len(wantRevs))
	lateness := c.Pipeline.Lateness
	for _, seed := range []uint64{1, 2, 3} {
		r := rand.New(rand.NewPCG(seed, 99))
		type arrival struct {
			at time.Time
			e  event.Event
		}
		var messy []arrival
		for i := range events {
			delay := func() time.Duration { return time.Duration(r.Int64N(int64(lateness))) }
			messy = append(messy, arrival{events[i].TS.Add(delay()), events[i]})
			if r.IntN(100) < 5 {
				messy = append(messy, arrival{events[i].TS.Add(delay()), events[i]})
			}
		}
		slices.SortStableFunc(messy, func(a, b arrival) int { return a.at.Compare(b.at) })
		in := make([]event.Event, len(messy))
		for i := range messy {
			in[i] = messy[i].e
		}
		got, gotRevs, gotSLI := streamThroughStages(t, c, in)
		if !slices.Equal(got, want) {
			t.Errorf("seed %d: findings differ from the clean run's:\n messy: %v\n clean: %v", seed, got, want)
		}
		if d := multisetDiff(gotRevs, wantRevs); d != "" {
			t.Errorf("seed %d: revocation results differ from the clean run's:\n%s", seed, d)
		}
		if d := seriesDiff(gotSLI, wantSLI); d != "" {
			t.Errorf("seed %d: SLIs differ from the clean run's:\n%s", seed, d)
		}
	}
}

// multisetDiff names the lines one list holds more often than the other.
func multisetDiff(got, want []string) string {
	n := map[string]int{}
	for _, g := range got {
		n[g]++
	}
	for _, w := range want {
		n[w]--
	}
	var out []string
	for k, v := range n {
		switch {
		case v > 0:
			out = append(out, fmt.Sprintf("  %d more in the run:   %s", v, k))
		case v < 0:
			out = append(out, fmt.Sprintf("  %d fewer in the run: %s", -v, k))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// seriesDiff compares two text expositions series by series; values equal
// within 1e-9 (a histogram's _sum adds the same floats in another order).
func seriesDiff(got, want string) string {
	parse := func(s string) map[string]float64 {
		m := map[string]float64{}
		for _, line := range strings.Split(s, "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			i := strings.LastIndexByte(line, ' ')
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err != nil {
				v = math.NaN()
			}
			m[line[:i]] = v
		}
		return m
	}
	g, w := parse(got), parse(want)
	var out []string
	for k, wv := range w {
		gv, ok := g[k]
		if !ok {
			out = append(out, "  missing from the run: "+k)
		} else if math.Abs(gv-wv) > 1e-9*max(1, math.Abs(wv)) {
			out = append(out, fmt.Sprintf("  %s = %v, clean %v", k, gv, wv))
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			out = append(out, "  only in the run: "+k)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}
