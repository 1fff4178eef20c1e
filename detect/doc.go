// Package detect finds token attacks and auth-system breakage in the event
// stream (SIGNALS.md, "Detections"). Each incident is one finding.Finding,
// opened as soon as the event that shows it is observed, updated while it
// goes on (throttled to one update per finding per second of event time) and
// closed after a quiet period. The same key signalling again after its
// finding closed is a new incident: a new finding whose id is derived from
// the key and the time it began.
//
// What each detector calls an incident (defaults in DefaultConfig):
//
//   - replay (page): one token_id presented (validate, or introspect with a
//     device) within its lifetime by two clients that cannot be one: two
//     devices; or, when a use has no device, different ASN and different /24
//     (/48 for IPv6); or countries whose centroids, less a tolerance, are
//     farther apart than max_travel_speed_kmh allows for the time between the
//     uses. A failed proof-of-possession (binding dpop/mtls, binding_ok=false)
//     is replay by itself. One device moving, addresses within a /24, and
//     addresses in nat_egress_ranges are not. Evidence: uses, reasons.
//   - refresh_reuse (page): the IdP says `reused`, or one parent_token_id is
//     exchanged successfully twice, unless both came from one device within
//     refresh_grace (a client race). Action: revoke the whole family.
//     Evidence: exchanges, parent_token_id, signals.
//   - refresh_anomaly (ticket): a family with refresh_burst_count successful
//     refreshes within refresh_burst_fraction of its access-token lifetime
//     (exp-iat of its access tokens, else access_token_lifetime); a client or
//     subject whose refreshes this minute reach rate_min_count and a robust
//     z-score of rate_z_score over its own 30-minute per-minute baseline
//     (median/MAD, MAD floored at Poisson noise); a refresh from a device new
//     to the family, or with no device, from a new network.
//   - slow_revocation (ticket): a revoke (from ObserveRevocation) that some
//     service still accepted more than revocation_slo after it — whether it
//     then rejected (propagation above the SLO) or never did within the
//     horizon. M4's lag is an upper bound (it also measures how long the
//     client took to come back); the last residual acceptance is the lower
//     bound and the evidence of a breach. Residual acceptances inside the
//     SLO are cache behaviour and no finding. Evidence: propagation_s,
//     services (residual_acceptances, lag_s, last_acceptance_s).
//   - key_rotation_break (page): bad_signature/unknown_kid failures of the
//     rotated kid (or of its predecessor, or without a kid) at a service (or
//     across all services) since a key_rotate (within
//     rotation_window) at least rotation_min_failures and rotation_jump_factor
//     times the rate of the window before it (its busiest tenth left out); or unknown_kid failures of a kid never announced by
//     an issue, a key_rotate or a successful validation. Evidence: kid,
//     failures_before, failures_after, services.
//   - clock_skew (ticket): expired (ts-exp) or not_yet_valid (ts-iat)
//     rejections within clock_skew_max_offset of the boundary, concentrated
//     in one service (its ratio of such rejections clock_skew_concentration
//     times the other services'). Evidence: skew_s (negative when behind),
//     samples.
//
// Several signals about one session or family are one incident: the
// strongest kind (finding.Kinds order) is the finding and the others are
// listed under evidence "related"; a weaker finding already open is closed
// with evidence "superseded_by" and left out of Flush.
//
// All timing is event time: the engine's clock is the latest event ts it has
// seen (or a later Advance), so a replayed file and a live stream give the
// same findings. State per token, family, client, subject, kid and service is
// kept in fixed-size values keyed by 64-bit xxhashes (no id strings: those
// live only in findings), expired with the lifetimes it covers plus
// allowed_lateness, and capped, nearest-to-expiry evicted first and counted
// in tokenwatch_detector_state_evictions_total.
package detect
