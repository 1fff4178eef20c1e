package pipeline_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
)

// What the on-call responder asks of each case below is "would this have
// paged me?". Each case runs through what the pipeline runs every accepted
// event through (the revocation tracker and the detectors, with the default
// config), on a background of ordinary users, and names the findings it
// must raise: none for the look-alikes security teams complain about in
// every detection product, one for each attack dressed to look benign.

var lt0 = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)

type use struct {
	at      time.Duration
	kind    event.Kind
	outcome event.Outcome
	service string
	token   string
	set     func(*event.Event)
}

func ev(u use) event.Event {
	e := event.Event{TS: lt0.Add(u.at), Kind: u.kind, Outcome: u.outcome, Service: u.service, TokenID: u.token,
		Issuer: "https://login.example.com", ClientID: "app", RequestID: fmt.Sprintf("%s-%s-%d", u.token, u.service, u.at)}
	if e.Service == "" {
		e.Service = "gateway"
	}
	if u.kind == event.KindValidate && !e.TS.IsZero() {
		e.IAT, e.EXP = lt0, lt0.Add(time.Hour)
	}
	if u.set != nil {
		u.set(&e)
	}
	return e
}

func at(ip string, asn uint32, cc string) func(*event.Event) {
	return func(e *event.Event) { e.IP, e.ASN, e.Country = netip.MustParseAddr(ip), asn, cc }
}

func both(fs ...func(*event.Event)) func(*event.Event) {
	return func(e *event.Event) {
		for _, f := range fs {
			f(e)
		}
	}
}

func lives(d time.Duration) func(*event.Event) { return func(e *event.Event) { e.EXP = lt0.Add(d) } }

func device(d string) func(*event.Event) { return func(e *event.Event) { e.Device = d } }
func session(s, subject, family string) func(*event.Event) {
	return func(e *event.Event) { e.SessionID, e.Subject, e.FamilyID = s, subject, family }
}

// usesEvery is one client using token every step over [from, to).
func usesEvery(token string, from, to, step time.Duration, set func(i int) func(*event.Event)) []use {
	var out []use
	for i, d := 0, from; d < to; i, d = i+1, d+step {
		out = append(out, use{at: d, kind: event.KindValidate, outcome: event.OK, token: token, set: set(i)})
	}
	return out
}

func TestWhatWouldHavePagedTheResponder(t *testing.T) {
	home := at("203.0.113.10", 64500, "DE")
	cases := []struct {
		name string
		uses []use
		want []finding.Kind
	}{
		{
			name: "a phone on a mobile carrier behind carrier-grade NAT: a new address in another /24 of the carrier every few minutes, one device: no replay",
			uses: usesEvery("cgnat", 0, 30*time.Minute, time.Minute, func(i int) func(*event.Event) {
				return both(device("phone-1"), at(fmt.Sprintf("100.%d.%d.7", 64+i/4, i%4*50), 64600, "DE"))
			}),
		},
		{
			name: "a laptop's IPv6 privacy address rotating inside its /64, no device id: no replay",
			uses: usesEvery("privacy", 0, 30*time.Minute, time.Minute, func(i int) func(*event.Event) {
				return at(fmt.Sprintf("2001:db8:10:20:%x::%x", 0x1000+i*37, 0x50+i), 64700, "DE")
			}),
		},
		{
			name: "a dual-stack laptop alternating between the IPv4 and IPv6 addresses of one provider, no device id: no replay",
			uses: usesEvery("dualstack", 0, 30*time.Minute, time.Minute, func(i int) func(*event.Event) {
				if i%2 == 0 {
					return at("198.51.100.20", 64800, "NL")
				}
				return at("2001:db8:77:1::20", 64800, "NL")
			}),
		},
		{
			name: "a phone switching its VPN on, exiting in the United States, then off again: one device, no replay",
			uses: usesEvery("vpn", 0, 30*time.Minute, time.Minute, func(i int) func(*event.Event) {
				if i >= 10 && i < 20 {
					return both(device("phone-2"), at("192.0.2.80", 65010, "US"))
				}
				return both(device("phone-2"), home)
			}),
		},
		{
			name: "a traveller using the token in Germany and, 70 minutes later, in the Netherlands: plausible, no replay",
			uses: []use{
				{at: 0, kind: event.KindValidate, outcome: event.OK, token: "travel", set: both(at("203.0.113.10", 0, "DE"), lives(2*time.Hour))},
				{at: 70 * time.Minute, kind: event.KindValidate, outcome: event.OK, token: "travel", set: both(at("192.0.2.44", 0, "NL"), lives(2*time.Hour))},
			},
		},
		{
			name: "a stolen token replayed with no device id from another provider in the same country: replay",
			uses: append(
				usesEvery("stolen", 0, 10*time.Minute, time.Minute, func(int) func(*event.Event) { return home }),
				use{at: 5*time.Minute + 30*time.Second, kind: event.KindValidate, outcome: event.OK, token: "stolen", set: at("198.51.100.99", 64999, "DE")}),
			want: []finding.Kind{finding.Replay},
		},
		{
			name: "a refresh token exchanged by two devices one second apart, inside the 2 s grace (which covers one device only): refresh reuse",
			uses: []use{
				{at: 0, kind: event.KindIssue, outcome: event.OK, service: "idp", token: "r0", set: both(session("s-r", "u-r", "f-r"), device("laptop"), home)},
				{at: 15 * time.Minute, kind: event.KindRefresh, outcome: event.OK, service: "idp", token: "r1",
					set: both(session("s-r", "u-r", "f-r"), device("laptop"), home, func(e *event.Event) { e.ParentTokenID = "r0" })},
				{at: 15*time.Minute + time.Second, kind: event.KindRefresh, outcome: event.OK, service: "idp", token: "r1b",
					set: both(session("s-r", "u-r", "f-r"), device("thief"), at("198.51.100.7", 64999, "RO"), func(e *event.Event) { e.ParentTokenID = "r0" })},
			},
			want: []finding.Kind{finding.RefreshReuse},
		},
		{
			name: "tokens signed with a kid nobody rotated in, rejected by orders for five minutes: key rotation break",
			uses: usesEvery("rogue", 0, 5*time.Minute, 10*time.Second, func(int) func(*event.Event) {
				return both(home, func(e *event.Event) { e.Service, e.Outcome, e.Kid = "orders", event.UnknownKid, "k-rogue" })
			}),
			want: []finding.Kind{finding.KeyRotationBreak},
		},
		{
			name: "a subject revoke ('log out everywhere') that the orders service ignores for two minutes: slow revocation",
			uses: revokeIgnored("subject", "u-s", session("s-s", "u-s", "f-s")),
			want: []finding.Kind{finding.SlowRevocation},
		},
		{
			name: "a family revoke that the orders service ignores for two minutes: slow revocation",
			uses: revokeIgnored("family", "f-f", session("s-f", "u-f", "f-f")),
			want: []finding.Kind{finding.SlowRevocation},
		},
	}
	c := config.Default()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			events := background()
			for _, u := range tc.uses {
				events = append(events, ev(u))
			}
			slices.SortStableFunc(events, func(a, b event.Event) int { return a.TS.Compare(b.TS) })
			got, _, _ := streamThroughStages(t, c, events)
			var kinds []finding.Kind
			for _, i := range got {
				kinds = append(kinds, i.kind)
			}
			slices.Sort(kinds)
			if !slices.Equal(kinds, tc.want) {
				t.Errorf("findings %v, want %v", got, tc.want)
			}
		})
	}
}

// revokeIgnored: a session's two tokens in use on gateway and orders; a
// revoke of target (its subject or family) at 10 min; the gateway rejects at
// once, orders keeps accepting for two minutes, then rejects.
func revokeIgnored(target, id string, ids func(*event.Event)) []use {
	out := []use{
		{at: 0, kind: event.KindIssue, outcome: event.OK, service: "idp", token: "a-" + id, set: ids},
		{at: time.Minute, kind: event.KindIssue, outcome: event.OK, service: "idp", token: "b-" + id, set: ids},
		{at: 10 * time.Minute, kind: event.KindRevoke, outcome: event.OK, service: "idp", set: both(ids, func(e *event.Event) { e.Target = target })},
	}
	for d := 2 * time.Minute; d < 16*time.Minute; d += 10 * time.Second {
		gw, orders := event.OK, event.OK
		if d > 10*time.Minute {
			gw = event.Revoked
		}
		if d > 12*time.Minute {
			orders = event.Revoked
		}
		out = append(out, use{at: d, kind: event.KindValidate, outcome: gw, service: "gateway", token: "a-" + id},
			use{at: d + time.Second, kind: event.KindValidate, outcome: orders, service: "orders", token: "b-" + id})
	}
	return out
}

// background is 40 ordinary users for 20 minutes: each its own device and
// address, a token used every 30 s on the gateway and orders.
func background() []event.Event {
	var out []event.Event
	for u := range 40 {
		tok := fmt.Sprintf("bg-%d", u)
		where := at(fmt.Sprintf("203.0.%d.%d", 100+u/10, 10+u), 64500+uint32(u%5), "DE")
		out = append(out, ev(use{at: 0, kind: event.KindIssue, outcome: event.OK, service: "idp", token: tok,
			set: both(session("bg-s"+tok, "bg-u"+tok, "bg-f"+tok), device("bg-d"+tok), where)}))
		for d := time.Duration(u) * time.Second; d < 20*time.Minute; d += 30 * time.Second {
			out = append(out, ev(use{at: d, kind: event.KindValidate, outcome: event.OK, service: []string{"gateway", "orders"}[int(d/time.Second)%2],
				token: tok, set: both(device("bg-d"+tok), where)}))
		}
	}
	return out
}
