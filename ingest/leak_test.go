package ingest

import (
	"encoding/base64"
	"strings"
	"testing"
)

func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// Credentials a careless producer might put where an enum or number belongs.
var (
	longJWT   = b64url(`{"alg":"RS256","kid":"k1"}`) + "." + b64url(`{"sub":"alice","exp":1741944413}`) + "." + strings.Repeat("sig_", 20)
	shortJWT  = b64url(`{"alg":"none"}`) + "." + b64url(`{}`) + "." // 24 characters of enum-like text
	bearer    = "Bearer 2YotnFZFEjr1zCsicMWpAA"
	basicCred = "Basic YWxpY2U6czNjcmV0"
)

func TestDecodeErrorsNeverEchoACredential(t *testing.T) {
	secrets := []string{longJWT, shortJWT, bearer, basicCred}
	type msg struct {
		f    Format
		body []byte
	}
	var cases []struct {
		name string
		msg  msg
	}
	add := func(name string, f Format, body []byte) {
		cases = append(cases, struct {
			name string
			msg  msg
		}{name, msg{f, body}})
	}
	for _, secret := range secrets {
		q := `"` + secret + `"`
		for _, field := range []string{"kind", "outcome", "ts", "iat", "ip", "token_type", "binding", "latency_ms", "http_status", "binding_ok"} {
			add("JSON "+field+" = "+secret[:6], FormatJSON, []byte(withField(validLine, field, q)))
		}
		add("JSON revoke target = "+secret[:6], FormatJSON, []byte(withField(validLine, "kind", `"revoke"`, "target", q)))
		add("JSON with the credential unquoted", FormatJSON, []byte(strings.Replace(validLine, `"t1"`, secret, 1)))
		add("JSON cut inside the credential", FormatJSON, []byte(`{"token_id":"`+secret))
		add("OTLP JSON with the credential as a timestamp", FormatOTLPJSON,
			[]byte(`{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":`+q+`}]}]}]}`))
		add("OTLP JSON broken right after the credential", FormatOTLPJSON,
			[]byte(`{"resourceLogs":[{"resource":{"attributes":[{"key":`+q+`,"value":{"stringValue":`+q+`}}]`))
		for _, field := range []string{"kind", "ts", "ip", "http_status", "binding_ok", "latency_ms"} {
			add("OTLP attribute "+field+" = "+secret[:6], FormatOTLPProto, buildOTLP(t, FormatOTLPProto,
				resource{records: []record{{attrs: map[string]any{"kind": "validate", "outcome": "ok", "service": "gw", "token_id": "t", field: secret}, ts: otlpTS}}}))
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := mustDecoder(t, tc.msg.f)
			_, errs := d.Decode(testSrc, tc.msg.body, nil)
			if len(errs) == 0 {
				t.Fatalf("message was accepted; the case is meant to be rejected")
			}
			for _, err := range errs {
				text := err.Error()
				for _, secret := range secrets {
					if strings.Contains(text, secret) || strings.Contains(text, strings.TrimPrefix(strings.Split(secret, ".")[0], "Bearer ")) {
						t.Fatalf("error echoes a credential: %s", text)
					}
				}
			}
		})
	}
}

func TestDecodeErrorsQuoteShortEnumValues(t *testing.T) {
	_, err := decodeOne(t, withField(validLine, "kind", `"login"`))
	if err == nil || !strings.Contains(err.Error(), `"login" is not a kind`) {
		t.Fatalf("a harmless bad enum value should be quoted to help the producer: %v", err)
	}
}
