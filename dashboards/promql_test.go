package dashboards

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/tokenwatch/tokenwatch/alerts"
	"github.com/tokenwatch/tokenwatch/detect"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/sli"
	"github.com/tokenwatch/tokenwatch/slo"
)

// exportedSeries is every series name tokenwatch's SLI exporter writes, with
// its label names, learnt by feeding the exporter one event of each kind.
func exportedSeries(t *testing.T) map[string]map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	x, err := sli.NewExporter(reg, sli.ExporterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	for _, k := range []event.Kind{event.KindIssue, event.KindValidate, event.KindRefresh, event.KindIntrospect, event.KindRevoke, event.KindKeyRotate} {
		for _, o := range []event.Outcome{event.OK, event.Revoked} {
			x.Observe(&event.Event{TS: now, Kind: k, Outcome: o, Service: "api-gw", Issuer: "https://idp.example", Region: "eu-west-1",
				LatencyMS: 3, HasLatency: true, TokenBytes: 900, HTTPStatus: 401})
		}
	}
	x.ObserveRevocation(sli.Revocation{Service: "idp", RevokedAt: now, Propagated: true, PropagationS: 4})
	x.ObserveRevocation(sli.Revocation{Service: "idp", RevokedAt: now, Propagated: false, PropagationS: 600})
	// Findings are counted by the detectors: open one (a failed
	// proof-of-possession is replay by itself).
	det, err := detect.New(detect.DefaultConfig(), discardFindings{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	det.Observe(&event.Event{TS: now, Kind: event.KindValidate, Outcome: event.Denied, Service: "api-gw", TokenID: "0123456789abcdef",
		Device: "dev-1", Binding: "dpop", BindingOK: event.False, HTTPStatus: 401})

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]map[string]bool{}
	add := func(name string, labels map[string]bool) {
		if series[name] == nil {
			series[name] = map[string]bool{}
		}
		for l := range labels {
			series[name][l] = true
		}
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			labels := map[string]bool{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
			if m.GetHistogram() != nil {
				add(mf.GetName()+"_sum", labels)
				add(mf.GetName()+"_count", labels)
				labels["le"] = true
				add(mf.GetName()+"_bucket", labels)
				continue
			}
			add(mf.GetName(), labels)
		}
	}
	return series
}

type discardFindings struct{}

func (discardFindings) Finding(finding.Finding) {}

// recordedSeries is every recording rule package alerts generates, keyed by
// record name and slo label, with the labels its series carry: the rule's
// grouping and its own labels.
func recordedSeries(t *testing.T, spec *slo.Spec) map[string]map[string]map[string]bool {
	t.Helper()
	files, err := alerts.Rules(spec, alerts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := parser.NewParser(parser.Options{})
	out := map[string]map[string]map[string]bool{}
	for _, name := range files.Names() {
		for _, g := range files[name].Groups {
			for _, r := range g.Rules {
				if r.Record == "" {
					continue
				}
				expr, err := p.ParseExpr(r.Expr)
				if err != nil {
					t.Fatalf("recording rule %s: %v", r.Record, err)
				}
				labels := map[string]bool{}
				parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
					if agg, ok := n.(*parser.AggregateExpr); ok && len(labels) == 0 {
						for _, l := range agg.Grouping {
							labels[l] = true
						}
					}
					return nil
				})
				for l := range r.Labels {
					labels[l] = true
				}
				if out[r.Record] == nil {
					out[r.Record] = map[string]map[string]bool{}
				}
				out[r.Record][r.Labels["slo"]] = labels
			}
		}
	}
	return out
}

func TestEveryPromQLQueryParsesAndReadsSeriesTokenwatchWrites(t *testing.T) {
	spec := slo.Default()
	exported := exportedSeries(t)
	recorded := recordedSeries(t, spec)
	exprs := PromQueries(generate(t, Options{SLO: spec}))
	if len(exprs) < 10 {
		t.Fatalf("the boards have %d PromQL queries; want the SLI and burn-rate panels' (at least 10)", len(exprs))
	}
	p := parser.NewParser(parser.Options{})
	for _, e := range exprs {
		if strings.Contains(e, "$") {
			t.Errorf("PromQueries left a Grafana variable in %q", e)
			continue
		}
		expr, err := p.ParseExpr(e)
		if err != nil {
			t.Errorf("PromQL does not parse: %v\n%s", err, e)
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			var labels map[string]bool
			if bySLO, isRule := recorded[vs.Name]; isRule {
				slo := ""
				for _, m := range vs.LabelMatchers {
					if m.Name == "slo" {
						slo = m.Value
					}
				}
				if labels = bySLO[slo]; labels == nil {
					t.Errorf("%s: no recording rule %s for slo %q", e, vs.Name, slo)
					return nil
				}
			} else if labels = exported[vs.Name]; labels == nil {
				t.Errorf("%s: reads %s, which neither the SLI exporter writes nor a recording rule records", e, vs.Name)
				return nil
			}
			for _, m := range vs.LabelMatchers {
				if m.Name != "__name__" && !labels[m.Name] {
					t.Errorf("%s: %s has no label %q (it has %s)", e, vs.Name, m.Name, strings.Join(sortedKeys(labels), ", "))
				}
			}
			return nil
		})
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
