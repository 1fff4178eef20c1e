// Package finding is the shape of a detection: what detectors open and update,
// what the store keeps, what the report lists and what alerts are built from.
package finding

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Kind names a detection. The strength order (strongest first) decides which
// kind becomes the finding when several signals describe one incident.
type Kind string

const (
	Replay           Kind = "replay"
	RefreshReuse     Kind = "refresh_reuse"
	RefreshAnomaly   Kind = "refresh_anomaly"
	SlowRevocation   Kind = "slow_revocation"
	KeyRotationBreak Kind = "key_rotation_break"
	ClockSkew        Kind = "clock_skew"
	AudienceMisuse   Kind = "audience_misuse"
)

// Kinds lists every detection kind.
func Kinds() []Kind {
	return []Kind{Replay, RefreshReuse, RefreshAnomaly, SlowRevocation, KeyRotationBreak, ClockSkew, AudienceMisuse}
}

// Severity routes the alert: page wakes someone, ticket waits for office hours.
type Severity string

const (
	Page   Severity = "page"
	Ticket Severity = "ticket"
	Info   Severity = "info"
)

// Status is where a finding is in its life: open while the incident goes on,
// closed after a quiet period.
type Status string

const (
	Open   Status = "open"
	Closed Status = "closed"
)

// Finding is one incident. It is opened once and then updated (Count,
// LastSeen, Evidence, Version) until it closes; fields that do not apply are
// empty and left out of JSON.
type Finding struct {
	ID        string    `json:"id"`
	Kind      Kind      `json:"kind"`
	Severity  Severity  `json:"severity"`
	Status    Status    `json:"status"`
	Key       string    `json:"key"`
	Service   string    `json:"service,omitempty"`
	Issuer    string    `json:"issuer,omitempty"`
	Region    string    `json:"region,omitempty"`
	TokenID   string    `json:"token_id,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	FamilyID  string    `json:"family_id,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	ClientID  string    `json:"client_id,omitempty"`
	Kid       string    `json:"kid,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// DetectedAt is the event time at which the detector opened the finding;
	// DetectedAt minus the attack's first event is the detection latency.
	DetectedAt time.Time `json:"detected_at"`
	// ClosedAt is set when the finding closes after its quiet period.
	ClosedAt time.Time      `json:"closed_at,omitzero"`
	Count    int            `json:"count"`
	Evidence map[string]any `json:"evidence"`
	Action   string         `json:"action"`
	// Version grows with every update so the store keeps the newest row.
	Version uint64 `json:"-"`
}

// MakeID derives a finding's stable id from its kind and key, so the same
// incident gets the same id in the pipeline, in analyze and after a restart.
func MakeID(kind Kind, key string) string {
	h := sha256.Sum256([]byte(string(kind) + "\x00" + key))
	return hex.EncodeToString(h[:12])
}

// Team says who owns a kind of finding, for alert routing.
func (k Kind) Team() string {
	switch k {
	case Replay, RefreshReuse, RefreshAnomaly:
		return "security"
	case KeyRotationBreak, SlowRevocation:
		return "identity"
	case ClockSkew:
		return "platform"
	}
	return "security"
}

// Team says who owns this finding: its kind's team, except an
// audience_misuse finding about a service that accepts tokens issued for
// other audiences (no token id), which the platform team fixes; one token
// tried across services is the security team's (SIGNALS.md).
func (f Finding) Team() string {
	if f.Kind == AudienceMisuse && f.TokenID == "" {
		return "platform"
	}
	return f.Kind.Team()
}
