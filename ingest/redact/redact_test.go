package redact

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func randomB64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// jwt is a signed JWT as an IdP would issue it.
var jwt = b64(`{"alg":"RS256","typ":"JWT","kid":"key-1"}`) + "." +
	b64(`{"sub":"alice","aud":"api","exp":1741944413}`) + "." + randomB64(256)

// leaks are raw credentials in the shapes they reach a log line.
var leaks = map[string]string{
	"raw JWT":                         jwt,
	"JWT with a spaced header":        b64(`{ "alg": "ES256" }`) + "." + b64(`{}`) + "." + randomB64(64),
	"unsecured JWT with no signature": b64(`{"alg":"none"}`) + "." + b64(`{"sub":"x"}`) + ".",
	"JWE with five segments":          b64(`{"alg":"dir","enc":"A256GCM"}`) + ".." + randomB64(12) + "." + randomB64(40) + "." + randomB64(16),
	"JWT glued to a parameter name":   "id_token=" + jwt + "&state=1",
	"JWT in an Authorization dump":    `{"Authorization":["Bearer ` + jwt + `"]}`,
	"opaque Bearer token":             "Bearer 2YotnFZFEjr1zCsicMWpAA",
	"lower-case bearer in a header":   "authorization: bearer mF_9.B5f-4.1JqM~tok+/en==",
	"Basic credential":                "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret")),
	"BASIC credential mid-sentence":   "retrying with BASIC\t" + base64.StdEncoding.EncodeToString([]byte("svc:hunter22")) + " after 401",
}

// cleanIDs are what ids should look like: digests and UUIDs are never leaks.
func cleanValues(t testing.TB) []string {
	t.Helper()
	var vs []string
	for range 200 {
		b := make([]byte, 32)
		rand.Read(b)
		sum := sha256.Sum256(b)
		vs = append(vs, hex.EncodeToString(sum[:]), base64.RawURLEncoding.EncodeToString(sum[:]),
			base64.StdEncoding.EncodeToString(sum[:]), uuid(b))
	}
	return append(vs,
		"basic auth failed", "Basic realm=\"api\"", "bearer token expired", "Bearer token_expired_for_user",
		"invalid bearer", "https://idp.example.com/realms/main", "api://orders", "example.com.au", "v1.2.3",
		"e.g. a.b.c", "alice.b@corp.example.com", "10.0.0.1", "2001:db8::1", "eyJhbGci.not.json",
		"hmac-sha256:00112233445566778899aabbccddeeff", "key-2025-03", "okhttp/4.12.0 (Linux; Android 14)")
}

func uuid(b []byte) string {
	h := hex.EncodeToString(b[:16])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func newGuard(t testing.TB, patterns ...string) *Guard {
	t.Helper()
	g, err := New(Config{Key: []byte("0123456789abcdef0123456789abcdef"), Patterns: patterns})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// stringFields lists every string field of an event by wire name, so the
// table below covers each one.
func stringFields(e *event.Event) map[string]*string {
	return map[string]*string{
		"service": &e.Service, "token_id": &e.TokenID, "session_id": &e.SessionID, "subject": &e.Subject,
		"client_id": &e.ClientID, "token_type": &e.TokenType, "family_id": &e.FamilyID, "parent_token_id": &e.ParentTokenID,
		"issuer": &e.Issuer, "audience": &e.Audience, "expected_audience": &e.ExpectedAudience, "region": &e.Region,
		"kid": &e.Kid, "prev_kid": &e.PrevKid, "country": &e.Country, "device": &e.Device, "binding": &e.Binding,
		"target": &e.Target, "reason": &e.Reason, "request_id": &e.RequestID, "trace_id": &e.TraceID,
	}
}

func cleanEvent() event.Event {
	return event.Event{
		TS: time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC), Kind: event.KindValidate, Outcome: event.OK,
		Service: "gw", TokenID: "9f86d081884c7d659a2feaa0c55ad015", SessionID: "3b5d1e8a-6f1c-4a57-9d1e-8a6f1c4a579d",
		Subject: "u-5e884898", ClientID: "web", TokenType: "access", Issuer: "https://idp.example.com", Audience: "api",
		Kid: "key-1", Country: "DE", Binding: "dpop", Reason: "basic auth failed", RequestID: "req-1",
		Extra: map[string]string{"user_agent": `"okhttp/4.12.0"`, "attempt": `2`},
	}
}

func TestApplyReplacesALeakInAnyStringField(t *testing.T) {
	g := newGuard(t)
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range stringFields(&event.Event{}) {
			if !yield(k) {
				return
			}
		}
	})
	for leakName, leak := range leaks {
		for _, field := range append(names, "extra value", "extra value escaped") {
			t.Run(leakName+" in "+field, func(t *testing.T) {
				e := cleanEvent()
				wantName := field
				switch field {
				case "extra value":
					wantName = "header"
					e.Extra["header"] = `"` + strings.ReplaceAll(leak, `"`, `\"`) + `"`
				case "extra value escaped":
					wantName = "header"
					e.Extra["header"] = `"` + strings.NewReplacer(`"`, `\"`, " ", `\u0020`, "\t", `\t`).Replace(leak) + `"`
				default:
					*stringFields(&e)[field] = leak
				}
				leaked := g.Apply(&e)
				if !slices.Equal(leaked, []string{wantName}) || !slices.Equal(e.Redacted, []string{wantName}) {
					t.Fatalf("leaked %v, Redacted %v; want [%s]", leaked, e.Redacted, wantName)
				}
				var got string
				if strings.HasPrefix(field, "extra") {
					got = e.Extra["header"]
					if !strings.HasPrefix(got, `"`+HashPrefix) {
						t.Fatalf("extra value %q is not a quoted keyed hash", got)
					}
				} else if got = *stringFields(&e)[field]; !strings.HasPrefix(got, HashPrefix) || len(got) != len(HashPrefix)+32 {
					t.Fatalf("%s = %q, want %s and 32 hex digits", field, got, HashPrefix)
				}
				ref := cleanEvent()
				refFields := stringFields(&ref)
				for name, v := range stringFields(&e) {
					if name != field && *v != *refFields[name] {
						t.Errorf("clean field %s changed to %q", name, *v)
					}
				}
			})
		}
	}
}

func TestApplyReplacesAnExtraKeyThatIsACredential(t *testing.T) {
	g := newGuard(t)
	e := cleanEvent()
	e.Extra["Bearer 2YotnFZFEjr1zCsicMWpAA"] = `true`
	leaked := g.Apply(&e)
	if len(leaked) != 1 || !strings.HasPrefix(leaked[0], HashPrefix) {
		t.Fatalf("leaked %v, want the hashed key", leaked)
	}
	for k := range e.Extra {
		if strings.Contains(k, "2YotnFZFEjr1zCsicMWpAA") {
			t.Fatalf("raw key still in Extra: %v", e.Extra)
		}
	}
}

func TestHashedIDsAreNeverFlagged(t *testing.T) {
	g := newGuard(t)
	for _, v := range cleanValues(t) {
		if g.Leaks(v) || LooksLikeCredential(v) {
			t.Errorf("clean value flagged as a leak: %q", v)
		}
		e := cleanEvent()
		e.TokenID, e.Reason = v, v
		e.Extra["digest"] = `"` + v + `"`
		if leaked := g.Apply(&e); leaked != nil {
			t.Errorf("Apply flagged %v for clean value %q", leaked, v)
		}
	}
}

func TestOperatorPatternsAreLeaks(t *testing.T) {
	g := newGuard(t, `sk_live_[0-9a-zA-Z]{24}`, `(?i)password=\S+`)
	for _, v := range []string{"sk_live_4eC39HqLyjWDarjtT1zdp7dc", "login?user=a&Password=hunter2"} {
		e := cleanEvent()
		e.Reason = v
		if leaked := g.Apply(&e); !slices.Equal(leaked, []string{"reason"}) || !strings.HasPrefix(e.Reason, HashPrefix) {
			t.Errorf("operator pattern did not catch %q: leaked %v reason %q", v, leaked, e.Reason)
		}
	}
	if g.Leaks("sk_test_short") {
		t.Error("pattern matched a value it should not")
	}
}

func TestNewRejectsAPatternThatDoesNotCompile(t *testing.T) {
	_, err := New(Config{Patterns: []string{`ok`, `(unclosed`}})
	var syntaxErr *syntax.Error
	if err == nil || !strings.Contains(err.Error(), "pattern 1") || !errors.As(err, &syntaxErr) {
		t.Fatalf("error %v does not name pattern 1 and wrap the compile error", err)
	}
}

func TestHashIsKeyedAndStable(t *testing.T) {
	a := newGuard(t)
	b, err := New(Config{Key: []byte("another key of thirty-two bytes!")})
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash(jwt) != a.Hash(jwt) {
		t.Error("same key, same value, different hashes")
	}
	if a.Hash(jwt) == b.Hash(jwt) {
		t.Error("different keys gave the same hash: the hash is not keyed")
	}
	if !regexp.MustCompile(`^hmac-sha256:[0-9a-f]{32}$`).MatchString(a.Hash(jwt)) {
		t.Errorf("hash %q is not hmac-sha256:<32 hex>", a.Hash(jwt))
	}
	r1, _ := New(Config{})
	r2, _ := New(Config{})
	if r1.Hash("x") == r2.Hash("x") {
		t.Error("guards without a key share a key; each should draw a random one")
	}
}

func TestScrubReplacesOnlyTheCredentialInFreeText(t *testing.T) {
	g := newGuard(t)
	for _, tc := range []struct{ name, in, keep, gone string }{
		{"JWT in a log message", "validation failed for " + jwt + " at gateway", "validation failed for hmac-sha256:", jwt},
		{"Bearer header keeps its scheme", "Authorization: Bearer 2YotnFZFEjr1zCsicMWpAA; retry", "Authorization: Bearer hmac-sha256:", "2YotnFZFEjr1zCsicMWpAA"},
		{"two leaks in one line", "a=" + jwt + " b=Basic YWxpY2U6czNjcmV0", "b=Basic hmac-sha256:", "YWxpY2U6czNjcmV0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := g.Scrub(tc.in)
			if strings.Contains(out, tc.gone) || !strings.Contains(out, tc.keep) {
				t.Fatalf("Scrub(%q) = %q", tc.in, out)
			}
		})
	}
}

func TestCleanPathDoesNotAllocate(t *testing.T) {
	g := newGuard(t)
	e := cleanEvent()
	if n := testing.AllocsPerRun(100, func() { g.Apply(&e) }); n != 0 {
		t.Errorf("Apply on a clean event allocates %v times", n)
	}
	s := "token validation failed: expired (kid key-1, issuer https://idp.example.com)"
	if n := testing.AllocsPerRun(100, func() { _ = g.Scrub(s) }); n != 0 {
		t.Errorf("Scrub on clean text allocates %v times", n)
	}
}

func BenchmarkApplyClean(b *testing.B) {
	g := newGuard(b)
	e := cleanEvent()
	b.ReportAllocs()
	for b.Loop() {
		if g.Apply(&e) != nil {
			b.Fatal("clean event flagged")
		}
	}
}

func BenchmarkApplyCleanWithPatterns(b *testing.B) {
	g := newGuard(b, `sk_live_[0-9a-zA-Z]{24}`)
	e := cleanEvent()
	b.ReportAllocs()
	for b.Loop() {
		g.Apply(&e)
	}
}

func BenchmarkApplyLeak(b *testing.B) {
	g := newGuard(b)
	b.ReportAllocs()
	for b.Loop() {
		e := cleanEvent()
		e.TokenID = jwt
		g.Apply(&e)
	}
}

func BenchmarkScrubClean(b *testing.B) {
	g := newGuard(b)
	s := fmt.Sprintf("token validation failed: expired (kid %s, issuer %s)", "key-1", "https://idp.example.com")
	b.ReportAllocs()
	for b.Loop() {
		_ = g.Scrub(s)
	}
}
