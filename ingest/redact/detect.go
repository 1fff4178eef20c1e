package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// The built-in detectors below are hand-written rather than regular
// expressions because they run on every string field of every event: the
// clean path must cost a few SIMD byte searches and no allocation, and a JWT
// is only a JWT if its first segment decodes to a JSON object, which no regexp
// can check. Hashed ids (hex or base64url digests, UUIDs) contain no dots and
// no whitespace, so they never reach the slower checks.

// maxJWTHeader bounds the decoded header of a JWT: real headers are well
// under 200 bytes, and a longer "header" is not worth decoding.
const maxJWTHeader = 1024

// LooksLikeCredential reports whether s holds a JWT/JWS/JWE or a Bearer/Basic
// credential anywhere in it. It applies only the built-in rules (no operator
// patterns, no key), so packages that must decide whether a value is safe to
// echo in an error message can use it without a Guard.
func LooksLikeCredential(s string) bool {
	dots, blank := shape(s)
	if dots >= 2 {
		if _, _, ok := findJWT(s, 0); ok {
			return true
		}
	}
	if blank {
		if _, _, ok := findAuthScheme(s, 0); ok {
			return true
		}
	}
	return false
}

// shape counts the dots in s (a JWT needs two) and whether it has a space or
// tab (a Bearer or Basic credential needs one). Most values are ids with
// neither, so this one pass, eight bytes at a time, is all they cost.
func shape(s string) (dots int, blank bool) {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		d, sp, tb := w^(ones*'.'), w^(ones*' '), w^(ones*'\t')
		if ((d-ones)&^d|(sp-ones)&^sp|(tb-ones)&^tb)&highs == 0 {
			continue // no byte of the word is a dot, space or tab
		}
		for _, c := range []byte(s[i : i+8]) {
			dots, blank = countShape(c, dots, blank)
		}
	}
	for ; i < len(s); i++ {
		dots, blank = countShape(s[i], dots, blank)
	}
	return dots, blank
}

func countShape(c byte, dots int, blank bool) (int, bool) {
	switch c {
	case '.':
		dots++
	case ' ', '\t':
		blank = true
	}
	return dots, blank
}

func isB64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// findJWT finds a compact JWS (three segments) or JWE (five) whose first
// segment is base64url of a JSON object. Later segments may be empty (an
// unsecured JWS has no signature; a JWE with "dir" has no encrypted key).
func findJWT(s string, from int) (start, end int, ok bool) {
	for from < len(s) {
		dot := strings.IndexByte(s[from:], '.')
		if dot < 0 {
			return 0, 0, false
		}
		dot += from
		// Need a second dot after this one for three segments.
		second := strings.IndexByte(s[dot+1:], '.')
		if second < 0 {
			return 0, 0, false
		}
		second += dot + 1
		// The payload segment must be pure base64url.
		payloadOK := true
		for i := dot + 1; i < second; i++ {
			if !isB64URL(s[i]) {
				payloadOK = false
				break
			}
		}
		if payloadOK {
			runStart := dot
			for runStart > 0 && isB64URL(s[runStart-1]) {
				runStart--
			}
			if hs, found := jsonHeaderStart(s[runStart:dot]); found {
				end := second + 1
				for end < len(s) && (isB64URL(s[end]) || s[end] == '.') {
					end++
				}
				return runStart + hs, end, true
			}
		}
		from = dot + 1
	}
	return 0, 0, false
}

// jsonHeaderStart tries the whole run, then a few later "ey"/"ew" starts in
// it (a token glued to a preceding word; '{"' and '{\n' encode to them), as
// the start of a base64url JSON object. The tries and the header length are
// capped so a hostile value of millions of 'e's costs linear time.
func jsonHeaderStart(run string) (int, bool) {
	const maxTries = 4
	tries := 0
	for i := 0; i+2 < len(run) && tries < maxTries; i++ {
		if run[i] != 'e' || i > 0 && run[i+1] != 'y' && run[i+1] != 'w' {
			continue
		}
		tries++
		if len(run)-i > maxJWTHeader*4/3+4 {
			continue
		}
		if isJSONObjectB64(run[i:]) {
			return i, true
		}
	}
	return 0, false
}

func isJSONObjectB64(seg string) bool {
	enc := base64.RawURLEncoding
	if len(seg)%4 == 1 { // no valid base64 has this length
		return false
	}
	n := enc.DecodedLen(len(seg))
	var stack [maxJWTHeader + 3]byte
	if n > len(stack) {
		return false
	}
	buf := stack[:n]
	m, err := enc.Decode(buf, []byte(seg))
	if err != nil {
		return false
	}
	buf = buf[:m]
	i := 0
	for i < len(buf) && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r') {
		i++
	}
	return i < len(buf) && buf[i] == '{' && json.Valid(buf)
}

// findAuthScheme finds the credential of "Bearer <token>" or "Basic <credentials>" (scheme
// case-insensitive, RFC 9110 §11) anywhere in s. The credential must look like
// one so that prose ("basic auth failed", "bearer token expired") is not
// flagged: a Basic credential must be base64 of "user:password"; a Bearer
// token must be at least 16 token68 characters and not a plain lowercase
// word (random tokens have digits or capitals). The span returned is the
// credential alone, so a scrubbed text keeps the scheme for the reader.
func findAuthScheme(s string, from int) (start, end int, ok bool) {
	for i := from; i+6 < len(s); i++ {
		c := s[i] | 0x20
		if c != 'b' {
			continue
		}
		if i > 0 && isASCIILetter(s[i-1]) {
			continue
		}
		var kwLen int
		var basic bool
		switch {
		case len(s)-i >= 7 && strings.EqualFold(s[i:i+6], "bearer"):
			kwLen = 6
		case strings.EqualFold(s[i:i+5], "basic"):
			kwLen, basic = 5, true
		default:
			continue
		}
		j := i + kwLen
		if j >= len(s) || (s[j] != ' ' && s[j] != '\t') {
			continue
		}
		for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
			j++
		}
		credStart := j
		for j < len(s) && isToken68(s[j]) {
			j++
		}
		for j < len(s) && s[j] == '=' {
			j++
		}
		cred := s[credStart:j]
		if basic && isBasicCredential(cred) || !basic && isBearerToken(cred) {
			return credStart, j, true
		}
	}
	return 0, 0, false
}

func isASCIILetter(c byte) bool { c |= 0x20; return c >= 'a' && c <= 'z' }

// isToken68 is RFC 9110's token68 alphabet without the trailing '='.
func isToken68(c byte) bool {
	return isB64URL(c) || c == '.' || c == '~' || c == '+' || c == '/'
}

func isBasicCredential(cred string) bool {
	if len(cred) < 4 {
		return false
	}
	trimmed := strings.TrimRight(cred, "=")
	var stack [256]byte
	enc := base64.RawStdEncoding
	n := enc.DecodedLen(len(trimmed))
	var buf []byte
	if n <= len(stack) {
		buf = stack[:n]
	} else {
		buf = make([]byte, n)
	}
	m, err := enc.Decode(buf, []byte(trimmed))
	if err != nil {
		return false
	}
	return bytes.IndexByte(buf[:m], ':') >= 0
}

func isBearerToken(cred string) bool {
	if len(cred) < 16 {
		return false
	}
	for i := 0; i < len(cred); i++ {
		c := cred[i]
		if !(c >= 'a' && c <= 'z' || c == '_' || c == '-') {
			return true
		}
	}
	return false // a snake_case or kebab-case word, e.g. "bearer token_expired_for_user"
}
