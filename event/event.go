// Package event is tokenwatch's one model of an auth event: every decoder
// produces it, every stage after decoding reads it. See docs/events.md for the
// contract it implements.
package event

import (
	"net/netip"
	"time"
)

// Kind is what happened to a token.
type Kind uint8

const (
	KindUnknown Kind = iota
	KindIssue
	KindValidate
	KindRefresh
	KindRevoke
	KindIntrospect
	KindKeyRotate
)

var kindNames = [...]string{"", "issue", "validate", "refresh", "revoke", "introspect", "key_rotate"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return ""
}

// ParseKind maps the wire name to a Kind; ok is false for anything else.
func ParseKind(s string) (Kind, bool) {
	for i := 1; i < len(kindNames); i++ {
		if kindNames[i] == s {
			return Kind(i), true
		}
	}
	return KindUnknown, false
}

// Kinds lists the valid wire names, for error messages and docs.
func Kinds() []string { return append([]string(nil), kindNames[1:]...) }

// Outcome is ok, or why the token was not accepted.
type Outcome uint8

const (
	OutcomeUnknown Outcome = iota
	OK
	Expired
	NotYetValid
	BadSignature
	UnknownKid
	BadAudience
	BadIssuer
	Revoked
	Malformed
	Reused
	Denied
	Error
)

var outcomeNames = [...]string{"", "ok", "expired", "not_yet_valid", "bad_signature", "unknown_kid",
	"bad_audience", "bad_issuer", "revoked", "malformed", "reused", "denied", "error"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return ""
}

// ParseOutcome maps the wire name to an Outcome; ok is false for anything else.
func ParseOutcome(s string) (Outcome, bool) {
	for i := 1; i < len(outcomeNames); i++ {
		if outcomeNames[i] == s {
			return Outcome(i), true
		}
	}
	return OutcomeUnknown, false
}

// Outcomes lists the valid wire names, for error messages and docs.
func Outcomes() []string { return append([]string(nil), outcomeNames[1:]...) }

// IsTokenRejection reports whether the outcome is the validator refusing the
// token itself (as opposed to ok, a policy denial, or an internal error).
func (o Outcome) IsTokenRejection() bool {
	switch o {
	case Expired, NotYetValid, BadSignature, UnknownKid, BadAudience, BadIssuer, Revoked, Malformed, Reused:
		return true
	}
	return false
}

// Tri is a boolean that may be absent (binding_ok is optional).
type Tri int8

const (
	Unset Tri = 0
	True  Tri = 1
	False Tri = -1
)

// Source is where a message came from: the Kafka coordinates that name it in
// errors, order it for deduplication, and let a stored row be traced back.
type Source struct {
	Topic     string
	Partition int32
	Offset    int64
	// Copy marks, in the fleet's analyze stage, an event this member has
	// already read from another keyed partition it owns (an issue or a
	// broadcast revoke reaches several): the state kept per keyed
	// partition (the revocation tracker's) takes it, the state kept per
	// member (the detectors') does not.
	Copy bool
	// Fanned marks, in the fleet's analyze stage, an event whose route
	// reaches more than one keyed partition (an issue, a session, subject
	// or family revoke): each keyed partition's copy is needed there.
	Fanned bool
}

// Event is one redacted authentication event. Optional fields are zero when
// absent: empty strings, zero times, HasLatency false, Binding OK Unset.
type Event struct {
	TS      time.Time
	Kind    Kind
	Outcome Outcome
	Service string

	TokenID       string
	SessionID     string
	Subject       string
	ClientID      string
	TokenType     string // access, refresh, id, session
	FamilyID      string
	ParentTokenID string

	Issuer           string
	Audience         string
	ExpectedAudience string
	Region           string // extension to v1: where the emitter runs (docs/events.md)

	Kid     string
	PrevKid string
	IAT     time.Time
	EXP     time.Time

	LatencyMS  float64
	HasLatency bool
	TokenBytes int32

	IP      netip.Addr
	ASN     uint32
	Country string
	Device  string

	Binding   string // none, dpop, mtls
	BindingOK Tri

	HTTPStatus int32
	Target     string // revoke: token, session, subject, family
	Reason     string
	CacheTTLS  int32

	RequestID string
	TraceID   string

	// Extra keeps fields the contract does not name, as their raw JSON text
	// (strings keep their quotes) so nothing a producer sent is lost.
	Extra map[string]string

	// Redacted names the fields whose values the redaction guard replaced.
	Redacted []string

	Src Source
}

// PartitionKey is the key producers should use: the session, else the token.
func (e *Event) PartitionKey() string {
	if e.SessionID != "" {
		return e.SessionID
	}
	return e.TokenID
}
