package ingest

import (
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// field numbers the contract's fields so both decoders share one table of
// names, types and setters.
type field uint8

const (
	fieldUnknown field = iota
	fieldTS
	fieldKind
	fieldOutcome
	fieldService
	fieldTokenID
	fieldSessionID
	fieldSubject
	fieldClientID
	fieldTokenType
	fieldFamilyID
	fieldParentTokenID
	fieldIssuer
	fieldAudience
	fieldExpectedAudience
	fieldKid
	fieldPrevKid
	fieldIAT
	fieldEXP
	fieldLatencyMS
	fieldTokenBytes
	fieldIP
	fieldASN
	fieldCountry
	fieldDevice
	fieldBinding
	fieldBindingOK
	fieldHTTPStatus
	fieldTarget
	fieldReason
	fieldCacheTTLS
	fieldRequestID
	fieldTraceID
	fieldRegion
	fieldCount
)

// valueType is how a field's value is written on the wire and parsed.
type valueType uint8

const (
	typeID    valueType = iota + 1 // opaque, high-cardinality string: copied
	typeLabel                      // low-cardinality string: interned
	typeEnum                       // closed set of strings
	typeTime                       // RFC 3339 string
	typeIP                         // IPv4/IPv6 string
	typeFloat                      // non-negative number
	typeInt                        // integer number within [min, max]
	typeBool                       // true/false
)

type fieldSpec struct {
	name     string
	typ      valueType
	enum     []string // typeEnum: allowed values (also the interned strings)
	min, max float64  // typeInt
	expected string   // for error messages
}

const timeExpected = "an RFC 3339 time such as 2024-05-01T12:00:00.000Z (offsets allowed)"

// claimTimeExpected is for iat and exp, JWT claims: RFC 7519 gives them as
// a NumericDate, which emitters copying the claims send as is.
const claimTimeExpected = timeExpected + ", or seconds since the epoch (an RFC 7519 NumericDate, fractions allowed)"

// fieldSpecs is a constant table (never written after init), indexed by field.
var fieldSpecs = [fieldCount]fieldSpec{
	fieldUnknown:          {},
	fieldTS:               {name: "ts", typ: typeTime, expected: timeExpected},
	fieldKind:             {name: "kind", typ: typeEnum, enum: event.Kinds()},
	fieldOutcome:          {name: "outcome", typ: typeEnum, enum: event.Outcomes()},
	fieldService:          {name: "service", typ: typeLabel},
	fieldTokenID:          {name: "token_id", typ: typeID},
	fieldSessionID:        {name: "session_id", typ: typeID},
	fieldSubject:          {name: "subject", typ: typeID},
	fieldClientID:         {name: "client_id", typ: typeLabel},
	fieldTokenType:        {name: "token_type", typ: typeEnum, enum: []string{"access", "refresh", "id", "session"}},
	fieldFamilyID:         {name: "family_id", typ: typeID},
	fieldParentTokenID:    {name: "parent_token_id", typ: typeID},
	fieldIssuer:           {name: "issuer", typ: typeLabel},
	fieldAudience:         {name: "audience", typ: typeLabel},
	fieldExpectedAudience: {name: "expected_audience", typ: typeLabel},
	fieldKid:              {name: "kid", typ: typeLabel},
	fieldPrevKid:          {name: "prev_kid", typ: typeLabel},
	fieldIAT:              {name: "iat", typ: typeTime, expected: claimTimeExpected},
	fieldEXP:              {name: "exp", typ: typeTime, expected: claimTimeExpected},
	fieldLatencyMS:        {name: "latency_ms", typ: typeFloat, expected: "a number of milliseconds, 0 or more"},
	fieldTokenBytes:       {name: "token_bytes", typ: typeInt, min: 0, max: math.MaxInt32},
	fieldIP:               {name: "ip", typ: typeIP, expected: "an IPv4 or IPv6 address"},
	fieldASN:              {name: "asn", typ: typeInt, min: 0, max: math.MaxUint32},
	fieldCountry:          {name: "country", typ: typeLabel},
	fieldDevice:           {name: "device", typ: typeID},
	fieldBinding:          {name: "binding", typ: typeEnum, enum: []string{"none", "dpop", "mtls"}},
	fieldBindingOK:        {name: "binding_ok", typ: typeBool, expected: "true or false"},
	fieldHTTPStatus:       {name: "http_status", typ: typeInt, min: 100, max: 599},
	fieldTarget:           {name: "target", typ: typeEnum, enum: []string{"token", "session", "subject", "family"}},
	fieldReason:           {name: "reason", typ: typeLabel},
	fieldCacheTTLS:        {name: "cache_ttl_s", typ: typeInt, min: 0, max: math.MaxInt32},
	fieldRequestID:        {name: "request_id", typ: typeID},
	fieldTraceID:          {name: "trace_id", typ: typeID},
	fieldRegion:           {name: "region", typ: typeLabel},
}

func init() {
	for i := range fieldSpecs {
		s := &fieldSpecs[i]
		if s.expected != "" {
			continue
		}
		switch s.typ {
		case typeID, typeLabel:
			s.expected = "a string"
		case typeEnum:
			s.expected = "one of " + strings.Join(s.enum, ", ")
		case typeInt:
			s.expected = "an integer from " + formatNumber(s.min) + " to " + formatNumber(s.max)
		}
	}
}

// lookupField maps a wire name to its field; a switch on string(b) compiles
// to a search without converting (or allocating) the key.
func lookupField(b []byte) field {
	switch string(b) {
	case "ts":
		return fieldTS
	case "kind":
		return fieldKind
	case "outcome":
		return fieldOutcome
	case "service":
		return fieldService
	case "token_id":
		return fieldTokenID
	case "session_id":
		return fieldSessionID
	case "subject":
		return fieldSubject
	case "client_id":
		return fieldClientID
	case "token_type":
		return fieldTokenType
	case "family_id":
		return fieldFamilyID
	case "parent_token_id":
		return fieldParentTokenID
	case "issuer":
		return fieldIssuer
	case "audience":
		return fieldAudience
	case "expected_audience":
		return fieldExpectedAudience
	case "kid":
		return fieldKid
	case "prev_kid":
		return fieldPrevKid
	case "iat":
		return fieldIAT
	case "exp":
		return fieldEXP
	case "latency_ms":
		return fieldLatencyMS
	case "token_bytes":
		return fieldTokenBytes
	case "ip":
		return fieldIP
	case "asn":
		return fieldASN
	case "country":
		return fieldCountry
	case "device":
		return fieldDevice
	case "binding":
		return fieldBinding
	case "binding_ok":
		return fieldBindingOK
	case "http_status":
		return fieldHTTPStatus
	case "target":
		return fieldTarget
	case "reason":
		return fieldReason
	case "cache_ttl_s":
		return fieldCacheTTLS
	case "request_id":
		return fieldRequestID
	case "trace_id":
		return fieldTraceID
	case "region":
		return fieldRegion
	}
	return fieldUnknown
}

// stringField returns the Event's string for fields stored as strings.
func stringField(e *event.Event, f field) *string {
	switch f {
	case fieldService:
		return &e.Service
	case fieldTokenID:
		return &e.TokenID
	case fieldSessionID:
		return &e.SessionID
	case fieldSubject:
		return &e.Subject
	case fieldClientID:
		return &e.ClientID
	case fieldTokenType:
		return &e.TokenType
	case fieldFamilyID:
		return &e.FamilyID
	case fieldParentTokenID:
		return &e.ParentTokenID
	case fieldIssuer:
		return &e.Issuer
	case fieldAudience:
		return &e.Audience
	case fieldExpectedAudience:
		return &e.ExpectedAudience
	case fieldKid:
		return &e.Kid
	case fieldPrevKid:
		return &e.PrevKid
	case fieldCountry:
		return &e.Country
	case fieldDevice:
		return &e.Device
	case fieldBinding:
		return &e.Binding
	case fieldTarget:
		return &e.Target
	case fieldReason:
		return &e.Reason
	case fieldRequestID:
		return &e.RequestID
	case fieldTraceID:
		return &e.TraceID
	case fieldRegion:
		return &e.Region
	}
	return nil
}

// clearField resets f to its absent value: a JSON null or an OTLP empty
// value means "not sent", and a later duplicate key wins, as in encoding/json.
func clearField(e *event.Event, f field) {
	switch f {
	case fieldTS:
		e.TS = time.Time{}
	case fieldKind:
		e.Kind = event.KindUnknown
	case fieldOutcome:
		e.Outcome = event.OutcomeUnknown
	case fieldIAT:
		e.IAT = time.Time{}
	case fieldEXP:
		e.EXP = time.Time{}
	case fieldLatencyMS:
		e.LatencyMS, e.HasLatency = 0, false
	case fieldTokenBytes:
		e.TokenBytes = 0
	case fieldIP:
		e.IP = netip.Addr{}
	case fieldASN:
		e.ASN = 0
	case fieldBindingOK:
		e.BindingOK = event.Unset
	case fieldHTTPStatus:
		e.HTTPStatus = 0
	case fieldCacheTTLS:
		e.CacheTTLS = 0
	default:
		if p := stringField(e, f); p != nil {
			*p = ""
		}
	}
}

// setText sets a field whose wire value is a string (ids, labels, enums,
// times, addresses). b is only read; strings kept are copied or interned.
func (d *Decoder) setText(e *event.Event, f field, b []byte) *fieldError {
	spec := &fieldSpecs[f]
	switch spec.typ {
	case typeID:
		*stringField(e, f) = string(b)
	case typeLabel:
		*stringField(e, f) = d.labels.intern(b)
	case typeEnum:
		return setEnum(e, f, b)
	case typeTime:
		t, ok := parseTime(b)
		if !ok {
			return invalid(f, shown(b)+" is not an RFC 3339 time")
		}
		switch f {
		case fieldTS:
			e.TS = t
		case fieldIAT:
			e.IAT = t
		case fieldEXP:
			e.EXP = t
		}
	case typeIP:
		a, err := netip.ParseAddr(unsafeString(b))
		if err != nil {
			return invalid(f, shown(b)+" is not an IP address")
		}
		e.IP = a
	default:
		return invalid(f, "is a string")
	}
	return nil
}

func setEnum(e *event.Event, f field, b []byte) *fieldError {
	switch f {
	case fieldKind:
		k, ok := event.ParseKind(string(b))
		if !ok {
			return invalid(f, shown(b)+" is not a kind")
		}
		e.Kind = k
		return nil
	case fieldOutcome:
		o, ok := event.ParseOutcome(string(b))
		if !ok {
			return invalid(f, shown(b)+" is not an outcome")
		}
		e.Outcome = o
		return nil
	}
	for _, v := range fieldSpecs[f].enum {
		if v == string(b) {
			*stringField(e, f) = v // the table's string: no allocation
			return nil
		}
	}
	return invalid(f, shown(b)+" is not one of the allowed values")
}

// setNumber sets a numeric field. Integers arrive as doubles from the
// Collector, so an integral float is accepted for an integer field.
func setNumber(e *event.Event, f field, v float64) *fieldError {
	spec := &fieldSpecs[f]
	switch spec.typ {
	case typeFloat:
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return invalid(f, formatNumber(v)+" is out of range")
		}
		e.LatencyMS, e.HasLatency = v, true
		return nil
	case typeInt:
		if v != math.Trunc(v) {
			return invalid(f, formatNumber(v)+" is not an integer")
		}
		if v < spec.min || v > spec.max {
			return invalid(f, formatNumber(v)+" is out of range")
		}
		switch f {
		case fieldTokenBytes:
			e.TokenBytes = int32(v)
		case fieldASN:
			e.ASN = uint32(v)
		case fieldHTTPStatus:
			e.HTTPStatus = int32(v)
		case fieldCacheTTLS:
			e.CacheTTLS = int32(v)
		}
		return nil
	case typeTime:
		// iat and exp are JWT claims: RFC 7519 NumericDate, seconds since
		// the epoch, fractions allowed. ts is the contract's own, RFC 3339.
		if f == fieldTS {
			return invalid(f, "is a number")
		}
		if math.IsNaN(v) || v <= 0 || v >= maxNumericDate {
			return invalid(f, formatNumber(v)+" is not a NumericDate in seconds (RFC 7519 §2); milliseconds are not accepted")
		}
		t := numericDate(v)
		switch f {
		case fieldIAT:
			e.IAT = t
		case fieldEXP:
			e.EXP = t
		}
		return nil
	}
	return invalid(f, "is a number")
}

// setAudiences keeps an aud claim given as an array (RFC 7519 §4.1.3) as
// its members joined by commas, in the order sent; an empty array is absent.
func setAudiences(e *event.Event, f field, auds []string, d *Decoder) *fieldError {
	if len(auds) == 0 {
		clearField(e, f)
		return nil
	}
	for _, a := range auds {
		if a == "" {
			return invalid(f, "holds an empty string (RFC 7519: each audience is a non-empty string)")
		}
	}
	*stringField(e, f) = d.labels.intern([]byte(strings.Join(auds, ",")))
	return nil
}

// numericDate is an RFC 7519 NumericDate (seconds, fractions kept to the
// microsecond) as a time.
func numericDate(v float64) time.Time {
	sec, frac := math.Modf(v)
	return time.Unix(int64(sec), int64(math.Round(frac*1e6))*1000).UTC()
}

// maxNumericDate bounds a time given as a number of seconds (RFC 7519
// NumericDate): past it the number is milliseconds or garbage.
const maxNumericDate = 1e11 // year 5138

func setBool(e *event.Event, f field, v bool) *fieldError {
	if f != fieldBindingOK {
		return invalid(f, "is a boolean")
	}
	e.BindingOK = event.False
	if v {
		e.BindingOK = event.True
	}
	return nil
}

// maxTimeLen is the longest RFC 3339 time: nanoseconds and an offset
// ("2006-01-02T15:04:05.999999999-07:00" is 35), with room for a five-digit
// year.
const maxTimeLen = 40

// parseTime accepts RFC 3339 with any fraction (or none), 'Z' or an offset,
// and returns UTC so events compare and store the same whatever the offset.
// time.Parse has a dedicated fast path for the RFC 3339 layouts.
func parseTime(b []byte) (time.Time, bool) {
	// An RFC 3339 time is short ASCII. Anything else is refused before
	// time.Parse, whose error would quote (and so copy, escaped up to 4x)
	// a value of any length.
	if len(b) < len("2006-01-02T15:04:05Z") || len(b) > maxTimeLen {
		return time.Time{}, false
	}
	for _, c := range b {
		if c >= 0x80 {
			return time.Time{}, false
		}
	}
	t, err := time.Parse(time.RFC3339Nano, unsafeString(b))
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}
