// Package redact is the redaction guard of EVENTS.md: it finds raw
// credentials (JWTs, Bearer and Basic credentials, operator patterns) in an
// event's string fields and replaces them with a keyed hash, so a producer's
// mistake never reaches storage, logs, metric labels or alerts.
//
// A keyed hash (HMAC-SHA256) rather than a plain one: Basic credentials and
// short tokens have little entropy, and an unkeyed digest of them could be
// reversed by guessing. The same key gives the same hash, so a leaked value
// can still be correlated across events without being recoverable.
package redact

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/tokenwatch/tokenwatch/event"
)

// HashPrefix starts every replacement value, so a reader (and a test) can
// tell a redacted value from an id.
const HashPrefix = "hmac-sha256:"

// hashBytes is how much of the HMAC is kept: 128 bits is plenty to correlate
// values and keeps the replacement short.
const hashBytes = 16

// Config configures a Guard.
type Config struct {
	// Key is the HMAC key. Empty means a random key for this Guard: the
	// hashes are then stable only for the life of the process, which still
	// keeps the secret out and needs no setup for analyze runs.
	Key []byte
	// Patterns are regular expressions (RE2 syntax) the operator adds; a
	// value matching any of them is a leak.
	Patterns []string
}

// Guard checks events and free text for leaked credentials. It is immutable
// after New and safe for concurrent use.
type Guard struct {
	key      []byte
	patterns *regexp.Regexp // all operator patterns as one alternation; nil if none
}

// New compiles the operator's patterns and returns a Guard; an invalid pattern
// is an error naming its index.
func New(cfg Config) (*Guard, error) {
	g := &Guard{key: slices.Clone(cfg.Key)}
	if len(g.key) == 0 {
		g.key = make([]byte, 32)
		if _, err := rand.Read(g.key); err != nil {
			return nil, fmt.Errorf("redact: generate a random key: %w", err)
		}
	}
	if len(cfg.Patterns) > 0 {
		parts := make([]string, len(cfg.Patterns))
		for i, p := range cfg.Patterns {
			if _, err := regexp.Compile(p); err != nil {
				return nil, fmt.Errorf("redact: pattern %d is not a regular expression: %w", i, err)
			}
			parts[i] = "(?:" + p + ")"
		}
		re, err := regexp.Compile(strings.Join(parts, "|"))
		if err != nil {
			return nil, fmt.Errorf("redact: combine patterns: %w", err)
		}
		g.patterns = re
	}
	return g, nil
}

// Leaks reports whether s holds a credential by the built-in rules or an
// operator pattern.
func (g *Guard) Leaks(s string) bool {
	if LooksLikeCredential(s) {
		return true
	}
	return g.patterns != nil && g.patterns.MatchString(s)
}

// Hash is the replacement for a leaked value: HashPrefix and the hex of the
// first 16 bytes of HMAC-SHA256(key, s).
func (g *Guard) Hash(s string) string {
	m := hmac.New(sha256.New, g.key)
	m.Write([]byte(s))
	var sum [sha256.Size]byte
	return HashPrefix + hex.EncodeToString(m.Sum(sum[:0])[:hashBytes])
}

// Apply checks every string field of e, Extra keys and values included, and
// replaces each leaking value as a whole by its keyed hash. It appends the
// wire names of the replaced fields (Extra entries by their key) to
// e.Redacted and returns them too; nil means the event was clean. Extra
// values stay valid JSON: a replaced one becomes a quoted string.
func (g *Guard) Apply(e *event.Event) (leaked []string) {
	fields := [...]struct {
		name string
		v    *string
	}{
		{"service", &e.Service}, {"token_id", &e.TokenID}, {"session_id", &e.SessionID},
		{"subject", &e.Subject}, {"client_id", &e.ClientID}, {"token_type", &e.TokenType},
		{"family_id", &e.FamilyID}, {"parent_token_id", &e.ParentTokenID},
		{"issuer", &e.Issuer}, {"audience", &e.Audience}, {"expected_audience", &e.ExpectedAudience},
		{"region", &e.Region}, {"kid", &e.Kid}, {"prev_kid", &e.PrevKid},
		{"country", &e.Country}, {"device", &e.Device}, {"binding", &e.Binding},
		{"target", &e.Target}, {"reason", &e.Reason},
		{"request_id", &e.RequestID}, {"trace_id", &e.TraceID},
	}
	for _, f := range fields {
		if *f.v != "" && g.Leaks(*f.v) {
			*f.v = g.Hash(*f.v)
			leaked = append(leaked, f.name)
		}
	}
	var extraLeaked []string
	for k, v := range e.Extra {
		if g.Leaks(k) || g.extraValueLeaks(v) {
			extraLeaked = append(extraLeaked, k)
		}
	}
	slices.Sort(extraLeaked) // map order is random; keep reports stable
	for _, k := range extraLeaked {
		v := e.Extra[k]
		name := k
		if g.Leaks(k) {
			delete(e.Extra, k)
			name = g.Hash(k)
		}
		e.Extra[name] = strconv.Quote(g.Hash(v))
		leaked = append(leaked, name)
	}
	if len(leaked) > 0 {
		e.Redacted = append(e.Redacted, leaked...)
	}
	return leaked
}

// extraValueLeaks checks an Extra value, which is raw JSON text: a JSON
// escape could hide a leak ("Bearer\u0020..."), so text with escapes is
// also checked once unquoted.
func (g *Guard) extraValueLeaks(raw string) bool {
	if g.Leaks(raw) {
		return true
	}
	if strings.IndexByte(raw, '\\') < 0 {
		return false
	}
	return g.Leaks(unescapeJSONText(raw))
}

// unescapeJSONText decodes the JSON escapes in raw wherever they are (inside
// nested objects too); it is only used to look for leaks, never stored.
func unescapeJSONText(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			b.WriteByte(c)
			continue
		}
		i++
		switch raw[i] {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'u':
			if i+4 < len(raw) {
				if r, err := strconv.ParseUint(raw[i+1:i+5], 16, 32); err == nil {
					b.WriteRune(rune(r))
					i += 4
					continue
				}
			}
			b.WriteString(`\u`)
		default:
			b.WriteByte(raw[i])
		}
	}
	return b.String()
}

// Scrub returns s with every leak inside it replaced by its keyed hash, for
// free text such as log messages and error strings. A Bearer or Basic
// credential keeps its scheme word ("Bearer hmac-sha256:..."). Clean text is
// returned as is, without allocating.
func (g *Guard) Scrub(s string) string {
	spans := g.leakSpans(s)
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		b.WriteString(s[last:sp[0]])
		b.WriteString(g.Hash(s[sp[0]:sp[1]]))
		last = sp[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// leakSpans lists the leaking byte ranges of s, sorted and merged.
func (g *Guard) leakSpans(s string) [][2]int {
	var spans [][2]int
	dots, blank := shape(s)
	for from := 0; dots >= 2 && from < len(s); {
		start, end, ok := findJWT(s, from)
		if !ok {
			break
		}
		spans = append(spans, [2]int{start, end})
		from = end
	}
	for from := 0; blank && from < len(s); {
		start, end, ok := findAuthScheme(s, from)
		if !ok {
			break
		}
		spans = append(spans, [2]int{start, end})
		from = end
	}
	if g.patterns != nil {
		for _, m := range g.patterns.FindAllStringIndex(s, -1) {
			if m[1] > m[0] {
				spans = append(spans, [2]int{m[0], m[1]})
			}
		}
	}
	if len(spans) < 2 {
		return spans
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	merged := spans[:1]
	for _, sp := range spans[1:] {
		last := &merged[len(merged)-1]
		if sp[0] <= last[1] {
			last[1] = max(last[1], sp[1])
			continue
		}
		merged = append(merged, sp)
	}
	return merged
}
