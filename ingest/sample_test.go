package ingest

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// testSrc is the Kafka coordinates every test message claims to come from.
var testSrc = event.Source{Topic: "auth-events", Partition: 7, Offset: 123456}

// fullEvent has every field of the contract set, plus Extra entries of each
// JSON type, so round trips cover them all.
func fullEvent() event.Event {
	ts := time.Date(2025, 3, 14, 9, 26, 53, 589_000_000, time.UTC)
	return event.Event{
		TS: ts, Kind: event.KindRefresh, Outcome: event.OK, Service: "idp-eu",
		TokenID: "9f86d081884c7d659a2feaa0c55ad015", SessionID: "s-3b5d1e8a", Subject: "u-5e884898da28047151d0e56f8dc6292773603d0d",
		ClientID: "mobile-app", TokenType: "refresh", FamilyID: "fam-0c9a", ParentTokenID: "a665a45920422f9d417e4867efdc4fb8",
		Issuer: "https://idp.example.com", Audience: "api://orders", ExpectedAudience: "api://orders", Region: "eu-west-1",
		Kid: "key-2025-03", PrevKid: "key-2025-02",
		IAT: ts.Add(-time.Minute), EXP: ts.Add(14 * time.Minute),
		LatencyMS: 3.25, HasLatency: true, TokenBytes: 812,
		IP: netip.MustParseAddr("203.0.113.9"), ASN: 64500, Country: "DE", Device: "d-77b1",
		Binding: "dpop", BindingOK: event.True, HTTPStatus: 200,
		Target: "", Reason: "rotation", CacheTTLS: 30,
		RequestID: "req-1", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
		Extra: map[string]string{
			"user_agent": `"okhttp/4.12 \"quoted\" é"`,
			"retries":    `2`,
			"flags":      `{"a":[1,true,null],"b":"x"}`,
			"sampled":    `false`,
		},
		Src: testSrc,
	}
}

// validLine is a minimal valid v1 message; tests edit it to make one thing wrong.
const validLine = `{"ts":"2025-03-14T09:26:53.589Z","kind":"validate","outcome":"ok","service":"gw","token_id":"t1"}`

func mustDecoder(t testing.TB, f Format) *Decoder {
	t.Helper()
	d, err := NewDecoder(f)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
