package ingest

import "github.com/tokenwatch/tokenwatch/event"

// validate applies the contract's presence rules once all fields are read.
// An empty string counts as absent. The rules, precisely:
//
//   - every event needs ts, kind, outcome and service;
//   - token_id is needed by issue, validate, refresh and introspect, except
//     when the outcome is malformed (a token that could not be parsed has no
//     jti to hash), and by revoke with target=token; key_rotate needs none;
//   - family_id is needed by refresh, except when the outcome is malformed;
//   - revoke needs target, and the id the target names: token_id, session_id,
//     subject or family_id.
//
// latency_ms and parent_token_id are marked in EVENTS.md against the kinds
// they describe but are not enforced: a first issue has no parent, and a
// validator that does not time its checks still reports outcomes, which the
// SLIs need more than they need the latency.
func validate(e *event.Event) *fieldError {
	switch {
	case e.TS.IsZero():
		return missing(fieldTS, "")
	case e.Kind == event.KindUnknown:
		return missing(fieldKind, "")
	case e.Outcome == event.OutcomeUnknown:
		return missing(fieldOutcome, "")
	case e.Service == "":
		return missing(fieldService, "")
	}
	parsed := e.Outcome != event.Malformed
	switch e.Kind {
	case event.KindIssue, event.KindValidate, event.KindIntrospect:
		if parsed && e.TokenID == "" {
			return missing(fieldTokenID, e.Kind.String()+" events name their token unless the outcome is malformed")
		}
	case event.KindRefresh:
		if parsed && e.TokenID == "" {
			return missing(fieldTokenID, "refresh events name their token unless the outcome is malformed")
		}
		if parsed && e.FamilyID == "" {
			return missing(fieldFamilyID, "refresh events name their rotation family unless the outcome is malformed")
		}
	case event.KindRevoke:
		var named field
		var id string
		switch e.Target {
		case "":
			return missing(fieldTarget, "revoke events say what they revoked")
		case "token":
			named, id = fieldTokenID, e.TokenID
		case "session":
			named, id = fieldSessionID, e.SessionID
		case "subject":
			named, id = fieldSubject, e.Subject
		case "family":
			named, id = fieldFamilyID, e.FamilyID
		}
		if id == "" {
			return missing(named, "revoke with target="+e.Target+" names the "+e.Target+" it revoked")
		}
	}
	return nil
}
