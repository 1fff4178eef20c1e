package store

// migration is one schema version. Every statement is idempotent (IF NOT
// EXISTS), so several replicas running `tokenwatch migrate` at once, or one
// run interrupted and repeated, converge on the same schema; the version row
// is written only after all of its statements succeeded.
type migration struct {
	version int
	name    string
	stmts   []string
	// distributed are the Distributed tables a cluster gets over the local
	// tables this version creates (docs/scaling.md).
	distributed []distributed
}

// distributed is one Distributed table over table_local, rows spread by
// shardKey: the key keeps the rows a ReplacingMergeTree replaces on one
// shard, so FINAL sees them together.
type distributed struct {
	table, shardKey string
}

// The statements are templates (Store.expand): {db}, {ttl}, {ttl_minute}
// and {ttl_revocations} (empty when kept forever); and for a cluster
// (clickhouse.cluster) {on_cluster}, {local t} (t, or t_local on a cluster),
// {engine t E(args)} (E, or ReplicatedE with its Keeper path on a cluster),
// {dedup_window}, and {cluster_only} at the start of a statement only a
// cluster runs.
var migrations = []migration{
	{1, "events table", []string{`
CREATE TABLE IF NOT EXISTS {db}.{local events}{on_cluster} (
    ts                DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    kind              LowCardinality(String),
    outcome           LowCardinality(String),
    service           LowCardinality(String),
    issuer            LowCardinality(String),
    region            LowCardinality(String),
    token_id          String CODEC(ZSTD(1)),
    session_id        String CODEC(ZSTD(1)),
    subject           String CODEC(ZSTD(1)),
    client_id         LowCardinality(String),
    token_type        LowCardinality(String),
    family_id         String CODEC(ZSTD(1)),
    parent_token_id   String CODEC(ZSTD(1)),
    audience          LowCardinality(String),
    expected_audience LowCardinality(String),
    kid               LowCardinality(String),
    prev_kid          LowCardinality(String),
    iat               DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    exp               DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    latency_ms        Float32 CODEC(Gorilla, ZSTD(1)),
    token_bytes       UInt32 CODEC(T64, ZSTD(1)),
    ip                IPv6 CODEC(ZSTD(1)),
    asn               UInt32 CODEC(T64, ZSTD(1)),
    country           LowCardinality(String),
    device            String CODEC(ZSTD(1)),
    binding           LowCardinality(String),
    binding_ok        Int8,
    http_status       UInt16 CODEC(T64, ZSTD(1)),
    target            LowCardinality(String),
    reason            LowCardinality(String),
    cache_ttl_s       Int32 CODEC(T64, ZSTD(1)),
    request_id        String CODEC(ZSTD(1)),
    trace_id          String CODEC(ZSTD(1)),
    extra             Map(String, String) CODEC(ZSTD(1)),
    redacted          Array(LowCardinality(String)),
    topic             LowCardinality(String),
    partition         UInt16,
    offset            UInt64 CODEC(Delta, ZSTD(1)),
    record            UInt32 CODEC(T64, ZSTD(1)),
    INDEX idx_session session_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_token token_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_request request_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_family family_id TYPE bloom_filter(0.01) GRANULARITY 4,
    PROJECTION p_offsets (SELECT topic, partition, max(offset) GROUP BY topic, partition)
)
ENGINE = {engine events MergeTree}
PARTITION BY toDate(ts)
ORDER BY (service, kind, toStartOfHour(ts), session_id, ts)
{ttl}
SETTINGS {dedup_window}, deduplicate_merge_projection_mode = 'rebuild'`},
		[]distributed{{"events", "cityHash64(session_id)"}}},
	{2, "per-minute SLIs", []string{`
CREATE TABLE IF NOT EXISTS {db}.{local sli_minute}{on_cluster} (
    minute          DateTime('UTC'),
    service         LowCardinality(String),
    issuer          LowCardinality(String),
    region          LowCardinality(String),
    kind            LowCardinality(String),
    outcome         LowCardinality(String),
    events          SimpleAggregateFunction(sum, UInt64),
    rejections_401  SimpleAggregateFunction(sum, UInt64),
    latency_count   SimpleAggregateFunction(sum, UInt64),
    latency_sum_ms  SimpleAggregateFunction(sum, Float64),
    latency_le_50ms SimpleAggregateFunction(sum, UInt64),
    latency_q       AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float32),
    token_bytes_q   AggregateFunction(quantilesTDigest(0.5, 0.95), UInt32),
    token_bytes_max SimpleAggregateFunction(max, UInt32)
)
ENGINE = {engine sli_minute AggregatingMergeTree}
PARTITION BY toDate(minute)
ORDER BY (service, issuer, region, minute, kind, outcome)
{ttl_minute}
SETTINGS {dedup_window}`, `
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.sli_minute_mv{on_cluster} TO {db}.{local sli_minute} AS
SELECT
    toStartOfMinute(ts) AS minute,
    service, issuer, region, kind, outcome,
    count() AS events,
    countIf(kind IN ('validate', 'introspect') AND (http_status = 401 OR (http_status = 0 AND outcome IN
        ('expired', 'not_yet_valid', 'bad_signature', 'unknown_kid', 'bad_audience', 'bad_issuer', 'revoked', 'malformed', 'reused')))) AS rejections_401,
    countIf(isFinite(latency_ms)) AS latency_count,
    sumIf(toFloat64(latency_ms), isFinite(latency_ms)) AS latency_sum_ms,
    countIf(isFinite(latency_ms) AND latency_ms <= 50) AS latency_le_50ms,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(latency_ms, isFinite(latency_ms)) AS latency_q,
    quantilesTDigestStateIf(0.5, 0.95)(token_bytes, token_bytes > 0) AS token_bytes_q,
    max(token_bytes) AS token_bytes_max
FROM {db}.{local events}
GROUP BY minute, service, issuer, region, kind, outcome`},
		[]distributed{{"sli_minute", "cityHash64(service, issuer, region)"}}},
	{3, "revocations", []string{`
CREATE TABLE IF NOT EXISTS {db}.{local revocations}{on_cluster} (
    revoked_at           DateTime64(3, 'UTC'),
    revoke_service       LowCardinality(String),
    target               LowCardinality(String),
    target_id            String,
    token_id             String,
    session_id           String,
    subject              String,
    family_id            String,
    service              LowCardinality(String),
    residual_acceptances UInt32,
    lag_s                Float64,
    first_rejection_s    Float64,
    propagated           Bool,
    propagation_s        Float64,
    revoke_propagated    Bool,
    stored_at            DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {engine revocations ReplacingMergeTree(stored_at)}
PARTITION BY toDate(revoked_at)
ORDER BY (revoked_at, target, target_id, service)
{ttl_revocations}`},
		[]distributed{{"revocations", "cityHash64(target, target_id)"}}},
	{4, "findings", []string{`
CREATE TABLE IF NOT EXISTS {db}.{local findings}{on_cluster} (
    id          String,
    kind        LowCardinality(String),
    severity    LowCardinality(String),
    status      LowCardinality(String),
    key         String,
    service     LowCardinality(String),
    issuer      LowCardinality(String),
    region      LowCardinality(String),
    token_id    String,
    session_id  String,
    family_id   String,
    subject     String,
    client_id   LowCardinality(String),
    kid         LowCardinality(String),
    first_seen  DateTime64(3, 'UTC'),
    last_seen   DateTime64(3, 'UTC'),
    detected_at DateTime64(3, 'UTC'),
    closed_at   DateTime64(3, 'UTC'),
    count       UInt64,
    evidence    String CODEC(ZSTD(3)),
    action      String,
    version     UInt64,
    stored_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {engine findings ReplacingMergeTree(version)}
ORDER BY (kind, id)`},
		[]distributed{{"findings", "cityHash64(kind, id)"}}},
	{5, "per-minute views of M4, M8 and M10", []string{`
CREATE VIEW IF NOT EXISTS {db}.revocations_minute{on_cluster} AS
SELECT
    toStartOfMinute(revoked_at) AS minute,
    revoke_service AS service,
    count() AS revokes,
    countIf(revoke_propagated) AS propagated,
    countIf(NOT revoke_propagated) AS not_propagated,
    quantileIf(0.95)(propagation_s, revoke_propagated) AS propagation_p95_s,
    max(propagation_s) AS propagation_max_s
FROM (
    SELECT revoked_at, revoke_service, target, target_id,
           any(revoke_propagated) AS revoke_propagated, any(propagation_s) AS propagation_s
    FROM {db}.revocations FINAL
    GROUP BY revoked_at, revoke_service, target, target_id
)
GROUP BY minute, service`, `
CREATE VIEW IF NOT EXISTS {db}.findings_minute{on_cluster} AS
SELECT
    toStartOfMinute(first_seen) AS minute,
    service, issuer, region, kind,
    count() AS findings
FROM {db}.findings FINAL
GROUP BY minute, service, issuer, region, kind`}, nil},
	{6, "revocations: truncated results", []string{`
ALTER TABLE {db}.{local revocations}{on_cluster} ADD COLUMN IF NOT EXISTS truncated Bool DEFAULT false AFTER revoke_propagated`, `{cluster_only}
ALTER TABLE {db}.revocations{on_cluster} ADD COLUMN IF NOT EXISTS truncated Bool DEFAULT false AFTER revoke_propagated`}, nil},
	// The event time a partition's stored events reached, read at each
	// rebuild: from this projection, not a scan. Parts written before it
	// are answered from their rows (correct, slower) until merged.
	{7, "events: event time per partition", []string{`
ALTER TABLE {db}.{local events}{on_cluster} ADD PROJECTION IF NOT EXISTS p_event_time (SELECT topic, partition, max(ts) GROUP BY topic, partition)`}, nil},
}
