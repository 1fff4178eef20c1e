package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/bargauge"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/tokenwatch/tokenwatch/alerts"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/slo"
)

// executive is the board for people who ask "are sessions healthy, and are
// we under attack?": a day of validation success against its objective,
// how fast revokes take effect, issuance against active sessions, and the
// security findings. Numbers an executive quotes come from ClickHouse (every
// stored event); the "now" figures come from the same Prometheus rules the
// alerts use.
func (o Options) executive() *dashboard.DashboardBuilder {
	validation := o.sloFor(slo.SLIValidationGoodRatio)
	propagation := o.sloFor(slo.SLIRevocationPropagation)

	b := o.newBoard(ExecutiveUID, "tokenwatch executive",
		"Session-token health at a glance: validation success against its SLO, revocation propagation, issuance and active sessions, and security findings.",
		"now-24h")

	b.WithRow(dashboard.NewRowBuilder("Validation success"))
	b.WithPanel(newStat("Validation good ratio, last 24 h").
		Description(fmt.Sprintf("Validations that did not fail because of the auth system (bad outcomes: %s) over all validations, from every stored event. The objective (%s) is %s.",
			joinOutcomes(validation.Bad), validation.Name, percent(validation.Target))).
		Datasource(o.clickHouseRef()).
		TimeFrom("24h").
		Unit("percentunit").
		Decimals(3).
		Thresholds(floorThresholds(validation.Target)).
		ColorMode(common.BigValueColorModeBackground).
		GraphMode(common.BigValueGraphModeNone).
		Links(o.runbookLinks(alerts.SLOAlertName(validation.Name))).
		Span(6).Height(6).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT 1 - sumIf(events, outcome IN (%s)) / sum(events) AS "good ratio"
FROM %s
WHERE kind = 'validate' AND $__timeFilter(minute) AND %s`,
			sqlList(validation.Bad), o.table("sli_minute"), sqlFilter))))
	b.WithPanel(newTimeseries("Validation success, 24 h trend").
		Description(fmt.Sprintf("The validation good ratio per service, per interval, from every stored event; the dashed line is the %s objective (%s).",
			validation.Name, percent(validation.Target))).
		Datasource(o.clickHouseRef()).
		TimeFrom("24h").
		Interval("5m").
		Unit("percentunit").
		Decimals(3).
		Thresholds(floorThresholds(validation.Target)).
		ThresholdsStyle(thresholdLines()).
		Links(o.runbookLinks(alerts.SLOAlertName(validation.Name))).
		Span(12).Height(6).
		WithTarget(o.sql("A", FormatTimeSeries, fmt.Sprintf(`
SELECT
  $__timeInterval(minute) AS time,
  service,
  1 - sumIf(events, outcome IN (%s)) / sum(events) AS "good ratio"
FROM %s
WHERE kind = 'validate' AND $__timeFilter(minute) AND %s
GROUP BY time, service
ORDER BY time`, sqlList(validation.Bad), o.table("sli_minute"), sqlFilter))))
	b.WithPanel(newStat("Error budget burn rate now (1 h)").
		Description("How fast each SLO spends its error budget over the last hour, from the recording rules the alerts use: 1 spends exactly the budget over the SLO window; above the page factor the on-call is paged.").
		Datasource(o.prometheusRef()).
		Unit("x").
		Decimals(1).
		Thresholds(ceilingThresholds(1, o.pageFactor())).
		ColorMode(common.BigValueColorModeBackground).
		GraphMode(common.BigValueGraphModeArea).
		Span(6).Height(6).
		Targets(o.burnTargets(o.BurnWindows[0].Long, true)))

	b.WithRow(dashboard.NewRowBuilder("Revocation propagation"))
	b.WithPanel(newHistogram("Revocation propagation distribution").
		Description(fmt.Sprintf("Per revoke: the time until every service that saw a covered token stopped accepting it (the worst service's lag). Filtered by the service that issued the revoke. The objective (%s) is %s within %s.",
			propagation.Name, percent(propagation.Target), seconds(propagation.ThresholdSeconds))).
		Datasource(o.clickHouseRef()).
		Unit("s").
		Thresholds(ceilingThresholds(propagation.ThresholdSeconds)).
		Links(o.runbookLinks(alerts.SLOAlertName(propagation.Name), alerts.FindingAlertName(finding.SlowRevocation))).
		Span(10).Height(7).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT max(propagation_s) AS "propagation (s)"
FROM %s FINAL
WHERE $__timeFilter(revoked_at) AND %s
GROUP BY revoked_at, target, target_id`, o.table("revocations"), serviceFilter("revoke_service")))))
	b.WithPanel(newStat("Revokes propagated in time").
		Description(fmt.Sprintf("Share of revokes that every service honoured within %s, and how many were never seen propagated within the horizon.", seconds(propagation.ThresholdSeconds))).
		Datasource(o.clickHouseRef()).
		Thresholds(floorThresholds(propagation.Target)).
		ColorMode(common.BigValueColorModeValue).
		GraphMode(common.BigValueGraphModeNone).
		Links(o.runbookLinks(alerts.FindingAlertName(finding.SlowRevocation))).
		Span(4).Height(7).
		OverrideByName("not propagated", []dashboard.DynamicConfigValue{
			{Id: "unit", Value: "none"},
			{Id: "thresholds", Value: map[string]any{"mode": "absolute", "steps": []map[string]any{{"value": nil, "color": "green"}, {"value": 1, "color": "red"}}}},
		}).
		OverrideByName("in time", []dashboard.DynamicConfigValue{{Id: "unit", Value: "percentunit"}}).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT
  countIf(propagated AND propagation_s <= %s) / count() AS "in time",
  countIf(NOT propagated) AS "not propagated"
FROM (
  SELECT min(revoke_propagated) AS propagated, max(propagation_s) AS propagation_s
  FROM %s FINAL
  WHERE $__timeFilter(revoked_at) AND %s
  GROUP BY revoked_at, target, target_id
)`, num(propagation.ThresholdSeconds), o.table("revocations"), serviceFilter("revoke_service")))))
	b.WithPanel(newTimeseries("Revocation propagation p50 / p95").
		Description("Quantiles of per-revoke propagation from tokenwatch's histogram (by the service that issued the revoke); the dashed line is the objective's threshold.").
		Datasource(o.prometheusRef()).
		Unit("s").
		Thresholds(ceilingThresholds(propagation.ThresholdSeconds)).
		ThresholdsStyle(thresholdLines()).
		Span(10).Height(7).
		WithTarget(o.promQL("A", "p50", `histogram_quantile(0.5, sum by (le) (rate(tokenwatch_revocation_propagation_seconds_bucket{service=~"$service"}[$__rate_interval])))`)).
		WithTarget(o.promQL("B", "p95", `histogram_quantile(0.95, sum by (le) (rate(tokenwatch_revocation_propagation_seconds_bucket{service=~"$service"}[$__rate_interval])))`)))

	b.WithRow(dashboard.NewRowBuilder("Sessions"))
	b.WithPanel(newTimeseries("Issuance vs active sessions").
		Description("Tokens issued per interval against the sessions that did anything in that interval (distinct session ids over all events). Issuance that grows faster than active sessions is a client failing to reuse its tokens, or an attacker minting them.").
		Datasource(o.clickHouseRef()).
		Interval("1m").
		Unit("short").
		Span(24).Height(7).
		OverrideByName("issued", []dashboard.DynamicConfigValue{{Id: "custom.drawStyle", Value: "bars"}}).
		WithTarget(o.sql("A", FormatTimeSeries, fmt.Sprintf(`
SELECT
  $__timeInterval(ts) AS time,
  countIf(kind = 'issue') AS issued,
  uniqIf(session_id, session_id != '') AS "active sessions"
FROM %s
WHERE $__timeFilter(ts) AND %s
GROUP BY time
ORDER BY time`, o.table("events"), sqlFilter))))

	b.WithRow(dashboard.NewRowBuilder("Security"))
	b.WithPanel(newTimeseries("Security anomalies").
		Description("Findings opened per interval, by kind: token replay, refresh-token reuse and anomalies, slow revocations, key-rotation breaks and clock skew. One incident is one finding.").
		Datasource(o.clickHouseRef()).
		Interval("5m").
		Unit("short").
		DrawStyle(common.GraphDrawStyleBars).
		FillOpacity(80).
		Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal)).
		Links(o.findingRunbooks()).
		Span(12).Height(8).
		WithTarget(o.sql("A", FormatTimeSeries, fmt.Sprintf(`
SELECT $__timeInterval(first_seen) AS time, kind, count() AS findings
FROM %s FINAL
WHERE $__timeFilter(first_seen) AND %s
GROUP BY time, kind
ORDER BY time`, o.table("findings"), serviceFilter("service")))))
	b.WithPanel(newTable("Findings by kind and severity").
		Description("Findings first seen in the time range: how many, how many are still open, and how many services they touched.").
		Datasource(o.clickHouseRef()).
		Links(o.findingRunbooks()).
		Span(6).Height(8).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT kind, severity, count() AS findings, countIf(status = 'open') AS open, uniqExact(service) AS services
FROM %s FINAL
WHERE $__timeFilter(first_seen) AND %s
GROUP BY kind, severity
ORDER BY findings DESC`, o.table("findings"), serviceFilter("service")))))
	b.WithPanel(bargauge.NewPanelBuilder().
		Title("Open findings now").
		Description("Findings open right now, by kind, from tokenwatch's gauge.").
		Datasource(o.prometheusRef()).
		Unit("short").
		Orientation(common.VizOrientationHorizontal).
		DisplayMode(common.BarGaugeDisplayModeGradient).
		Thresholds(ceilingThresholds(1)).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"})).
		Span(6).Height(8).
		WithTarget(o.promQL("A", "{{kind}}", `sum by (kind) (tokenwatch_findings_open)`).Instant()))
	return b
}

// findingRunbooks links a security panel to the runbook of every finding
// kind it can show.
func (o Options) findingRunbooks() []cog.Builder[dashboard.DashboardLink] {
	var names []string
	for _, k := range finding.Kinds() {
		names = append(names, alerts.FindingAlertName(k))
	}
	return o.runbookLinks(names...)
}
