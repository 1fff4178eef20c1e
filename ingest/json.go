package ingest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/tokenwatch/tokenwatch/event"
)

// The v1 object is read by a small hand-written scanner rather than
// encoding/json or goccy/go-json, for three reasons the contract imposes:
// unknown fields must be kept as their raw JSON text (a struct decoder drops
// them, a map decoder boxes every value), an error must name the exact field
// that was wrong and why, and the hot path must not reflect or allocate per
// field (PERFORMANCE.md: encoding/json costs 4.2 µs per event, this scanner
// about 0.5 µs). It accepts exactly RFC 8259 JSON and decodes strings as
// encoding/json does (invalid UTF-8 and lone surrogates become U+FFFD), which
// FuzzDecodeJSON checks against encoding/json.

// maxDepth bounds nesting inside unknown fields, so a hostile message cannot
// make the scanner recurse without limit.
const maxDepth = 512

// strPlain[c] is true for bytes that need no attention inside a string.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const (
	strEscaped  = 1 << iota // the string holds backslash escapes
	strNonASCII             // the string holds bytes >= 0x80 (maybe invalid UTF-8)
)

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// decodeObject scans one v1 JSON object into e. Known fields are parsed and
// checked as they are met; unknown fields go to e.Extra as raw text. A field
// sent twice takes its last value, and null means absent, as encoding/json
// would decode them into a map.
func (d *Decoder) decodeObject(data []byte, e *event.Event) *fieldError {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return unexpected(data, i, "a JSON object")
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		i++
	} else {
		for {
			if i >= len(data) || data[i] != '"' {
				return unexpected(data, i, "a field name")
			}
			end, flags, fe := scanString(data, i)
			if fe != nil {
				return fe
			}
			key := data[i+1 : end-1]
			if flags != 0 {
				d.keyBuf = unquote(d.keyBuf[:0], key, flags)
				key = d.keyBuf
			}
			i = skipSpace(data, end)
			if i >= len(data) || data[i] != ':' {
				return unexpected(data, i, "':' after a field name")
			}
			i = skipSpace(data, i+1)
			if f := lookupField(key); f != fieldUnknown {
				i, fe = d.fieldValue(data, i, e, f)
			} else {
				var vEnd int
				vEnd, fe = skipValue(data, i, 0)
				if fe == nil {
					d.addExtra(e, key, data[i:vEnd])
					i = vEnd
				}
			}
			if fe != nil {
				return fe
			}
			i = skipSpace(data, i)
			if i < len(data) && data[i] == ',' {
				i = skipSpace(data, i+1)
				continue
			}
			if i < len(data) && data[i] == '}' {
				i++
				break
			}
			return unexpected(data, i, "',' or '}'")
		}
	}
	if i = skipSpace(data, i); i < len(data) {
		return badJSON(fmt.Sprintf("holds more after the object, at byte %d; want one object per message", i))
	}
	return nil
}

func (d *Decoder) addExtra(e *event.Event, key, raw []byte) {
	if e.Extra == nil {
		e.Extra = make(map[string]string, 4)
	}
	e.Extra[d.labels.intern(key)] = string(raw)
}

// fieldValue parses the value at data[i] into field f and returns the index
// after it.
func (d *Decoder) fieldValue(data []byte, i int, e *event.Event, f field) (int, *fieldError) {
	if i >= len(data) {
		return i, unexpected(data, i, "a value")
	}
	switch c := data[i]; {
	case c == '"':
		end, flags, fe := scanString(data, i)
		if fe != nil {
			return i, fe
		}
		s := data[i+1 : end-1]
		if flags != 0 {
			d.valBuf = unquote(d.valBuf[:0], s, flags)
			s = d.valBuf
		}
		return end, d.setText(e, f, s)
	case c == '-' || c >= '0' && c <= '9':
		end, isInt, fe := scanNumber(data, i)
		if fe != nil {
			return i, fe
		}
		v, ok := parseNumber(data[i:end], isInt)
		if !ok {
			return i, invalid(f, "is a number too large for a float64")
		}
		return end, setNumber(e, f, v)
	case c == 't' || c == 'f':
		end, fe := scanLiteral(data, i)
		if fe != nil {
			return i, fe
		}
		return end, setBool(e, f, c == 't')
	case c == 'n':
		end, fe := scanLiteral(data, i)
		if fe != nil {
			return i, fe
		}
		clearField(e, f)
		return end, nil
	case c == '{' || c == '[':
		end, fe := skipValue(data, i, 0)
		if fe != nil {
			return i, fe
		}
		if c == '[' && f == fieldAudience {
			// RFC 7519 §4.1.3: aud is a string or an array of strings.
			var auds []string
			if err := json.Unmarshal(data[i:end], &auds); err != nil {
				return end, invalid(f, "is an array of something other than strings (RFC 7519: a string or an array of strings)")
			}
			return end, setAudiences(e, f, auds, d)
		}
		what := "an object"
		if c == '[' {
			what = "an array"
		}
		return end, invalid(f, "is "+what)
	}
	return i, unexpected(data, i, "a value")
}

// scanString checks the string starting at data[i] (a quote) and returns the
// index after its closing quote and what unquoting it needs.
func scanString(data []byte, i int) (end int, flags int, fe *fieldError) {
	j := i + 1
	for {
		// Eight bytes at a time while none needs attention, then byte by
		// byte: strings are most of a message, so this loop is most of the
		// scanner's time.
		for j+8 <= len(data) && !wordNeedsAttention(binary.LittleEndian.Uint64(data[j:])) {
			j += 8
		}
		for j < len(data) && strPlain[data[j]] {
			j++
		}
		if j >= len(data) {
			return 0, 0, badJSON(fmt.Sprintf("has a string starting at byte %d that never ends", i))
		}
		switch c := data[j]; {
		case c == '"':
			return j + 1, flags, nil
		case c == '\\':
			flags |= strEscaped
			if j+1 >= len(data) {
				return 0, 0, badJSON(fmt.Sprintf("ends inside an escape at byte %d", j))
			}
			switch data[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(data) || hex4(data[j+2:j+6]) < 0 {
					return 0, 0, badJSON(fmt.Sprintf("has a bad \\u escape at byte %d", j))
				}
				j += 6
			default:
				return 0, 0, badJSON(fmt.Sprintf("has an unknown escape at byte %d", j))
			}
		case c < 0x20:
			return 0, 0, badJSON(fmt.Sprintf("has a control character inside a string at byte %d; want it escaped", j))
		default: // >= 0x80
			flags |= strNonASCII
			j++
		}
	}
}

// wordNeedsAttention reports whether any of the eight bytes in w is a quote,
// a backslash, a control character or non-ASCII (the classic SWAR tests
// "has a byte less than n" and "has a zero byte", which are exact as
// existence tests).
func wordNeedsAttention(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	less20 := (w - ones*0x20) & ^w & highs
	q := w ^ ones*'"'
	quote := (q - ones) & ^q & highs
	bs := w ^ ones*'\\'
	backslash := (bs - ones) & ^bs & highs
	return (less20 | quote | backslash | w&highs) != 0
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// unquote appends the decoded content s (between the quotes, already checked
// by scanString) to dst, coercing to valid UTF-8 exactly as encoding/json
// does: each invalid byte and each unpaired surrogate becomes U+FFFD.
func unquote(dst, s []byte, flags int) []byte {
	if flags == strNonASCII && utf8.Valid(s) {
		return append(dst, s...)
	}
	for r := 0; r < len(s); {
		c := s[r]
		switch {
		case c == '\\':
			switch s[r+1] {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				rr := hex4(s[r+2:])
				r += 6
				if utf16.IsSurrogate(rr) {
					if r+6 <= len(s) && s[r] == '\\' && s[r+1] == 'u' {
						if dec := utf16.DecodeRune(rr, hex4(s[r+2:])); dec != unicode.ReplacementChar {
							dst = utf8.AppendRune(dst, dec)
							r += 6
							continue
						}
					}
					rr = unicode.ReplacementChar
				}
				dst = utf8.AppendRune(dst, rr)
				continue
			default: // '"', '\\', '/'
				dst = append(dst, s[r+1])
			}
			r += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			dst = utf8.AppendRune(dst, rr)
			r += size
		}
	}
	return dst
}

// scanNumber checks the JSON number at data[i] and returns the index after it
// and whether it is a plain integer (no fraction or exponent).
func scanNumber(data []byte, i int) (end int, isInt bool, fe *fieldError) {
	j := i
	if data[j] == '-' {
		j++
	}
	bad := func() (int, bool, *fieldError) {
		return 0, false, badJSON(fmt.Sprintf("has a malformed number at byte %d", i))
	}
	switch {
	case j < len(data) && data[j] == '0':
		j++
	case j < len(data) && data[j] >= '1' && data[j] <= '9':
		for j < len(data) && data[j] >= '0' && data[j] <= '9' {
			j++
		}
	default:
		return bad()
	}
	isInt = true
	if j < len(data) && data[j] == '.' {
		isInt = false
		j++
		if j >= len(data) || data[j] < '0' || data[j] > '9' {
			return bad()
		}
		for j < len(data) && data[j] >= '0' && data[j] <= '9' {
			j++
		}
	}
	if j < len(data) && (data[j] == 'e' || data[j] == 'E') {
		isInt = false
		j++
		if j < len(data) && (data[j] == '+' || data[j] == '-') {
			j++
		}
		if j >= len(data) || data[j] < '0' || data[j] > '9' {
			return bad()
		}
		for j < len(data) && data[j] >= '0' && data[j] <= '9' {
			j++
		}
	}
	return j, isInt, nil
}

// parseNumber converts a checked JSON number; short integers skip strconv.
func parseNumber(b []byte, isInt bool) (float64, bool) {
	if isInt && len(b) <= 15 {
		neg := b[0] == '-'
		if neg {
			b = b[1:]
		}
		var n int64
		for _, c := range b {
			n = n*10 + int64(c-'0')
		}
		if neg {
			return -float64(n), true
		}
		return float64(n), true
	}
	v, err := strconv.ParseFloat(unsafeString(b), 64)
	return v, err == nil
}

func scanLiteral(data []byte, i int) (int, *fieldError) {
	for _, lit := range [...]string{"true", "false", "null"} {
		if bytes.HasPrefix(data[i:], []byte(lit)) {
			return i + len(lit), nil
		}
	}
	return 0, unexpected(data, i, "a value")
}

// skipValue checks any JSON value at data[i] (for unknown fields, kept raw)
// and returns the index after it.
func skipValue(data []byte, i, depth int) (int, *fieldError) {
	if i >= len(data) {
		return 0, unexpected(data, i, "a value")
	}
	switch c := data[i]; {
	case c == '"':
		end, _, fe := scanString(data, i)
		return end, fe
	case c == '-' || c >= '0' && c <= '9':
		end, _, fe := scanNumber(data, i)
		return end, fe
	case c == 't' || c == 'f' || c == 'n':
		return scanLiteral(data, i)
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return 0, badJSON(fmt.Sprintf("nests deeper than %d levels at byte %d", maxDepth, i))
		}
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		j := skipSpace(data, i+1)
		if j < len(data) && data[j] == closer {
			return j + 1, nil
		}
		for {
			var fe *fieldError
			if c == '{' {
				if j >= len(data) || data[j] != '"' {
					return 0, unexpected(data, j, "a field name")
				}
				if j, _, fe = scanString(data, j); fe != nil {
					return 0, fe
				}
				j = skipSpace(data, j)
				if j >= len(data) || data[j] != ':' {
					return 0, unexpected(data, j, "':' after a field name")
				}
				j = skipSpace(data, j+1)
			}
			if j, fe = skipValue(data, j, depth+1); fe != nil {
				return 0, fe
			}
			j = skipSpace(data, j)
			if j < len(data) && data[j] == ',' {
				j = skipSpace(data, j+1)
				continue
			}
			if j < len(data) && data[j] == closer {
				return j + 1, nil
			}
			return 0, unexpected(data, j, "',' or '"+string(closer)+"'")
		}
	}
	return 0, unexpected(data, i, "a value")
}

// unexpected names what was found at data[i]: the end of the message, or one
// printable ASCII character (which cannot carry a credential).
func unexpected(data []byte, i int, want string) *fieldError {
	if i >= len(data) {
		return badJSON("ends early; want " + want)
	}
	c := data[i]
	found := "a byte"
	if c > 0x20 && c < 0x7f {
		found = strconv.QuoteRune(rune(c))
	}
	return badJSON(fmt.Sprintf("has %s at byte %d; want %s", found, i, want))
}
