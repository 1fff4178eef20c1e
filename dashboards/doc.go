// Package dashboards generates tokenwatch's Grafana dashboards (executive,
// on-call, debug) with the Grafana Foundation SDK, plus the provisioning
// files that point Grafana at the ClickHouse and Prometheus datasources.
//
// Like alerts, the generator is a pure function of its Options (the SLO
// spec, datasource uids, database and runbook base URL): Generate and
// Provisioning do no I/O, so the same options always give the same bytes,
// which the golden test and the committed deploy/grafana files pin down.
// Writing files (WriteDir) and uploading to Grafana (Push) are the edges.
//
// Event-level panels query ClickHouse through the grafana-clickhouse-datasource
// plugin, for which the SDK has no query type: ClickHouseQuery is that type.
// SLI and burn-rate panels query Prometheus through the recording rules that
// package alerts generates (tokenwatch:slo_error_ratio:rate<W>), so a panel
// and the alert that pages on it read the same series. ExpandMacros expands
// a panel's SQL the way Grafana and the plugin would, so tests can run every
// panel against a real ClickHouse engine.
package dashboards
