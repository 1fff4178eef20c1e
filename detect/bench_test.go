package detect

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// sessionPool is a realistic population for benchmarks: each session has a
// device, a home address, a refresh family and a subject; its access token
// changes every generation (refresh).
type sessionPool struct {
	sid, fid, subject, device []string
	ip                        []netip.Addr
	tokens                    [][]string // [session][generation % len]
}

const generations = 4

func newSessionPool(n int) *sessionPool {
	p := &sessionPool{sid: make([]string, n), fid: make([]string, n), subject: make([]string, n), device: make([]string, n),
		ip: make([]netip.Addr, n), tokens: make([][]string, n)}
	for i := range n {
		h := hashID(itoa(i))
		hex := func(salt uint64) string {
			const digits = "0123456789abcdef"
			b := make([]byte, 32)
			x := h ^ salt*0x9e3779b97f4a7c15
			for j := range b {
				b[j] = digits[x&15]
				x = x>>4 | x<<60
				if j%16 == 15 {
					x ^= salt + uint64(j)
				}
			}
			return string(b)
		}
		p.sid[i], p.fid[i], p.subject[i], p.device[i] = hex(1), hex(2), hex(3), hex(4)
		p.ip[i] = netip.AddrFrom4([4]byte{byte(10 + i%200), byte(i >> 8), byte(i), byte(i * 7)})
		p.tokens[i] = make([]string, generations)
		for g := range generations {
			p.tokens[i][g] = hex(uint64(10 + g))
		}
	}
	return p
}

var benchServices = []string{"api-gateway", "orders", "billing", "search", "profile"}

// fill makes the i-th event of a mixed stream: events go round-robin over
// the sessions, one per millisecond; each session validates its current
// token, refreshes once per token lifetime (15 min) and now and then
// presents an expired token or is introspected.
func (p *sessionPool) fill(e *event.Event, i int) {
	n := len(p.sid)
	s := i % n
	round := i / n
	const roundsPerToken = 18
	// Sessions are staggered: each refreshes in its own round, so refreshes
	// spread evenly over time as they do in a real population.
	phase := round + s%roundsPerToken
	g := phase / roundsPerToken
	ts := t0.Add(time.Duration(i) * time.Millisecond)
	issued := t0.Add(time.Duration(((g*roundsPerToken-s%roundsPerToken)*n)+s) * time.Millisecond)
	*e = event.Event{
		TS: ts, Kind: event.KindValidate, Outcome: event.OK, Service: benchServices[(i>>3)%len(benchServices)],
		TokenID: p.tokens[s][g%generations], SessionID: p.sid[s], Subject: p.subject[s], ClientID: "web",
		FamilyID: p.fid[s], Issuer: "https://idp.example", Kid: "k1",
		IAT: issued, EXP: issued.Add(15 * time.Minute), IP: p.ip[s], ASN: 64500 + uint32(s%50), Country: "DE", Device: p.device[s],
		LatencyMS: 3, HasLatency: true,
	}
	switch {
	case phase%roundsPerToken == 0:
		e.Kind, e.Service, e.TokenType = event.KindRefresh, "idp", "access"
		e.ParentTokenID = p.tokens[s][(g+generations-1)%generations]
	case i%97 == 0:
		e.Kind = event.KindIntrospect
	case i%211 == 0:
		e.Outcome = event.Expired
		e.EXP = ts.Add(-2 * time.Hour)
	}
}

// BenchmarkObserve is the detectors' cost per event on a mixed stream over
// 50 000 live sessions (validations, refreshes, introspections, rejections).
func BenchmarkObserve(b *testing.B) {
	p := newSessionPool(50_000)
	en, _, _ := newEngine(b, nil)
	var e event.Event
	// Warm up: every session has state before timing starts.
	for i := 0; i < 2*len(p.sid); i++ {
		p.fill(&e, i)
		en.Observe(&e)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.fill(&e, i+2*len(p.sid))
		en.Observe(&e)
	}
	b.StopTimer()
	if fs := en.Flush(); len(fs) != 0 {
		b.Fatalf("benign stream raised %d findings, first %+v", len(fs), fs[0])
	}
}

// measureStateBytes feeds n sessions (login, validations at two services, a
// refresh and validations of the new token) and returns the heap the engine
// grew by, per session.
func measureStateBytes(tb testing.TB, n int) float64 {
	p := newSessionPool(n)
	en, _, _ := newEngine(tb, nil)
	var e event.Event
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for s := range n {
		base := t0.Add(time.Duration(s) * time.Millisecond)
		life := 15 * time.Minute
		p.fill(&e, s)
		e.Kind, e.Service, e.TokenID, e.ParentTokenID, e.TS = event.KindIssue, "idp", p.tokens[s][0], "", base
		e.IAT, e.EXP, e.TokenType, e.Outcome = base, base.Add(life), "access", event.OK
		en.Observe(&e)
		for k := range 3 {
			e.Kind, e.Service, e.TS = event.KindValidate, benchServices[k%2], base.Add(time.Duration(k+1)*time.Second)
			en.Observe(&e)
		}
		e.Kind, e.Service, e.TokenID, e.ParentTokenID = event.KindRefresh, "idp", p.tokens[s][1], p.tokens[s][0]
		e.TS = base.Add(5 * time.Second)
		e.IAT, e.EXP = e.TS, e.TS.Add(life)
		en.Observe(&e)
		for k := range 2 {
			e.Kind, e.Service, e.TS, e.ParentTokenID = event.KindValidate, benchServices[k%2], base.Add(time.Duration(k+6)*time.Second), ""
			en.Observe(&e)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(en)
	runtime.KeepAlive(p)
	if got := en.tokens.len(); got != 2*n {
		tb.Fatalf("tokens held = %d, want %d", got, 2*n)
	}
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// TestStateBytesPerActiveSession reports the detector state one live
// session costs (two tokens, its family, its subject's baseline).
func TestStateBytesPerActiveSession(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates state for 200 000 sessions")
	}
	perSession := measureStateBytes(t, 200_000)
	t.Logf("detector state: %.0f bytes per active session", perSession)
	if perSession > 512 {
		t.Errorf("state per session = %.0f B, regressed past 512 B", perSession)
	}
}

func BenchmarkStateBytesPerSession(b *testing.B) {
	for range b.N {
		b.ReportMetric(measureStateBytes(b, 200_000), "B/session")
	}
}
