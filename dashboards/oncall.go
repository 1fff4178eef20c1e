package dashboards

import (
	"fmt"

	"time"

	"github.com/grafana/grafana-foundation-sdk/go/bargauge"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/tokenwatch/tokenwatch/alerts"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/slo"
)

// onCall is the board a paged responder opens: is validation failing right
// now and how (the error tail), is introspection slow or failing, did a key
// rotation break validators, which services are hurt, and how fast each SLO
// burns its budget, on the same windows and factors the alerts page on.
func (o Options) onCall() *dashboard.DashboardBuilder {
	validation := o.sloFor(slo.SLIValidationGoodRatio)
	latency := o.sloFor(slo.SLIValidationLatency)

	b := o.newBoard(OnCallUID, "tokenwatch on-call",
		"For the responder: validation success and its error tail, introspection, key rotations against validation failures, affected services, and error-budget burn rates.",
		"now-3h").
		Annotation(o.keyRotationsAnnotation())

	b.WithRow(dashboard.NewRowBuilder("Validation now"))
	b.WithPanel(newTimeseries("Validation good ratio, 5 m").
		Description(fmt.Sprintf("1 minus the %s error ratio over 5 minutes, per service, issuer and region, from the recording rule the burn-rate alerts read; the dashed line is the objective (%s).",
			validation.Name, percent(validation.Target))).
		Datasource(o.prometheusRef()).
		Unit("percentunit").
		Decimals(3).
		Thresholds(floorThresholds(validation.Target)).
		ThresholdsStyle(thresholdLines()).
		Links(o.runbookLinks(alerts.SLOAlertName(validation.Name))).
		Span(12).Height(8).
		WithTarget(o.promQL("A", "{{service}} {{issuer}} {{region}}",
			fmt.Sprintf("1 - %s{%s}", alerts.ErrorRatioRecord(5*time.Minute), sloSelector(validation)))))
	b.WithPanel(newTimeseries("Error tail: failed validations by outcome").
		Description(fmt.Sprintf("Validations per second that were not ok, by outcome. %s are the auth system failing (they burn the budget); the rest are the system working (expired, revoked, ... tokens).",
			joinOutcomes(validation.Bad))).
		Datasource(o.prometheusRef()).
		Unit("reqps").
		DrawStyle(common.GraphDrawStyleBars).
		FillOpacity(80).
		Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal)).
		Span(12).Height(8).
		WithTarget(o.promQL("A", "{{outcome}}",
			fmt.Sprintf(`sum by (outcome) (rate(tokenwatch_validations_total{%s, outcome!="ok"}[5m]))`, promSelector))))
	b.WithPanel(newTable("Error tail: where validations fail").
		Description("The (service, issuer, region, outcome) combinations with the most failed validations in the time range, from every stored event, with their share of that combination's validations.").
		Datasource(o.clickHouseRef()).
		Span(12).Height(8).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT service, issuer, region, outcome, failures, round(failures / total, 5) AS share
FROM (
  SELECT service, issuer, region, outcome, sum(events) AS failures,
    sum(sum(events)) OVER (PARTITION BY service, issuer, region) AS total
  FROM %s
  WHERE kind = 'validate' AND $__timeFilter(minute) AND %s
  GROUP BY service, issuer, region, outcome
)
WHERE outcome != 'ok'
ORDER BY failures DESC
LIMIT 20`, o.table("sli_minute"), sqlFilter))))
	b.WithPanel(newTimeseries("Validation latency p50 / p95 / p99").
		Description(fmt.Sprintf("From tokenwatch's latency histogram; the dashed line is the %s threshold (%s, %s of validations under it).",
			latency.Name, seconds(latency.ThresholdSeconds), percent(latency.Target))).
		Datasource(o.prometheusRef()).
		Unit("s").
		Thresholds(ceilingThresholds(latency.ThresholdSeconds)).
		ThresholdsStyle(thresholdLines()).
		Links(o.runbookLinks(alerts.SLOAlertName(latency.Name))).
		Span(12).Height(8).
		Targets(quantileTargets(o, "tokenwatch_validation_latency_seconds_bucket", promSelector)))

	b.WithRow(dashboard.NewRowBuilder("Introspection"))
	b.WithPanel(newTimeseries("Introspection latency p50 / p95 / p99").
		Description("Latency of token introspection calls, from the per-minute digests in ClickHouse.").
		Datasource(o.clickHouseRef()).
		Interval("1m").
		Unit("ms").
		Span(8).Height(8).
		WithTarget(o.sql("A", FormatTimeSeries, fmt.Sprintf(`
SELECT time, q[1] AS p50, q[2] AS p95, q[3] AS p99
FROM (
  SELECT $__timeInterval(minute) AS time, quantilesTDigestMerge(0.5, 0.95, 0.99)(latency_q) AS q
  FROM %s
  WHERE kind = 'introspect' AND $__timeFilter(minute) AND %s
  GROUP BY time
)
ORDER BY time`, o.table("sli_minute"), sqlFilter))))
	b.WithPanel(newTimeseries("Introspection error rate").
		Description("Introspection calls that ended in error over all introspection calls (M7), per service.").
		Datasource(o.prometheusRef()).
		Unit("percentunit").
		Span(8).Height(8).
		WithTarget(o.promQL("A", "{{service}}", fmt.Sprintf(`
sum by (service) (rate(tokenwatch_introspections_total{%[1]s, outcome="error"}[$__rate_interval]))
/
sum by (service) (rate(tokenwatch_introspections_total{%[1]s}[$__rate_interval]))`, promSelector))))
	b.WithPanel(newTimeseries("Introspection errors by service").
		Description("Introspection calls per interval that did not succeed, by service and outcome, from every stored event.").
		Datasource(o.clickHouseRef()).
		Interval("1m").
		Unit("short").
		DrawStyle(common.GraphDrawStyleBars).
		FillOpacity(80).
		Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal)).
		Span(8).Height(8).
		WithTarget(o.sql("A", FormatTimeSeries, fmt.Sprintf(`
SELECT $__timeInterval(minute) AS time, concat(service, ' ', outcome) AS series, sum(events) AS calls
FROM %s
WHERE kind = 'introspect' AND outcome != 'ok' AND $__timeFilter(minute) AND %s
GROUP BY time, series
ORDER BY time`, o.table("sli_minute"), sqlFilter))))

	b.WithRow(dashboard.NewRowBuilder("Key rotations"))
	b.WithPanel(newTimeseries("Key rotations against validation failures").
		Description("bad_signature and unknown_kid validations per interval (lines) against signing-key rotations (bars). Failures that jump right after a rotation mean validators did not get the new key.").
		Datasource(o.clickHouseRef()).
		Interval("1m").
		Unit("short").
		Links(o.runbookLinks(alerts.FindingAlertName(finding.KeyRotationBreak))).
		Span(14).Height(8).
		OverrideByQuery("B", []dashboard.DynamicConfigValue{
			{Id: "custom.drawStyle", Value: "bars"},
			{Id: "custom.fillOpacity", Value: 60},
			{Id: "custom.axisPlacement", Value: "right"},
			{Id: "color", Value: map[string]any{"mode": "fixed", "fixedColor": "orange"}},
		}).
		WithTarget(o.sql("A", FormatTimeSeries, fmt.Sprintf(`
SELECT $__timeInterval(minute) AS time, outcome, sum(events) AS failures
FROM %s
WHERE kind = 'validate' AND outcome IN ('bad_signature', 'unknown_kid') AND $__timeFilter(minute) AND %s
GROUP BY time, outcome
ORDER BY time`, o.table("sli_minute"), sqlFilter))).
		WithTarget(o.sql("B", FormatTimeSeries, fmt.Sprintf(`
SELECT $__timeInterval(ts) AS time, count() AS "key rotations"
FROM %s
WHERE kind = 'key_rotate' AND $__timeFilter(ts) AND %s
GROUP BY time
ORDER BY time`, o.table("events"), sqlFilter))))
	b.WithPanel(newTable("Recent key rotations").
		Description("Each rotation with the bad_signature and unknown_kid validations of tokens from the same issuer in the 15 minutes before and after it.").
		Datasource(o.clickHouseRef()).
		Links(o.runbookLinks(alerts.FindingAlertName(finding.KeyRotationBreak))).
		Span(10).Height(8).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT
  r.ts AS rotated_at, r.service AS rotated_by, r.issuer AS rotated_issuer, r.prev_kid AS previous_kid, r.kid AS new_kid,
  countIf(f.ts >= r.ts - INTERVAL 15 MINUTE AND f.ts < r.ts) AS failures_15m_before,
  countIf(f.ts >= r.ts AND f.ts < r.ts + INTERVAL 15 MINUTE) AS failures_15m_after
FROM (
  SELECT ts, service, issuer, kid, prev_kid FROM %[1]s
  WHERE kind = 'key_rotate' AND $__timeFilter(ts) AND %[2]s
) AS r
LEFT JOIN (
  SELECT ts, issuer FROM %[1]s
  WHERE kind = 'validate' AND outcome IN ('bad_signature', 'unknown_kid')
    AND ts >= $__fromTime - INTERVAL 15 MINUTE AND ts <= $__toTime + INTERVAL 15 MINUTE
) AS f ON f.issuer = r.issuer
GROUP BY rotated_at, rotated_by, rotated_issuer, previous_kid, new_kid
ORDER BY rotated_at DESC
LIMIT 50`, o.table("events"), sqlFilter))))

	b.WithRow(dashboard.NewRowBuilder("Audience misuse"))
	b.WithPanel(newTimeseries("Audience misuse").
		Description("Validations per interval that accepted a token issued for another audience (the service does not check aud), and bad_audience rejections, by service. A service on the first line needs its audience check; bad_audience spread over several services for one token is a token being tried across them (the findings table).").
		Datasource(o.clickHouseRef()).
		Interval("1m").
		Unit("short").
		Links(o.runbookLinks(alerts.FindingAlertName(finding.AudienceMisuse))).
		Span(14).Height(8).
		WithTarget(o.sql("A", FormatTimeSeries, fmt.Sprintf(`
SELECT $__timeInterval(ts) AS time,
  concat(service, if(outcome = 'ok', ' accepted another audience', ' bad_audience')) AS series, count() AS validations
FROM %s
WHERE kind = 'validate' AND $__timeFilter(ts) AND %s
  AND (outcome = 'bad_audience'
    OR (outcome = 'ok' AND audience != '' AND expected_audience != '' AND NOT has(splitByChar(',', audience), expected_audience)))
GROUP BY time, series
ORDER BY time`, o.table("events"), sqlFilter))))
	b.WithPanel(newTable("Audience misuse findings").
		Description("audience_misuse findings in the time range: a service accepting other audiences (key = the service) or one token tried across services (key = the token id), with how many validations and the suggested action.").
		Datasource(o.clickHouseRef()).
		Links(o.runbookLinks(alerts.FindingAlertName(finding.AudienceMisuse))).
		Span(10).Height(8).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT status, JSONExtractString(evidence, 'shape') AS shape, service, token_id, first_seen, last_seen, count, action
FROM %s FINAL
WHERE kind = 'audience_misuse' AND last_seen >= $__fromTime AND %s
ORDER BY last_seen DESC
LIMIT 50`, o.table("findings"), serviceFilter("service")))))

	b.WithRow(dashboard.NewRowBuilder("Affected services"))
	b.WithPanel(bargauge.NewPanelBuilder().
		Title("Affected services by auth errors").
		Description(fmt.Sprintf("Services ranked by failed token checks (validate, introspect, refresh) in the time range: auth-system errors (%s) and token rejections returned as 401.",
			joinOutcomes(validation.Bad))).
		Datasource(o.clickHouseRef()).
		Unit("short").
		Orientation(common.VizOrientationHorizontal).
		DisplayMode(common.BarGaugeDisplayModeGradient).
		Thresholds(ceilingThresholds(1)).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Values(true).Calcs([]string{}).Fields("/^auth errors$|^401 rejections$/")).
		Span(12).Height(9).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT service,
  sumIf(events, outcome IN (%s)) AS "auth errors",
  sum(rejections_401) AS "401 rejections"
FROM %s
WHERE kind IN ('validate', 'introspect', 'refresh') AND $__timeFilter(minute) AND %s
GROUP BY service
HAVING "auth errors" + "401 rejections" > 0
ORDER BY "auth errors" DESC, "401 rejections" DESC
LIMIT 20`, sqlList(validation.Bad), o.table("sli_minute"), sqlFilter))))
	b.WithPanel(newTimeseries("Token 401 rate by service").
		Description("Token rejections returned as 401 over all requests (M6), per service.").
		Datasource(o.prometheusRef()).
		Unit("percentunit").
		Span(12).Height(9).
		WithTarget(o.promQL("A", "{{service}}", fmt.Sprintf(`
sum by (service) (rate(tokenwatch_rejections_401_total{%[1]s}[$__rate_interval]))
/
sum by (service) (rate(tokenwatch_requests_total{%[1]s}[$__rate_interval]))`, promSelector))))

	b.WithRow(dashboard.NewRowBuilder("Findings"))
	b.WithPanel(newTable("Open findings").
		Description("Findings still open, most severe and most recent first, with the suggested action. The session link opens the debug board on that session.").
		Datasource(o.clickHouseRef()).
		Links(o.findingRunbooks()).
		Span(24).Height(8).
		OverrideByName("session_id", []dashboard.DynamicConfigValue{{Id: "links", Value: []map[string]any{{
			"title": "Open the session on the debug board",
			"url":   "/d/" + DebugUID + "?var-session_id=${__value.raw}&${__url_time_range}",
		}}}}).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT severity, kind, service, first_seen, last_seen, count, session_id, client_id, kid, action
FROM %s FINAL
WHERE status = 'open' AND last_seen >= $__fromTime AND %s
ORDER BY severity = 'page' DESC, last_seen DESC
LIMIT 100`, o.table("findings"), serviceFilter("service")))))

	b.WithRow(dashboard.NewRowBuilder("Error budget burn"))
	for _, w := range o.BurnWindows {
		factor := w.Factor(o.SLO.SLOs[0].Window.Duration)
		b.WithPanel(newTimeseries(fmt.Sprintf("Burn rate over %s and %s (%s at %s×)", slo.FormatDuration(w.Long), slo.FormatDuration(w.Short), w.Severity, num(roundTo(factor, 3)))).
			Description(fmt.Sprintf("Each SLO's error ratio over %s and %s divided by its error budget, from the recording rules. The %s alert fires while both windows are above %s× (the dashed line), which spends %s of a %s budget in %s.",
				slo.FormatDuration(w.Long), slo.FormatDuration(w.Short), w.Severity, num(roundTo(factor, 3)), percent(w.BudgetFraction),
				slo.FormatDuration(o.SLO.SLOs[0].Window.Duration), slo.FormatDuration(w.Long))).
			Datasource(o.prometheusRef()).
			Unit("x").
			Thresholds(ceilingThresholds(factor)).
			ThresholdsStyle(thresholdLines()).
			Links(o.sloRunbooks()).
			Span(12).Height(8).
			Targets(o.burnPairTargets(w)))
	}
	return b
}

// burnPairTargets draws every SLO's burn rate over a condition's long and
// short windows.
func (o Options) burnPairTargets(w alerts.BurnWindow) []cog.Builder[variants.Dataquery] {
	var out []cog.Builder[variants.Dataquery]
	for i := range o.SLO.SLOs {
		s := &o.SLO.SLOs[i]
		for _, d := range []time.Duration{w.Long, w.Short} {
			out = append(out, o.promQL(refID(len(out)), s.Name+" "+slo.FormatDuration(d), burnRate(s, d)))
		}
	}
	return out
}

// sloRunbooks links the burn-rate panels to every SLO alert's runbook.
func (o Options) sloRunbooks() []cog.Builder[dashboard.DashboardLink] {
	var names []string
	for _, s := range o.SLO.SLOs {
		names = append(names, alerts.SLOAlertName(s.Name))
	}
	return o.runbookLinks(names...)
}

// quantileTargets are p50, p95 and p99 of a Prometheus histogram.
func quantileTargets(o Options, bucket, selector string) []cog.Builder[variants.Dataquery] {
	var out []cog.Builder[variants.Dataquery]
	for i, q := range []struct{ phi, legend string }{{"0.5", "p50"}, {"0.95", "p95"}, {"0.99", "p99"}} {
		out = append(out, o.promQL(refID(i), q.legend,
			fmt.Sprintf("histogram_quantile(%s, sum by (le) (rate(%s{%s}[$__rate_interval])))", q.phi, bucket, selector)))
	}
	return out
}
