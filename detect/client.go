package detect

import (
	"fmt"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/tokenwatch/tokenwatch/event"
)

// client is one use of a token as the detectors remember it: 40 bytes, no
// strings. Identity needs only hashes; the address is kept whole so evidence
// can show it.
type client struct {
	ms  int64  // event time
	dev uint64 // xxhash of the device id; 0 = unknown
	asn uint32
	cc  country
	svc uint16 // interned service
	a   addr
}

func hashID(s string) uint64 {
	if s == "" {
		return 0
	}
	h := xxhash.Sum64String(s)
	if h == 0 {
		h = 1 // 0 means "absent"
	}
	return h
}

// Correlation keys: a session and a family hash into one index, kept apart
// by a constant so a session id can never collide with a family id.
func sessionCorr(s string) uint64 { return corrKey(s, 0x5e5510) }
func familyCorr(s string) uint64  { return corrKey(s, 0xfa3117) }

func corrKey(s string, domain uint64) uint64 {
	if s == "" {
		return 0
	}
	return xxhash.Sum64String(s) ^ domain*0x9e3779b97f4a7c15
}

func clientOf(e *event.Event, ms int64, services *interner) client {
	return client{
		ms:  ms,
		dev: hashID(e.Device),
		asn: e.ASN,
		cc:  packCountry(e.Country),
		svc: services.id(e.Service),
		a:   packAddr(e.IP),
	}
}

// use is a client in a finding's evidence, with the original strings when
// the use came from the event at hand. A remembered use only has the
// device's hash: it is shown as "xxh64:<hex>" (xxhash64 of the device id).
type use struct {
	ts      time.Time
	service string
	ip      string
	asn     uint32
	country string
	device  string
	outcome string
	id      uint64 // identity for de-duplication: device hash, else address
}

func useFromEvent(e *event.Event) use {
	u := use{ts: e.TS.UTC(), service: e.Service, asn: e.ASN, country: e.Country, device: e.Device, outcome: e.Outcome.String()}
	if e.IP.IsValid() {
		u.ip = e.IP.String()
	}
	u.id = useIdentity(hashID(e.Device), packAddr(e.IP))
	return u
}

func useFromClient(c client, services *interner) use {
	u := use{ts: msTime(c.ms), service: services.name(c.svc), ip: c.a.String(), asn: c.asn, country: c.cc.String()}
	if c.dev != 0 {
		u.device = fmt.Sprintf("xxh64:%016x", c.dev)
	}
	u.id = useIdentity(c.dev, c.a)
	return u
}

func useIdentity(dev uint64, a addr) uint64 {
	if dev != 0 {
		return dev
	}
	if a.valid() {
		return xxhash.Sum64(a[:]) | 1
	}
	return 0
}

func (u use) render(withOutcome bool) map[string]any {
	m := map[string]any{"ts": u.ts, "service": u.service, "ip": u.ip, "asn": u.asn, "country": u.country, "device": u.device}
	if withOutcome {
		m["outcome"] = u.outcome
	}
	return m
}

// appendUse adds a use unless the same client is already listed; past limit
// it only counts.
func appendUse(list []use, u use, limit int) ([]use, bool) {
	for _, x := range list {
		if u.id != 0 && x.id == u.id {
			return list, false
		}
	}
	if len(list) >= limit {
		return list, false
	}
	u.service, u.ip, u.country, u.device = strings.Clone(u.service), strings.Clone(u.ip), strings.Clone(u.country), strings.Clone(u.device)
	return append(list, u), true
}

func absMS(d int64) int64 {
	if d < 0 {
		return -d
	}
	return d
}
