package dashboards

import (
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/barchart"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/histogram"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Board uids and titles: stable, because links, bookmarks and the Grafana
// API's overwrite all key on the uid.
const (
	ExecutiveUID = "tokenwatch-executive"
	OnCallUID    = "tokenwatch-oncall"
	DebugUID     = "tokenwatch-debug"
)

// boardTag marks every tokenwatch board, for Grafana's search and link lists.
const boardTag = "tokenwatch"

// filterVariables are the dashboard variables every board has, in the order
// they appear: one per bounded label of the SLIs.
var filterVariables = []struct{ name, label, help string }{
	{"service", "Service", "who emitted the event: the IdP, a gateway, a service"},
	{"issuer", "Issuer", "the token's iss"},
	{"region", "Region", "where the emitter runs"},
}

// allValue is what a variable set to All interpolates to outside
// $__conditionalAll: ".*" makes PromQL matchers (service=~"$service") match
// every series, including the "other" bucket that label caps create, which a
// list of the values ClickHouse knows would miss. Grafana keeps the
// variable's value as $__all, so the ClickHouse plugin's $__conditionalAll
// still sees All and drops the SQL condition.
const allValue = ".*"

// sqlFilter restricts a table with service, issuer and region columns to the
// variables' selection; with All selected each condition becomes 1=1, so the
// query does not carry the whole list of values.
const sqlFilter = `$__conditionalAll(service IN (${service:singlequote}), $service)
  AND $__conditionalAll(issuer IN (${issuer:singlequote}), $issuer)
  AND $__conditionalAll(region IN (${region:singlequote}), $region)`

// serviceFilter is sqlFilter for tables that only know the service.
func serviceFilter(column string) string {
	return fmt.Sprintf("$__conditionalAll(%s IN (${service:singlequote}), $service)", column)
}

// promSelector is the PromQL label matchers for the variables.
const promSelector = `service=~"$service", issuer=~"$issuer", region=~"$region"`

// table qualifies a table with the database, so the queries do not depend on
// the datasource's default database.
func (o Options) table(name string) string { return o.Database + "." + name }

func (o Options) clickHouseRef() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr(ClickHousePluginID), Uid: cog.ToPtr(o.ClickHouseUID)}
}

func (o Options) prometheusRef() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr(PrometheusPluginID), Uid: cog.ToPtr(o.PrometheusUID)}
}

// sql is a ClickHouse target; the SQL is trimmed so the JSON reads well.
func (o Options) sql(refID string, format Format, sql string) *ClickHouseQueryBuilder {
	return NewClickHouseQueryBuilder(o.ClickHouseUID, strings.TrimSpace(sql)).RefId(refID).Format(format)
}

// promQL is a Prometheus range query drawn with the given legend.
func (o Options) promQL(refID, legend, expr string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().
		Datasource(o.prometheusRef()).
		RefId(refID).
		Expr(strings.TrimSpace(expr)).
		LegendFormat(legend).
		Range()
}

// variables are the service, issuer and region selectors, read from
// sli_minute (small: one row per minute and label set) for the time range.
func (o Options) variables() []cog.Builder[dashboard.VariableModel] {
	var out []cog.Builder[dashboard.VariableModel]
	for _, v := range filterVariables {
		q := fmt.Sprintf("SELECT DISTINCT %s FROM %s WHERE $__timeFilter(minute) AND %s != '' ORDER BY %s",
			v.name, o.table("sli_minute"), v.name, v.name)
		out = append(out, dashboard.NewQueryVariableBuilder(v.name).
			Label(v.label).
			Description(v.help).
			Datasource(o.clickHouseRef()).
			Query(dashboard.StringOrMap{String: cog.ToPtr(q)}).
			Definition(q).
			Multi(true).
			IncludeAll(true).
			AllValue(allValue).
			Current(dashboard.VariableOption{
				Selected: cog.ToPtr(true),
				Text:     dashboard.StringOrArrayOfString{String: cog.ToPtr("All")},
				Value:    dashboard.StringOrArrayOfString{ArrayOfString: []string{AllValue}},
			}).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc))
	}
	return out
}

// textVariable is a free-text box, for ids a responder pastes in.
func textVariable(name, label, help string) cog.Builder[dashboard.VariableModel] {
	return dashboard.NewTextBoxVariableBuilder(name).
		Label(label).
		Description(help).
		DefaultValue(dashboard.StringOrMap{String: cog.ToPtr("")})
}

// findingsAnnotation marks every finding on the time axis of every panel:
// from first_seen to last_seen, with what was found and what to do.
func (o Options) findingsAnnotation() cog.Builder[dashboard.AnnotationQuery] {
	q := fmt.Sprintf(`
SELECT
  first_seen AS time,
  greatest(last_seen, first_seen) AS timeEnd,
  concat(kind, ' (', severity, ') on ', if(service = '', 'all services', service), ': ', action) AS text,
  concat(kind, ',', severity, ',', service) AS tags
FROM %s FINAL
WHERE $__timeFilter(first_seen) AND %s
ORDER BY time`, o.table("findings"), serviceFilter("service"))
	return dashboard.NewAnnotationQueryBuilder().
		Name("Findings").
		Datasource(o.clickHouseRef()).
		Enable(true).
		IconColor("red").
		Target(o.sql("Anno", FormatTable, q))
}

// keyRotationsAnnotation marks each signing-key rotation, so a jump in
// bad_signature or unknown_kid can be read against it.
func (o Options) keyRotationsAnnotation() cog.Builder[dashboard.AnnotationQuery] {
	q := fmt.Sprintf(`
SELECT
  ts AS time,
  concat('key rotated by ', service, ' (', issuer, '): ', prev_kid, ' -> ', kid) AS text,
  concat('key_rotate,', issuer) AS tags
FROM %s
WHERE kind = 'key_rotate' AND $__timeFilter(ts) AND %s
ORDER BY time`, o.table("events"), sqlFilter)
	return dashboard.NewAnnotationQueryBuilder().
		Name("Key rotations").
		Datasource(o.clickHouseRef()).
		Enable(true).
		IconColor("orange").
		Target(o.sql("Anno", FormatTable, q))
}

// boardLinks lead from one board to the other two, keeping the time range
// and the variables, and to the runbooks.
func (o Options) boardLinks(self string) []cog.Builder[dashboard.DashboardLink] {
	var out []cog.Builder[dashboard.DashboardLink]
	for _, b := range []struct{ uid, title string }{
		{ExecutiveUID, "Executive"}, {OnCallUID, "On-call"}, {DebugUID, "Debug"},
	} {
		if b.uid == self {
			continue
		}
		out = append(out, dashboard.NewDashboardLinkBuilder(b.title).
			Type(dashboard.DashboardLinkTypeLink).
			Url("/d/"+b.uid).
			Icon("dashboard").
			Tooltip("tokenwatch "+strings.ToLower(b.title)+" board").
			KeepTime(true).
			IncludeVars(true))
	}
	return append(out, dashboard.NewDashboardLinkBuilder("Runbooks").
		Type(dashboard.DashboardLinkTypeLink).
		Url(o.RunbookBaseURL).
		Icon("doc").
		Tooltip("what to do when a tokenwatch alert fires").
		TargetBlank(true))
}

// runbookLinks are panel links to the runbooks of the alerts a panel explains.
func (o Options) runbookLinks(alertNames ...string) []cog.Builder[dashboard.DashboardLink] {
	out := make([]cog.Builder[dashboard.DashboardLink], 0, len(alertNames))
	for _, a := range alertNames {
		out = append(out, dashboard.NewDashboardLinkBuilder("Runbook: "+a).
			Type(dashboard.DashboardLinkTypeLink).
			Url(o.runbook(a)).
			TargetBlank(true))
	}
	return out
}

// newBoard starts a board with what all three share: tags, time, refresh,
// variables, the findings annotation and links.
func (o Options) newBoard(uid, title, description, from string) *dashboard.DashboardBuilder {
	b := dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{boardTag}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Timezone("utc").
		Time(from, "now").
		Refresh("1m").
		Links(o.boardLinks(uid)).
		Annotation(builtInAnnotation()).
		Annotation(o.findingsAnnotation())
	for _, v := range o.variables() {
		b.WithVariable(v)
	}
	return b
}

// builtInAnnotation is Grafana's own "Annotations & Alerts" entry, which
// Grafana adds to every board; declaring it keeps the JSON stable when
// Grafana saves the board back.
func builtInAnnotation() cog.Builder[dashboard.AnnotationQuery] {
	return dashboard.NewAnnotationQueryBuilder().
		Name("Annotations & Alerts").
		Datasource(common.DataSourceRef{Type: cog.ToPtr("grafana"), Uid: cog.ToPtr("-- Grafana --")}).
		Enable(true).
		Hide(true).
		IconColor("rgba(0, 211, 255, 1)").
		Type("dashboard").
		BuiltIn(1)
}

// Threshold helpers: a floor (good at or above, e.g. a success ratio's
// target) and a ceiling (good below, e.g. a latency threshold).

func floorThresholds(target float64) *dashboard.ThresholdsConfigBuilder {
	return dashboard.NewThresholdsConfigBuilder().
		Mode(dashboard.ThresholdsModeAbsolute).
		Steps([]dashboard.Threshold{{Value: nil, Color: "red"}, {Value: cog.ToPtr(target), Color: "green"}})
}

func ceilingThresholds(limits ...float64) *dashboard.ThresholdsConfigBuilder {
	steps := []dashboard.Threshold{{Value: nil, Color: "green"}}
	colors := []string{"red", "dark-red"}
	if len(limits) > 1 {
		colors = []string{"orange", "red", "dark-red"}
	}
	for i, l := range limits {
		steps = append(steps, dashboard.Threshold{Value: cog.ToPtr(l), Color: colors[min(i, len(colors)-1)]})
	}
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(steps)
}

// thresholdLines draws a time series panel's thresholds as dashed lines.
func thresholdLines() *common.GraphThresholdsStyleConfigBuilder {
	return common.NewGraphThresholdsStyleConfigBuilder().Mode(common.GraphThresholdsStyleModeDashed)
}

// sqlList writes outcomes as a SQL list: 'a', 'b'. They come from the
// validated SLO spec (event outcome names), so they need no escaping beyond
// refusing a quote, which Validate's outcome check already does.
func sqlList(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = "'" + strings.ReplaceAll(v, "'", "") + "'"
	}
	return strings.Join(q, ", ")
}

// Panel constructors with the options the SDK leaves at their zero value
// but Grafana's editor would set: a visible legend and a shared tooltip.

func newTimeseries(title string) *timeseries.PanelBuilder {
	return timeseries.NewPanelBuilder().Title(title).Legend(legend()).Tooltip(tooltip())
}

func newBarchart(title string) *barchart.PanelBuilder {
	return barchart.NewPanelBuilder().Title(title).Legend(legend()).Tooltip(tooltip())
}

func newHistogram(title string) *histogram.PanelBuilder {
	return histogram.NewPanelBuilder().Title(title).Legend(legend()).Tooltip(tooltip())
}

func legend() *common.VizLegendOptionsBuilder {
	return common.NewVizLegendOptionsBuilder().
		ShowLegend(true).
		DisplayMode(common.LegendDisplayModeList).
		Placement(common.LegendPlacementBottom)
}

func tooltip() *common.VizTooltipOptionsBuilder {
	return common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending)
}

// placeLinksAboveThePanels drops the SDK's default link placement
// ("inControlsMenu"), which newer Grafana versions read as "hide in the
// controls menu": the links between boards and to the runbooks belong in
// plain sight.
func placeLinksAboveThePanels(d *dashboard.Dashboard) {
	for i := range d.Links {
		d.Links[i].Placement = nil
	}
	for i := range d.Panels {
		if p := d.Panels[i].Panel; p != nil {
			for j := range p.Links {
				p.Links[j].Placement = nil
			}
		}
	}
}

// newTable is a table without a footer; the SDK's default footer has no
// reducer, which Grafana's schema requires.
func newTable(title string) *table.PanelBuilder {
	return table.NewPanelBuilder().Title(title).
		Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{"sum"}))
}

// newStat shows the last value of each field, which for a one-row table is
// the value; the SDK leaves the reducer list and orientation empty.
func newStat(title string) *stat.PanelBuilder {
	return stat.NewPanelBuilder().Title(title).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Values(false).Calcs([]string{"lastNotNull"})).
		Orientation(common.VizOrientationAuto)
}
