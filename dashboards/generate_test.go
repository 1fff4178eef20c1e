package dashboards

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/tokenwatch/tokenwatch/alerts"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/slo"
)

// registerDecoders teaches the SDK's (process-wide) runtime the core
// panels and datasources and our ClickHouse query type, once.
var registerDecoders = sync.OnceFunc(func() {
	plugins.RegisterDefaultPlugins()
	cog.NewRuntime().RegisterDataqueryVariant(ClickHouseVariantConfig())
})

// strictDecode runs the SDK's strict decoder. In v0.0.22 it returns a
// non-nil error with an empty message for valid input (a typed nil
// BuildErrors in an error interface), so only a message is a failure.
func strictDecode(t *testing.T, b Board) {
	t.Helper()
	registerDecoders()
	var d dashboard.Dashboard
	if err := d.UnmarshalJSONStrict(b.JSON); err != nil && err.Error() != "" {
		t.Fatalf("%s does not load back through the SDK's strict decoder:\n%v", b.FileName, err)
	}
}

func generate(t *testing.T, opts Options) []Board {
	t.Helper()
	boards, err := Generate(opts)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return boards
}

func TestEveryBoardLoadsBackThroughTheSDKStrictDecoder(t *testing.T) {
	for _, b := range generate(t, Options{}) {
		t.Run(b.UID, func(t *testing.T) { strictDecode(t, b) })
	}
}

// readBack decodes a board with plain encoding/json, the way the SDK's
// strict decoder cannot return panels in v0.0.22.
func readBack(t *testing.T, b Board) dashboard.Dashboard {
	t.Helper()
	var d dashboard.Dashboard
	if err := json.Unmarshal(b.JSON, &d); err != nil {
		t.Fatalf("%s: %v", b.FileName, err)
	}
	return d
}

// panelsOf lists a board's panels (not rows), in layout order.
func panelsOf(d dashboard.Dashboard) []dashboard.Panel {
	var out []dashboard.Panel
	for _, p := range d.Panels {
		if p.Panel != nil {
			out = append(out, *p.Panel)
		}
		if p.RowPanel != nil {
			out = append(out, p.RowPanel.Panels...)
		}
	}
	return out
}

func TestTheThreeBoardsHaveStableUIDsAndTitles(t *testing.T) {
	boards := generate(t, Options{})
	want := []struct{ uid, title string }{
		{"tokenwatch-executive", "tokenwatch executive"},
		{"tokenwatch-oncall", "tokenwatch on-call"},
		{"tokenwatch-debug", "tokenwatch debug"},
	}
	if len(boards) != len(want) {
		t.Fatalf("Generate made %d boards, want %d", len(boards), len(want))
	}
	for i, w := range want {
		b := boards[i]
		d := readBack(t, b)
		if b.UID != w.uid || b.Title != w.title || b.FileName != w.uid+".json" || *d.Uid != w.uid || *d.Title != w.title {
			t.Errorf("board %d is %q %q (%s, JSON uid %q); want %q %q", i, b.UID, b.Title, b.FileName, *d.Uid, w.uid, w.title)
		}
	}
}

func TestEveryPanelHasADatasourceAndATargetOnIt(t *testing.T) {
	for _, b := range generate(t, Options{}) {
		d := readBack(t, b)
		panels := panelsOf(d)
		if len(panels) < 8 {
			t.Errorf("%s has %d panels; want a real board", b.UID, len(panels))
		}
		ids := map[uint32]string{}
		for _, p := range panels {
			title := *p.Title
			if p.Datasource == nil || p.Datasource.Type == nil || p.Datasource.Uid == nil {
				t.Errorf("%s / %s: no datasource", b.UID, title)
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s / %s: no target", b.UID, title)
			}
			if p.Id == nil || ids[*p.Id] != "" {
				t.Errorf("%s / %s: panel id missing or shared with %q", b.UID, title, ids[*p.Id])
			} else {
				ids[*p.Id] = title
			}
		}
		for _, q := range b.Queries() {
			if q.Source != "panel" {
				continue
			}
			switch q.Datasource {
			case ClickHousePluginID:
				if q.SQL == "" || q.Expr != "" {
					t.Errorf("%s / %s / %s: a ClickHouse target needs rawSql and no expr", b.UID, q.Panel, q.RefID)
				}
			case PrometheusPluginID:
				if q.Expr == "" || q.SQL != "" {
					t.Errorf("%s / %s / %s: a Prometheus target needs expr and no rawSql", b.UID, q.Panel, q.RefID)
				}
			default:
				t.Errorf("%s / %s / %s: target on datasource %q", b.UID, q.Panel, q.RefID, q.Datasource)
			}
		}
	}
}

func TestTargetsNameTheConfiguredDatasources(t *testing.T) {
	opts := Options{ClickHouseUID: "ch-prod", PrometheusUID: "prom-prod", Database: "auth_obs"}
	for _, b := range generate(t, opts) {
		var m struct {
			Panels []struct {
				Title      string
				Datasource datasourceRef
				Targets    []struct{ Datasource datasourceRef }
			}
		}
		if err := json.Unmarshal(b.JSON, &m); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{ClickHousePluginID: "ch-prod", PrometheusPluginID: "prom-prod"}
		for _, p := range m.Panels {
			if p.Datasource.Type == "" {
				continue // a row
			}
			for _, ds := range append([]datasourceRef{p.Datasource}, func() []datasourceRef {
				var out []datasourceRef
				for _, tg := range p.Targets {
					out = append(out, tg.Datasource)
				}
				return out
			}()...) {
				if want[ds.Type] != ds.UID {
					t.Errorf("%s / %s: datasource %s uid %q, want %q", b.UID, p.Title, ds.Type, ds.UID, want[ds.Type])
				}
			}
			for _, tg := range p.Targets {
				if tg.Datasource.Type != p.Datasource.Type {
					t.Errorf("%s / %s: a %s target on a %s panel (mixed panels need the Mixed datasource)", b.UID, p.Title, tg.Datasource.Type, p.Datasource.Type)
				}
			}
		}
		for _, q := range b.Queries() {
			if q.Datasource == ClickHousePluginID && !strings.Contains(q.SQL, "auth_obs.") {
				t.Errorf("%s / %s: SQL does not read the configured database:\n%s", b.UID, q.Panel, q.SQL)
			}
		}
	}
}

func TestEveryBoardFiltersByServiceIssuerAndRegion(t *testing.T) {
	for _, b := range generate(t, Options{}) {
		d := readBack(t, b)
		vars := map[string]dashboard.VariableModel{}
		for _, v := range d.Templating.List {
			vars[v.Name] = v
		}
		for _, name := range []string{"service", "issuer", "region"} {
			v, ok := vars[name]
			switch {
			case !ok:
				t.Errorf("%s has no %s variable", b.UID, name)
			case v.Type != dashboard.VariableTypeQuery || v.Datasource == nil || *v.Datasource.Type != ClickHousePluginID:
				t.Errorf("%s: %s is not a ClickHouse query variable", b.UID, name)
			case v.Multi == nil || !*v.Multi || v.IncludeAll == nil || !*v.IncludeAll:
				t.Errorf("%s: %s must allow several values and All", b.UID, name)
			case !strings.Contains(*v.Query.String, "sli_minute"):
				t.Errorf("%s: %s does not read its values from sli_minute: %s", b.UID, name, *v.Query.String)
			}
		}
		if b.UID == DebugUID {
			for _, name := range []string{"request_id", "session_id"} {
				if v, ok := vars[name]; !ok || v.Type != dashboard.VariableTypeTextbox {
					t.Errorf("the debug board needs a %s text box", name)
				}
			}
		}
	}
}

func TestFindingsAreAnnotatedOnEveryBoard(t *testing.T) {
	for _, b := range generate(t, Options{}) {
		var found bool
		for _, q := range b.Queries() {
			if q.Source != "annotation" || q.Panel != "annotation Findings" {
				continue
			}
			found = true
			for _, want := range []string{"FINAL", "first_seen AS time", "kind", "severity", "service", "action", "AS text"} {
				if !strings.Contains(q.SQL, want) {
					t.Errorf("%s: the findings annotation does not have %q:\n%s", b.UID, want, q.SQL)
				}
			}
		}
		if !found {
			t.Errorf("%s has no findings annotation", b.UID)
		}
	}
}

func TestBoardsLinkToEachOtherAndToTheRunbooks(t *testing.T) {
	const base = "https://wiki.example/runbooks/"
	boards := generate(t, Options{RunbookBaseURL: base})
	for _, b := range boards {
		d := readBack(t, b)
		urls := map[string]bool{}
		for _, l := range d.Links {
			urls[*l.Url] = true
			if l.Placement != nil {
				t.Errorf("%s: link %q is hidden in the controls menu", b.UID, l.Title)
			}
		}
		for _, other := range boards {
			if other.UID != b.UID && !urls["/d/"+other.UID] {
				t.Errorf("%s does not link to %s", b.UID, other.UID)
			}
		}
		if !urls[base] {
			t.Errorf("%s does not link to the runbooks at %s", b.UID, base)
		}
		for _, p := range panelsOf(d) {
			for _, l := range p.Links {
				if !strings.HasPrefix(*l.Url, base) || !strings.HasSuffix(*l.Url, ".md") {
					t.Errorf("%s / %s: panel link %q is not a runbook under %s", b.UID, *p.Title, *l.Url, base)
				}
			}
		}
	}
}

func TestRunbookLinksNameAlertsThatExist(t *testing.T) {
	files, err := alerts.Rules(slo.Default(), alerts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, r := range files.Alerts() {
		known[r.Alert] = true
	}
	for _, k := range finding.Kinds() {
		known[alerts.FindingAlertName(k)] = true // pushed to Alertmanager, not a rule
	}
	for _, b := range generate(t, Options{}) {
		for _, p := range panelsOf(readBack(t, b)) {
			for _, l := range p.Links {
				alert := strings.TrimSuffix(strings.TrimPrefix(*l.Url, DefaultRunbookBaseURL), ".md")
				if !known[alert] {
					t.Errorf("%s / %s links to the runbook of %q, which no alert is called", b.UID, *p.Title, alert)
				}
				if _, err := os.Stat(filepath.Join("..", "docs", "runbooks", alert+".md")); err != nil {
					t.Errorf("%s / %s links to a runbook that is not written: %v", b.UID, *p.Title, err)
				}
			}
		}
	}
}

// thresholdValues lists a panel's threshold steps that have a value.
func thresholdValues(p dashboard.Panel) []float64 {
	var out []float64
	if p.FieldConfig == nil || p.FieldConfig.Defaults.Thresholds == nil {
		return nil
	}
	for _, s := range p.FieldConfig.Defaults.Thresholds.Steps {
		if s.Value != nil {
			out = append(out, *s.Value)
		}
	}
	return out
}

func TestSLOTargetsAreDrawnAsThresholds(t *testing.T) {
	spec, err := slo.Parse([]byte(`
slos:
  - name: checkout-validation
    sli: validation_good_ratio
    target: 0.995
    window: 28d
    bad: [error, unknown_kid]
  - name: checkout-latency
    sli: validation_latency
    target: 0.9
    window: 28d
    threshold_seconds: 0.1
  - name: fast-revocation
    sli: revocation_propagation
    target: 0.95
    window: 28d
    threshold_seconds: 30
`))
	if err != nil {
		t.Fatal(err)
	}
	page := alerts.DefaultBurnWindows()[0].Factor(28 * 24 * time.Hour) // 14.4 × 28/30
	boards := generate(t, Options{SLO: spec})
	panels := map[string]dashboard.Panel{}
	for _, b := range boards {
		for _, p := range panelsOf(readBack(t, b)) {
			panels[b.UID+" / "+*p.Title] = p
		}
	}
	for _, tc := range []struct {
		name  string
		panel string
		want  float64
	}{
		{"the 24 h good ratio turns green at the validation target", "tokenwatch-executive / Validation good ratio, last 24 h", 0.995},
		{"the 24 h trend draws the validation target", "tokenwatch-executive / Validation success, 24 h trend", 0.995},
		{"the 5 m good ratio draws the validation target", "tokenwatch-oncall / Validation good ratio, 5 m", 0.995},
		{"the latency quantiles draw the latency threshold", "tokenwatch-oncall / Validation latency p50 / p95 / p99", 0.1},
		{"the propagation distribution marks the propagation threshold", "tokenwatch-executive / Revocation propagation distribution", 30},
		{"the propagation quantiles draw the propagation threshold", "tokenwatch-executive / Revocation propagation p50 / p95", 30},
		{"the debug lag chart draws the propagation threshold", "tokenwatch-debug / Revocation lag against cache TTL", 30},
		{"the fast page burn panel draws the alert's factor for a 28 d window", "tokenwatch-oncall / Burn rate over 1h and 5m (page at 13.44×)", page},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := panels[tc.panel]
			if !ok {
				t.Fatalf("no panel %q", tc.panel)
			}
			for _, v := range thresholdValues(p) {
				if math.Abs(v-tc.want) < 1e-9 {
					return
				}
			}
			t.Errorf("thresholds %v do not include %v", thresholdValues(p), tc.want)
		})
	}
	// The SLO's own bad outcomes are what the good-ratio SQL counts.
	for _, q := range boards[0].Queries() {
		if q.Panel == "Validation good ratio, last 24 h" && !strings.Contains(q.SQL, "outcome IN ('error', 'unknown_kid')") {
			t.Errorf("the good ratio does not count the spec's bad outcomes:\n%s", q.SQL)
		}
	}
}

func TestTheStrictDecoderRefusesABrokenClickHouseTarget(t *testing.T) {
	b := generate(t, Options{})[2]
	for _, tc := range []struct{ name, from, to string }{
		{"a misspelled field", `"rawSql":`, `"rawSQL":`},
		{"a format given as a word", `"format": 1`, `"format": "table"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broken := b
			broken.JSON = []byte(strings.Replace(string(b.JSON), tc.from, tc.to, 1))
			if string(broken.JSON) == string(b.JSON) {
				t.Fatalf("the board has no %s to break", tc.from)
			}
			registerDecoders()
			var d dashboard.Dashboard
			if err := d.UnmarshalJSONStrict(broken.JSON); err == nil || err.Error() == "" {
				t.Fatal("the strict decoder accepted a broken ClickHouse target")
			}
		})
	}
}

func TestGenerateRefusesOptionsThatCannotMakeAWorkingBoard(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"a database name that would inject SQL", Options{Database: "tokenwatch; DROP TABLE events"}, "database"},
		{"a datasource uid with a quote", Options{ClickHouseUID: `ch"`}, "clickhouse uid"},
		{"an SLO spec that does not validate", Options{SLO: &slo.Spec{}}, "slo spec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Generate(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Generate: got %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func TestGenerateIsAPureFunctionOfItsOptions(t *testing.T) {
	a, b := generate(t, Options{}), generate(t, Options{})
	for i := range a {
		if string(a[i].JSON) != string(b[i].JSON) {
			t.Errorf("%s differs between two runs with the same options", a[i].UID)
		}
	}
}
