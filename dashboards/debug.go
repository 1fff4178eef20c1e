package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/tokenwatch/tokenwatch/alerts"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/slo"
)

// sessionFilter narrows a query to the session in the session_id box, or
// keeps every session while the box is empty.
const sessionFilter = `$__conditionalAll(session_id = ${session_id:sqlstring}, $session_id)`

// debug is the board for digging into one case: every event of one request
// or session in order, refresh behaviour per client, what tokens look like
// (size, lifetime, claims), and how revokes propagate against the caches
// that delay them. Everything here is event-level, so it all reads
// ClickHouse.
func (o Options) debug() *dashboard.DashboardBuilder {
	propagation := o.sloFor(slo.SLIRevocationPropagation)

	b := o.newBoard(DebugUID, "tokenwatch debug",
		"For digging in: the auth flow of one request or session, per-client refresh attempts and failures, token size and claims, and revocations against cache TTLs.",
		"now-6h").
		WithVariable(textVariable("request_id", "Request id", "a request id from a log line or a trace: shows every auth event of that request")).
		WithVariable(textVariable("session_id", "Session id", "a session id (as stored: hashed by the emitter): shows the session's events, and narrows the revocation tables to it"))

	b.WithRow(dashboard.NewRowBuilder("One request, one session"))
	b.WithPanel(newTable("Auth flow of request ${request_id}").
		Description("Every auth event carrying the request id, in time order: which services checked the token, with what outcome and latency. Enter a request id above.").
		Datasource(o.clickHouseRef()).
		Span(24).Height(8).
		WithTarget(o.sql("A", FormatTable, eventTimeline(o, "request_id = ${request_id:sqlstring}"))))
	b.WithPanel(newTable("Session ${session_id} timeline").
		Description("Every event of the session, in time order: issue, validations, refreshes, revokes. Enter a session id above, or follow a session link from the on-call board's findings.").
		Datasource(o.clickHouseRef()).
		Span(24).Height(8).
		WithTarget(o.sql("A", FormatTable, eventTimeline(o, "session_id = ${session_id:sqlstring}"))))

	b.WithRow(dashboard.NewRowBuilder("Refresh per client"))
	b.WithPanel(newTable("Refresh attempts and failures per client").
		Description("Per OAuth client: refresh attempts, failures, refresh-token reuse reported by the IdP, and how many families and devices refreshed. A client with many reuses or devices per family is worth a look.").
		Datasource(o.clickHouseRef()).
		Links(o.runbookLinks(alerts.FindingAlertName(finding.RefreshReuse), alerts.FindingAlertName(finding.RefreshAnomaly))).
		Span(10).Height(9).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT
  client_id,
  count() AS attempts,
  countIf(outcome != 'ok') AS failures,
  round(failures / attempts, 4) AS failure_ratio,
  countIf(outcome = 'reused') AS reused,
  uniqExact(family_id) AS families,
  uniqExact(device) AS devices
FROM %s
WHERE kind = 'refresh' AND $__timeFilter(ts) AND %s
GROUP BY client_id
ORDER BY failures DESC, attempts DESC
LIMIT 50`, o.table("events"), sqlFilter))))
	b.WithPanel(newTimeseries("Refresh attempts and failures, top 10 failing clients").
		Description("Refresh attempts and failures per interval for the ten clients with the most failed refreshes in the time range.").
		Datasource(o.clickHouseRef()).
		Interval("1m").
		Unit("short").
		Span(14).Height(9).
		WithTarget(o.sql("A", FormatTimeSeries, fmt.Sprintf(`
SELECT $__timeInterval(ts) AS time, client_id, count() AS attempts, countIf(outcome != 'ok') AS failures
FROM %[1]s
WHERE kind = 'refresh' AND $__timeFilter(ts) AND %[2]s
  AND client_id IN (
    SELECT client_id FROM %[1]s
    WHERE kind = 'refresh' AND $__timeFilter(ts) AND %[2]s
    GROUP BY client_id
    ORDER BY countIf(outcome != 'ok') DESC, count() DESC
    LIMIT 10
  )
GROUP BY time, client_id
ORDER BY time`, o.table("events"), sqlFilter))))

	b.WithRow(dashboard.NewRowBuilder("Token size and claims"))
	b.WithPanel(newBarchart("Token size histogram").
		Description("Presented tokens by size, in 256-byte buckets (M9). Large tokens are slow to validate and can overflow headers; a sudden new size usually means a new claim.").
		Datasource(o.clickHouseRef()).
		XField("size").
		Unit("short").
		Span(8).Height(8).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT concat(toString(lo), '-', toString(lo + 255), ' B') AS size, tokens
FROM (
  SELECT intDiv(token_bytes, 256) * 256 AS lo, count() AS tokens
  FROM %s
  WHERE token_bytes > 0 AND $__timeFilter(ts) AND %s
  GROUP BY lo
)
ORDER BY lo`, o.table("events"), sqlFilter))))
	b.WithPanel(newTimeseries("Token size p50 / p95 / max").
		Description("Token size over time, from the per-minute digests.").
		Datasource(o.clickHouseRef()).
		Interval("1m").
		Unit("decbytes").
		Span(8).Height(8).
		WithTarget(o.sql("A", FormatTimeSeries, fmt.Sprintf(`
SELECT time, q[1] AS p50, q[2] AS p95, biggest AS max
FROM (
  SELECT $__timeInterval(minute) AS time,
    quantilesTDigestMerge(0.5, 0.95)(token_bytes_q) AS q,
    max(token_bytes_max) AS biggest
  FROM %s
  WHERE $__timeFilter(minute) AND %s
  GROUP BY time
)
ORDER BY time`, o.table("sli_minute"), sqlFilter))))
	b.WithPanel(newBarchart("Token lifetime histogram (exp − iat claims)").
		Description("Issued tokens by the lifetime their iat and exp claims give, per token type. Access tokens that live for days, or refresh tokens that live for minutes, are misconfigured clients or issuers.").
		Datasource(o.clickHouseRef()).
		XField("lifetime").
		Unit("short").
		Stacking(common.StackingModeNormal).
		Span(8).Height(8).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT
  transform(b, [1, 2, 3, 4, 5, 6, 7], ['<= 5 min', '<= 15 min', '<= 1 h', '<= 8 h', '<= 1 d', '<= 30 d', '> 30 d'], '?') AS lifetime,
  access, refresh, id, other
FROM (
  SELECT
    multiIf(l <= 300, 1, l <= 900, 2, l <= 3600, 3, l <= 28800, 4, l <= 86400, 5, l <= 2592000, 6, 7) AS b,
    countIf(token_type = 'access') AS access,
    countIf(token_type = 'refresh') AS refresh,
    countIf(token_type = 'id') AS id,
    countIf(token_type NOT IN ('access', 'refresh', 'id')) AS other
  FROM (
    SELECT token_type, (toUnixTimestamp64Milli(exp) - toUnixTimestamp64Milli(iat)) / 1000 AS l
    FROM %s
    WHERE kind IN ('issue', 'refresh') AND outcome = 'ok' AND $__timeFilter(ts) AND %s
      AND toUnixTimestamp64Milli(iat) > 0 AND exp > iat
  )
  GROUP BY b
)
ORDER BY b`, o.table("events"), sqlFilter))))
	b.WithPanel(newTable("Claims of presented tokens").
		Description("Validated and introspected tokens by their claims (type, issuer, audience, signing key, binding): how many tokens, how often presented, how often for the wrong audience or with a failed proof of possession.").
		Datasource(o.clickHouseRef()).
		Span(24).Height(8).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT token_type, issuer, audience, kid, binding,
  uniqExact(token_id) AS tokens,
  count() AS presentations,
  countIf(outcome = 'bad_audience') AS bad_audience,
  countIf(binding_ok = -1) AS binding_failed
FROM %s
WHERE kind IN ('validate', 'introspect') AND $__timeFilter(ts) AND %s
GROUP BY token_type, issuer, audience, kid, binding
ORDER BY presentations DESC
LIMIT 50`, o.table("events"), sqlFilter))))

	b.WithRow(dashboard.NewRowBuilder("Revocation against cache TTLs"))
	b.WithPanel(newTable("Revocation lag against cache TTL, per service").
		Description(fmt.Sprintf("Per service that saw revoked tokens: the revocation-cache TTL it reports, its lag after revokes (time until it stopped accepting), the revoked tokens it still accepted, and how often it lagged past its own TTL or never caught up. A lag within the TTL is the cache doing its job; past the TTL, or past %s, is a bug.",
			seconds(propagation.ThresholdSeconds))).
		Datasource(o.clickHouseRef()).
		Links(o.runbookLinks(alerts.FindingAlertName(finding.SlowRevocation), alerts.SLOAlertName(propagation.Name))).
		Span(12).Height(9).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT
  r.service AS lagging_service,
  max(t.ttl) AS cache_ttl_s,
  count() AS revokes_seen,
  sum(r.residual_acceptances) AS residual_acceptances,
  round(quantile(0.5)(r.lag_s), 3) AS lag_p50_s,
  round(quantile(0.95)(r.lag_s), 3) AS lag_p95_s,
  round(max(r.lag_s), 3) AS lag_max_s,
  countIf(t.ttl > 0 AND r.lag_s > t.ttl) AS lagged_past_ttl,
  countIf(NOT r.propagated) AS not_propagated
FROM (
  SELECT service, lag_s, residual_acceptances, propagated
  FROM %s FINAL
  WHERE $__timeFilter(revoked_at) AND service != '' AND %s AND %s
) AS r
LEFT JOIN (
  SELECT service, max(cache_ttl_s) AS ttl
  FROM %s
  WHERE cache_ttl_s > 0 AND $__timeFilter(ts)
  GROUP BY service
) AS t ON t.service = r.service
GROUP BY lagging_service
ORDER BY lag_max_s DESC`, o.table("revocations"), serviceFilter("service"), sessionFilter, o.table("events")))))
	b.WithPanel(newTimeseries("Revocation lag against cache TTL").
		Description(fmt.Sprintf("Points: the worst lag per service and interval after a revoke. Lines: the cache TTL each service reports. The dashed line is the propagation objective (%s).", seconds(propagation.ThresholdSeconds))).
		Datasource(o.clickHouseRef()).
		Interval("1m").
		Unit("s").
		Thresholds(ceilingThresholds(propagation.ThresholdSeconds)).
		ThresholdsStyle(thresholdLines()).
		Span(12).Height(9).
		OverrideByQuery("A", []dashboard.DynamicConfigValue{
			{Id: "custom.drawStyle", Value: "points"},
			{Id: "custom.pointSize", Value: 8},
		}).
		WithTarget(o.sql("A", FormatTimeSeries, fmt.Sprintf(`
SELECT $__timeInterval(revoked_at) AS time, concat('lag ', service) AS series, max(lag_s) AS seconds
FROM %s FINAL
WHERE $__timeFilter(revoked_at) AND service != '' AND %s AND %s
GROUP BY time, series
ORDER BY time`, o.table("revocations"), serviceFilter("service"), sessionFilter))).
		WithTarget(o.sql("B", FormatTimeSeries, fmt.Sprintf(`
SELECT $__timeInterval(ts) AS time, concat('cache TTL ', service) AS series, max(cache_ttl_s) AS seconds
FROM %s
WHERE cache_ttl_s > 0 AND $__timeFilter(ts) AND %s
GROUP BY time, series
ORDER BY time`, o.table("events"), sqlFilter))))
	b.WithPanel(newTable("Revocation events").
		Description("Each revoke: who issued it, what it covered, how long until every service honoured it, which services saw covered tokens and how many revoked tokens they still accepted.").
		Datasource(o.clickHouseRef()).
		Span(24).Height(8).
		WithTarget(o.sql("A", FormatTable, fmt.Sprintf(`
SELECT
  revoked_at, revoke_service, target, target_id,
  max(propagation_s) AS propagation_s,
  min(revoke_propagated) AS propagated,
  arrayStringConcat(arraySort(groupUniqArrayIf(service, service != '')), ', ') AS services,
  sum(residual_acceptances) AS residual_acceptances
FROM %s FINAL
WHERE $__timeFilter(revoked_at) AND %s AND %s
GROUP BY revoked_at, revoke_service, target, target_id
ORDER BY revoked_at DESC
LIMIT 100`, o.table("revocations"), serviceFilter("revoke_service"), sessionFilter))))
	return b
}

// eventTimeline lists the events matching cond in time order, with the
// columns a responder reads a flow by. Ids are the hashed ids emitters
// send; raw tokens never reach the events table.
func eventTimeline(o Options, cond string) string {
	return fmt.Sprintf(`
SELECT
  ts, kind, outcome, service, issuer, region, token_type, client_id, kid,
  if(isFinite(latency_ms), round(latency_ms, 2), NULL) AS latency,
  http_status, reason, cache_ttl_s, token_id, session_id, family_id, request_id, trace_id
FROM %s
WHERE %s AND $__timeFilter(ts)
ORDER BY ts, topic, partition, offset, record
LIMIT 1000`, o.table("events"), cond)
}
