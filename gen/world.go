package gen

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// The static cast of a run: regions, countries and their networks, issuers,
// services and clients. Everything is drawn from the run's seeded source.

var regions = []string{"eu-west-1", "us-east-1", "ap-southeast-1"}

// country is where a network is. Continent decides "far": an attacker is
// placed on another continent than its victim.
type country struct {
	code      string
	continent string
	region    string   // the region whose users live here
	neighbors []string // reachable by train or car within a token's lifetime
}

var countries = []country{
	{"DE", "EU", "eu-west-1", []string{"AT", "NL", "FR", "PL"}},
	{"FR", "EU", "eu-west-1", []string{"BE", "DE", "ES"}},
	{"GB", "EU", "eu-west-1", nil},
	{"NL", "EU", "eu-west-1", []string{"BE", "DE"}},
	{"BE", "EU", "eu-west-1", []string{"NL", "FR"}},
	{"AT", "EU", "eu-west-1", []string{"DE"}},
	{"ES", "EU", "eu-west-1", []string{"FR"}},
	{"PL", "EU", "eu-west-1", []string{"DE"}},
	{"NG", "AF", "eu-west-1", nil},
	{"US", "NA", "us-east-1", []string{"CA"}},
	{"CA", "NA", "us-east-1", []string{"US"}},
	{"BR", "SA", "us-east-1", nil},
	{"AR", "SA", "us-east-1", nil},
	{"SG", "AS", "ap-southeast-1", nil},
	{"JP", "AS", "ap-southeast-1", nil},
	{"IN", "AS", "ap-southeast-1", nil},
	{"VN", "AS", "ap-southeast-1", nil},
	{"AU", "OC", "ap-southeast-1", nil},
}

// firstOctets are public-looking IPv4 /8s networks are drawn from (no
// private, loopback, multicast or documentation space).
var firstOctets = []byte{23, 31, 37, 46, 62, 78, 81, 85, 92, 95, 109, 145, 151, 176, 178, 185, 188, 193, 212, 217}

// network is one client network: a /24 (or /48) announced by one ASN.
type network struct {
	prefix  netip.Prefix
	asn     uint32
	country *country
	nat     bool
}

// issuer signs tokens; its kid changes on key_rotate.
type issuer struct {
	url    string
	region string
	kid    string // current signing key
	// known lists every kid the issuer ever published: tokens signed with
	// an older kid keep validating until they expire.
	known map[string]bool
}

// service is a token validator (or the IdP).
type service struct {
	name          string
	latencyMedian float64 // ms
	cacheTTL      int32   // revocation-cache TTL in seconds
	introspects   bool    // checks some tokens with the IdP
	backend       bool
	// broken: kid -> the end of the window in which this service rejects it.
	broken map[string]*brokenKid
	skew   *clockSkew
}

type brokenKid struct {
	until   time.Time
	minHits int // the window lasts until at least this many rejections
	hits    int
	outcome event.Outcome
	truth   *truthEntry
}

type clockSkew struct {
	from   time.Time
	offset time.Duration
	truth  *truthEntry
}

// client is an OAuth client: an app type decides devices and binding.
type client struct {
	id        string
	kind      string // web, ios, android, svc
	binding   string // "", dpop, mtls
	accessTTL time.Duration
	issuer    *issuer
	region    string
	extra     int // extra claims bytes in its access tokens
	weight    float64
	users     []*user
}

// user is one subject of a client, with a home device and network.
type user struct {
	subject string
	device  string // "" for machine clients: no fingerprint
	net     *network
}

type world struct {
	networks []*network
	byRegion map[string][]*network
	nat      []*network
	issuers  []*issuer
	idp      *service
	gateway  *service
	backends []*service
	clients  []*client // ordinary clients, weighted
	total    float64   // sum of ordinary client weights
}

var backendNames = []string{"orders", "payments", "profile", "search", "catalog", "billing", "inventory", "messaging", "notifications", "reports"}

var issuerURLs = []struct{ url, region string }{
	{"https://login.eu.example.com", "eu-west-1"},
	{"https://login.us.example.com", "us-east-1"},
	{"https://login.ap.example.com", "ap-southeast-1"},
	{"https://partner-idp.example.net", "eu-west-1"},
}

func newWorld(spec Spec, r *rand.Rand) *world {
	w := &world{byRegion: map[string][]*network{}}
	used := map[netip.Prefix]bool{}
	for _, nat := range spec.NATEgress {
		used[nat.Prefix] = true
	}
	for ci := range countries {
		c := &countries[ci]
		for a := 0; a < 4; a++ {
			asn := uint32(2000 + r.IntN(60000))
			for p := 0; p < 6; p++ {
				n := &network{asn: asn, country: c, prefix: randomPrefix(r, used, p == 5)}
				w.networks = append(w.networks, n)
				w.byRegion[c.region] = append(w.byRegion[c.region], n)
			}
		}
	}
	for _, nr := range spec.NATEgress {
		w.nat = append(w.nat, &network{prefix: nr.Prefix, asn: nr.ASN, country: countryByCode(nr.Country), nat: true})
	}
	for _, iu := range issuerURLs {
		iss := &issuer{url: iu.url, region: iu.region, known: map[string]bool{}}
		iss.kid = newKid(r, iss)
		iss.known[iss.kid] = true
		w.issuers = append(w.issuers, iss)
	}
	w.idp = &service{name: "idp", latencyMedian: 22, cacheTTL: 0}
	w.gateway = &service{name: "gateway", latencyMedian: 0.8, cacheTTL: int32(5 + r.IntN(11)), broken: map[string]*brokenKid{}}
	for i := 0; i < spec.Services; i++ {
		w.backends = append(w.backends, &service{
			name:          backendNames[i],
			latencyMedian: 1.2 + 3*r.Float64(),
			cacheTTL:      int32(10 + r.IntN(21)),
			introspects:   i%3 == 1,
			backend:       true,
			broken:        map[string]*brokenKid{},
		})
	}
	for i := 0; i < 40; i++ {
		w.clients = append(w.clients, w.newClient(spec, r, 1/math.Pow(float64(i+1), 0.9)))
	}
	for _, c := range w.clients {
		w.total += c.weight
	}
	return w
}

func countryByCode(code string) *country {
	for i := range countries {
		if countries[i].code == code {
			return &countries[i]
		}
	}
	// An operator's NAT range in a country the table lacks: keep its code,
	// give it no continent so it is never "far" from anything by accident.
	return &country{code: code, region: regions[0]}
}

func randomPrefix(r *rand.Rand, used map[netip.Prefix]bool, v6 bool) netip.Prefix {
	for {
		var p netip.Prefix
		if v6 {
			var a [16]byte
			a[0], a[1] = 0x2a, byte(r.IntN(16))
			a[2], a[3], a[4], a[5] = byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))
			p = netip.PrefixFrom(netip.AddrFrom16(a), 48)
		} else {
			a := [4]byte{firstOctets[r.IntN(len(firstOctets))], byte(r.IntN(256)), byte(r.IntN(256)), 0}
			p = netip.PrefixFrom(netip.AddrFrom4(a), 24)
		}
		if !used[p] {
			used[p] = true
			return p
		}
	}
}

// host returns a random address inside the network, avoiding the first and
// last address of a /24.
func (n *network) host(r *rand.Rand) netip.Addr {
	if n.prefix.Addr().Is4() {
		a := n.prefix.Addr().As4()
		bits := n.prefix.Bits()
		span := uint32(1) << (32 - bits)
		v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
		v += 1 + uint32(r.IntN(int(span-2)))
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	a := n.prefix.Addr().As16()
	for i := n.prefix.Bits() / 8; i < 16; i++ {
		a[i] = byte(r.IntN(256))
	}
	return netip.AddrFrom16(a)
}

var clientKinds = []struct {
	kind    string
	weight  float64
	binding func(r *rand.Rand) string
}{
	{"web", 0.45, func(*rand.Rand) string { return "" }},
	{"ios", 0.2, func(r *rand.Rand) string { return pick(r, []string{"", "dpop"}) }},
	{"android", 0.2, func(r *rand.Rand) string { return pick(r, []string{"", "dpop"}) }},
	{"svc", 0.15, func(*rand.Rand) string { return "mtls" }},
}

func (w *world) newClient(spec Spec, r *rand.Rand, weight float64) *client {
	x := r.Float64()
	k := clientKinds[len(clientKinds)-1]
	for _, ck := range clientKinds {
		if x < ck.weight {
			k = ck
			break
		}
		x -= ck.weight
	}
	return w.newClientOfKind(spec, r, k.kind, k.binding(r), weight)
}

func (w *world) newClientOfKind(spec Spec, r *rand.Rand, kind, binding string, weight float64) *client {
	iss := w.issuers[r.IntN(len(w.issuers))]
	minutes := int(spec.AccessTTLMin / time.Minute)
	maxMinutes := int(spec.AccessTTLMax / time.Minute)
	ttl := spec.AccessTTLMin
	if maxMinutes > minutes {
		ttl = time.Duration(minutes+r.IntN(maxMinutes-minutes+1)) * time.Minute
	}
	return &client{
		id:        kind + "-" + hexID(r, 3),
		kind:      kind,
		binding:   binding,
		accessTTL: ttl,
		issuer:    iss,
		region:    iss.region,
		extra:     r.IntN(300),
		weight:    weight,
	}
}

// pickClient draws an ordinary client by weight, optionally only among
// those ok accepts.
func (w *world) pickClient(r *rand.Rand, ok func(*client) bool) *client {
	if ok == nil {
		x := r.Float64() * w.total
		for _, c := range w.clients {
			if x < c.weight {
				return c
			}
			x -= c.weight
		}
		return w.clients[len(w.clients)-1]
	}
	var fit []*client
	for _, c := range w.clients {
		if ok(c) {
			fit = append(fit, c)
		}
	}
	if len(fit) == 0 {
		return nil
	}
	return fit[r.IntN(len(fit))]
}

// newUser makes a user of c at home in c's region (one in twenty elsewhere),
// behind a NAT egress one time in twelve.
func (w *world) newUser(r *rand.Rand, c *client) *user {
	u := &user{subject: b64ID(r, 18)}
	if c.kind != "svc" {
		u.device = hexID(r, 16)
	}
	switch {
	case len(w.nat) > 0 && r.IntN(12) == 0:
		u.net = w.nat[r.IntN(len(w.nat))]
	case r.IntN(20) == 0:
		u.net = w.networks[r.IntN(len(w.networks))]
	default:
		nets := w.byRegion[c.region]
		u.net = nets[r.IntN(len(nets))]
	}
	return u
}

// userOf returns one of c's users, creating users until c has enough for
// its share of sessions so users come back for several sessions.
func (w *world) userOf(r *rand.Rand, c *client, want int) *user {
	if len(c.users) < max(want, 1) && (len(c.users) == 0 || r.IntN(3) != 0) {
		u := w.newUser(r, c)
		c.users = append(c.users, u)
		return u
	}
	return c.users[r.IntN(len(c.users))]
}

// farNetwork returns a network on another continent than from, in another
// ASN and prefix: where a stolen token is replayed.
func (w *world) farNetwork(r *rand.Rand, from *network) *network {
	for {
		n := w.networks[r.IntN(len(w.networks))]
		if n.country.continent != from.country.continent && n.asn != from.asn && n.prefix != from.prefix {
			return n
		}
	}
}

// otherNetwork returns a network in country code (any if none) other than
// from, in another ASN.
func (w *world) otherNetwork(r *rand.Rand, from *network, code string) *network {
	var fit []*network
	for _, n := range w.networks {
		if n.country.code == code && n.asn != from.asn {
			fit = append(fit, n)
		}
	}
	if len(fit) == 0 {
		return w.farNetwork(r, from)
	}
	return fit[r.IntN(len(fit))]
}

func (w *world) backend(r *rand.Rand) *service { return w.backends[r.IntN(len(w.backends))] }

// Ids look like what emitters put in events: hex or base64url digests,
// never anything JWT-shaped.
func hexID(r *rand.Rand, n int) string {
	var raw [32]byte
	var out [64]byte
	fill(r, raw[:n])
	hex.Encode(out[:], raw[:n])
	return string(out[:2*n])
}

func b64ID(r *rand.Rand, n int) string {
	var raw [32]byte
	var out [44]byte
	fill(r, raw[:n])
	base64.RawURLEncoding.Encode(out[:], raw[:n])
	return string(out[:base64.RawURLEncoding.EncodedLen(n)])
}

func fill(r *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := i; j < len(b) && j < i+8; j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
}

func newKid(r *rand.Rand, iss *issuer) string {
	return fmt.Sprintf("%s-%s", iss.region[:2], hexID(r, 4))
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }
