package alerts

import (
	"strings"

	"github.com/tokenwatch/tokenwatch/finding"
)

// FindingAlertName is the alertname of a finding pushed to Alertmanager:
// TokenReplayDetected, RefreshTokenReuseDetected, and so on. The pusher and
// the backstop rules share it so one runbook covers both.
func FindingAlertName(k finding.Kind) string {
	switch k {
	case finding.Replay:
		return "TokenReplayDetected"
	case finding.RefreshReuse:
		return "RefreshTokenReuseDetected"
	}
	return camel(string(k)) + "Detected"
}

// FindingsOpenedAlertName is the backstop rule's alert for a kind, raised
// from tokenwatch_findings_total when the pushed alert does not arrive.
func FindingsOpenedAlertName(k finding.Kind) string {
	return strings.TrimSuffix(FindingAlertName(k), "Detected") + "FindingsOpened"
}

// KindMeaning says in one phrase what a kind of finding is, for alert
// descriptions (SIGNALS.md "Detections").
func KindMeaning(k finding.Kind) string {
	switch k {
	case finding.Replay:
		return "one token was presented by clients that cannot be the same (other devices, networks or countries), or failed its proof of possession"
	case finding.RefreshReuse:
		return "a refresh token was exchanged twice; the whole refresh family must be treated as stolen"
	case finding.RefreshAnomaly:
		return "a refresh family or client refreshes far more often than its token lifetime or its own baseline implies, or from a new device or network"
	case finding.SlowRevocation:
		return "a revoke took longer than the propagation SLO to reach every service, or never reached one; revoked tokens were still accepted"
	case finding.KeyRotationBreak:
		return "bad_signature or unknown_kid rejections jumped after a key rotation (or an unknown kid appeared): validators do not have the new key"
	case finding.ClockSkew:
		return "expired or not_yet_valid rejections concentrate on one service or region with iat/exp near its clock: its clock is off"
	case finding.AudienceMisuse:
		return "a service accepted tokens issued for other audiences (it does not check aud), or one token was rejected for audience at three or more services within minutes (tried across services)"
	}
	return "tokenwatch opened a " + string(k) + " finding"
}
