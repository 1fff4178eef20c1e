package sli

import (
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// The predicates below are the one place the SLI definitions in doc.go are
// written as code, so the in-memory aggregator, the Prometheus exporter and
// anyone writing the same query in SQL agree on what counts.

// IsRequest reports whether e is a request for M6: a check of a client's
// token (validate or introspect).
func IsRequest(e *event.Event) bool {
	return e.Kind == event.KindValidate || e.Kind == event.KindIntrospect
}

// Is401 reports whether a request was answered 401 for M6: http_status 401,
// or, when the emitter reported no status, a token rejection outcome.
func Is401(e *event.Event) bool {
	if !IsRequest(e) {
		return false
	}
	if e.HTTPStatus != 0 {
		return e.HTTPStatus == 401
	}
	return e.Outcome.IsTokenRejection()
}

// IsIssuance reports whether e issued a token (M5).
func IsIssuance(e *event.Event) bool {
	return e.Kind == event.KindIssue && e.Outcome == event.OK
}

// MinuteOf is the minute an event at ts is counted in: ts truncated to the
// minute, in UTC.
func MinuteOf(ts time.Time) time.Time {
	return ts.UTC().Truncate(time.Minute)
}
