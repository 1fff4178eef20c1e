// Package sli computes tokenwatch's service level indicators (M1–M10 in
// SIGNALS.md) in memory, tracks revocation propagation (M4), and exports the
// SLIs as Prometheus metrics. The pipeline feeds it live events; analyze
// feeds it a file. Both get the same numbers because both call the same code.
//
// # Definitions
//
// Every figure is kept per minute and per (service, issuer, region). The
// minute is the event's own ts truncated to the minute in UTC, never the time
// it arrived, so a late or out-of-order event lands in its own minute.
//
//   - M1 validations: events of kind validate, counted by outcome. Good and
//     bad follow the SLO spec's validation_good_ratio objective
//     ((*slo.SLO).IsBad; outcomes the spec does not call bad are good).
//     validation_success_rate is ok / all validations; validation_good_ratio
//     is good / all validations.
//   - M2 latency: latency_ms of validate events that carry one.
//   - M3 refresh: events of kind refresh are attempts; outcome ok is success.
//   - M5 issuance: events of kind issue with outcome ok (a refused issuance
//     issued nothing).
//   - M6 401 rate: a request is a validate or introspect event (the calls a
//     client's token is checked on). A request is a 401 when http_status is
//     401, or, when the emitter reported no http_status, when its outcome is a
//     token rejection (event.Outcome.IsTokenRejection: expired, revoked,
//     bad_signature, ...). An explicit status other than 401 is never a 401:
//     the emitter knows what it returned.
//   - M7 introspection: events of kind introspect; outcome error is an error.
//   - M8 refresh anomalies: refresh_anomaly findings opened in the minute
//     (the finding's first_seen), fed in by the caller with ObserveFinding.
//   - M9 token size: token_bytes of every event that reports one (so the
//     distribution is weighted by how often a token is presented).
//   - M10 replay detection rate: replay findings opened in the minute / the
//     minute's validations.
//
// Percentiles (latency p50/p95/p99, token size p50/p95) are exact over the
// events in scope, by the nearest-rank method: the p-th percentile of n
// sorted values is the value at rank ceil(p/100 × n). Exact percentiles need
// the samples, so a Row keeps them until it is drained; the pipeline drains
// finished minutes, analyze keeps them to the end of the file.
//
// Rates whose denominator is zero are nil (left out of JSON) rather than 0,
// so a service with no validations is not reported as failing all of them.
//
// # Revocation propagation (M4)
//
// See Tracker. Propagation cannot be observed directly, only bounded by what
// the services that see a revoked token do after the revoke. The tracker
// works in event time: events are held in a reorder buffer until the
// watermark (the largest ts seen minus the allowed lateness) passes them, and
// then processed in ts order, so an event that arrives up to the lateness
// late is handled exactly as if it had arrived in order. A revoke's result is
// final, and reported, when the watermark passes revoke ts + horizon.
// The buffer holds about 130 bytes per issue, refresh, validate and revoke
// event for the lateness, so its memory is rate × lateness × 130 B (50k ev/s
// with the default 30 s: about 200 MB); MaxBuffered caps it.
//
// # Prometheus
//
// Exporter registers the SLI metrics named in docs/architecture.md on a
// Registerer it is given. Label values are bounded: service, issuer and
// region each keep at most a configured number of distinct values, and any
// value past the cap is exported as "other". Ids (token, session, subject,
// device, user) are never labels.
package sli
