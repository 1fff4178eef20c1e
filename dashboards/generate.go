package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Board is one generated dashboard: what Grafana keys it by, and its JSON
// model as Grafana's file provisioning and HTTP API take it.
type Board struct {
	UID      string
	Title    string
	FileName string // e.g. tokenwatch-oncall.json
	JSON     []byte
}

// Generate builds the three boards from opts. It does no I/O: the same
// options always give the same bytes.
func Generate(opts Options) ([]Board, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	var out []Board
	for _, build := range []func() *dashboard.DashboardBuilder{o.executive, o.onCall, o.debug} {
		d, err := build().Build()
		if err != nil {
			return nil, fmt.Errorf("dashboards: building a board: %w", err)
		}
		numberPanels(&d)
		placeLinksAboveThePanels(&d)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false) // SQL's < and > stay readable in the files
		enc.SetIndent("", "  ")
		if err := enc.Encode(d); err != nil {
			return nil, fmt.Errorf("dashboards: encoding %s: %w", *d.Uid, err)
		}
		out = append(out, Board{UID: *d.Uid, Title: *d.Title, FileName: *d.Uid + ".json", JSON: buf.Bytes()})
	}
	return out, nil
}

// numberPanels gives every panel and row a unique id in layout order;
// Grafana needs them unique within a board and the SDK leaves them 0.
func numberPanels(d *dashboard.Dashboard) {
	id := uint32(0)
	for i := range d.Panels {
		id++
		switch {
		case d.Panels[i].Panel != nil:
			pid := id
			d.Panels[i].Panel.Id = &pid
		case d.Panels[i].RowPanel != nil:
			d.Panels[i].RowPanel.Id = id
			for j := range d.Panels[i].RowPanel.Panels {
				id++
				pid := id
				d.Panels[i].RowPanel.Panels[j].Id = &pid
			}
		}
	}
}

// Query is one query a board runs: a panel's target, a variable's options
// query or an annotation query, as it is written in the JSON (variables and
// macros unexpanded).
type Query struct {
	Board string // board uid
	// Panel is the panel's title, or "variable <name>" / "annotation <name>".
	Panel string
	// Source is "panel", "variable" or "annotation".
	Source     string
	RefID      string
	Datasource string // plugin id: grafana-clickhouse-datasource or prometheus
	SQL        string // ClickHouse rawSql
	Expr       string // PromQL
	Format     Format // ClickHouse result shape
	// MinInterval is the panel's minimum interval ("1m"): Grafana never
	// hands the panel's queries a smaller $__interval.
	MinInterval string
	Instant     bool // a Prometheus instant query
}

// ExpandSQL is the SQL the ClickHouse plugin would run for this query over
// [from, to] with the given variables (see ExpandMacros), honouring the
// panel's minimum interval.
func (q Query) ExpandSQL(from, to time.Time, vars map[string]string) string {
	if _, set := vars[IntervalVar]; !set && q.MinInterval != "" {
		if min, err := time.ParseDuration(q.MinInterval); err == nil && min > grafanaInterval(from, to) {
			withInterval := make(map[string]string, len(vars)+1)
			for k, v := range vars {
				withInterval[k] = v
			}
			withInterval[IntervalVar] = q.MinInterval
			vars = withInterval
		}
	}
	return ExpandMacros(q.SQL, from, to, vars)
}

// boardModel is the part of Grafana's dashboard JSON that holds queries.
type boardModel struct {
	UID        string       `json:"uid"`
	Panels     []panelModel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Datasource *datasourceRef  `json:"datasource"`
			Query      json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string         `json:"name"`
			Datasource *datasourceRef `json:"datasource"`
			Target     *targetModel   `json:"target"`
		} `json:"list"`
	} `json:"annotations"`
}

type panelModel struct {
	Title      string         `json:"title"`
	Type       string         `json:"type"`
	Interval   string         `json:"interval"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []targetModel  `json:"targets"`
	Panels     []panelModel   `json:"panels"` // a collapsed row's panels
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type targetModel struct {
	RefID      string         `json:"refId"`
	Datasource *datasourceRef `json:"datasource"`
	RawSQL     string         `json:"rawSql"`
	Expr       string         `json:"expr"`
	Format     json.Number    `json:"format"`
	Instant    bool           `json:"instant"`
}

// Queries lists every query of the board, read back from its JSON so it is
// exactly what Grafana would run. It is nil for JSON that is not a dashboard
// model, which Generate never makes.
func (b Board) Queries() []Query {
	var m boardModel
	if err := json.Unmarshal(b.JSON, &m); err != nil {
		return nil
	}
	var out []Query
	target := func(where, title, interval string, t targetModel) Query {
		q := Query{Board: m.UID, Panel: title, Source: where, RefID: t.RefID, SQL: t.RawSQL, Expr: t.Expr,
			MinInterval: interval, Instant: t.Instant}
		if t.Datasource != nil {
			q.Datasource = t.Datasource.Type
		}
		if f, err := t.Format.Int64(); err == nil {
			q.Format = Format(f)
		}
		return q
	}
	var walk func(ps []panelModel)
	walk = func(ps []panelModel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out = append(out, target("panel", p.Title, p.Interval, t))
			}
			walk(p.Panels)
		}
	}
	walk(m.Panels)
	for _, v := range m.Templating.List {
		if v.Type != "query" {
			continue
		}
		var sql string
		_ = json.Unmarshal(v.Query, &sql) // our variables' queries are SQL text; an object stays empty and fails the tests
		q := Query{Board: m.UID, Panel: "variable " + v.Name, Source: "variable", SQL: sql, Format: FormatTable}
		if v.Datasource != nil {
			q.Datasource = v.Datasource.Type
		}
		out = append(out, q)
	}
	for _, a := range m.Annotations.List {
		if a.Target == nil || (a.Target.RawSQL == "" && a.Target.Expr == "") {
			continue // Grafana's built-in annotations have no query
		}
		out = append(out, target("annotation", "annotation "+a.Name, "", *a.Target))
	}
	return out
}

// promDefaults are what PromQueries substitutes for Grafana's variables:
// every label value, and windows that work on any scrape interval.
var promDefaults = strings.NewReplacer(
	"$__rate_interval", "5m",
	"$__interval", "1m",
	"$__range", "1h",
	`"$service"`, `".*"`,
	`"$issuer"`, `".*"`,
	`"$region"`, `".*"`,
)

// PromQueries lists the distinct PromQL expressions of the boards, with the
// dashboard variables set to All and Grafana's interval variables set to
// fixed windows, so each can be sent to Prometheus as it is.
func PromQueries(boards []Board) []string {
	seen := map[string]bool{}
	var out []string
	for _, b := range boards {
		for _, q := range b.Queries() {
			if q.Datasource != PrometheusPluginID {
				continue
			}
			e := promDefaults.Replace(q.Expr)
			if !seen[e] {
				seen[e] = true
				out = append(out, e)
			}
		}
	}
	sort.Strings(out)
	return out
}
