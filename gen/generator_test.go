package gen

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/eval"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
)

// testSpec is small enough to run in a fraction of a second and long enough
// for every scenario to play out.
func testSpec(inject string) Spec {
	m, err := ParseInject(inject)
	if err != nil {
		panic(err)
	}
	return Spec{Seed: 7, Rate: 60, Sessions: 200, Duration: 30 * time.Minute, Inject: m}
}

func generate(t *testing.T, spec Spec) ([]event.Event, []eval.Truth, *Generator) {
	t.Helper()
	g, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	var all []event.Event
	for b := g.Next(nil); b != nil; b = g.Next(nil) {
		all = append(all, b...)
	}
	return all, g.Truth(), g
}

func TestSameSeedSameEvents(t *testing.T) {
	a, ta, _ := generate(t, testSpec("all=1"))
	b, tb, _ := generate(t, testSpec("all=1"))
	if len(a) == 0 {
		t.Fatal("no events")
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same spec and seed gave different events")
	}
	if !reflect.DeepEqual(ta, tb) {
		t.Fatal("the same spec and seed gave different truth")
	}
	other := testSpec("all=1")
	other.Seed = 8
	c, _, _ := generate(t, other)
	if len(c) == len(a) && reflect.DeepEqual(a[:100], c[:100]) {
		t.Error("another seed gave the same events")
	}
}

func TestEventsComeInTimestampOrderWithinTheRun(t *testing.T) {
	spec := testSpec("all=1")
	evs, truth, g := generate(t, spec)
	// A service with a skewed clock stamps its events with it: those are
	// checked by the clock_skew property, not here.
	skewed := map[string]bool{}
	for _, tr := range truth {
		if tr.Kind == finding.ClockSkew {
			skewed[tr.Service] = true
		}
	}
	start, end := g.Spec().Start, g.Spec().Start.Add(spec.Duration)
	var last time.Time
	for i, e := range evs {
		if skewed[e.Service] {
			continue
		}
		if e.TS.Before(start) || !e.TS.Before(end) {
			t.Fatalf("event %d at %v is outside the run %v-%v", i, e.TS, start, end)
		}
		if e.TS.Before(last) {
			t.Fatalf("event %d at %v comes after one at %v", i, e.TS, last)
		}
		last = e.TS
	}
	perSecond := float64(len(evs)) / spec.Duration.Seconds()
	if perSecond < spec.Rate*0.8 || perSecond > spec.Rate*1.4 {
		t.Errorf("%.1f events/s, want about the spec's %v", perSecond, spec.Rate)
	}
}

func TestEventsMeetTheContractAndLeakNoCredential(t *testing.T) {
	evs, _, _ := generate(t, testSpec("all=1"))
	dec, err := ingest.NewDecoder(ingest.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	guard, err := redact.New(redact.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var line []byte
	var out []event.Event
	for i := range evs {
		e := evs[i]
		line = ingest.AppendJSON(line[:0], &e)
		var errs []error
		out, errs = dec.Decode(event.Source{Offset: int64(i)}, line, out[:0])
		if len(errs) > 0 || len(out) != 1 {
			t.Fatalf("event %d does not decode: %v\n%s", i, errs, line)
		}
		got := out[0]
		if !got.TS.Equal(e.TS) || got.Kind != e.Kind || got.Outcome != e.Outcome || got.TokenID != e.TokenID ||
			got.SessionID != e.SessionID || got.IP != e.IP || got.BindingOK != e.BindingOK || got.Kid != e.Kid {
			t.Fatalf("event %d does not round-trip:\n got  %+v\n want %+v", i, got, e)
		}
		if leaked := guard.Apply(&e); leaked != nil {
			t.Fatalf("event %d looks like it carries a credential in %v: %s", i, leaked, line)
		}
		if e.Extra != nil {
			t.Fatalf("event %d carries extra fields %v: nothing outside the contract may tell attacks apart", i, e.Extra)
		}
	}
}

func TestTrafficLooksLikeProduction(t *testing.T) {
	evs, _, _ := generate(t, testSpec(""))
	kinds := map[event.Kind]int{}
	outcomes := map[event.Outcome]int{}
	services := map[string]bool{}
	var v6, v4 int
	var latencies []float64
	var sizes []int32
	for _, e := range evs {
		kinds[e.Kind]++
		services[e.Service] = true
		if e.Kind == event.KindValidate {
			outcomes[e.Outcome]++
			latencies = append(latencies, e.LatencyMS)
			sizes = append(sizes, e.TokenBytes)
		}
		if e.IP.Is6() {
			v6++
		} else if e.IP.Is4() {
			v4++
		}
	}
	validations := kinds[event.KindValidate]
	checks := []struct {
		name string
		ok   bool
	}{
		{"validations are most of the traffic", validations > len(evs)*8/10},
		{"sessions log in, refresh, log out and introspect", kinds[event.KindIssue] > 0 && kinds[event.KindRefresh] > 0 && kinds[event.KindRevoke] > 0 && kinds[event.KindIntrospect] > 0},
		{"almost every validation is ok", outcomes[event.OK] > validations*97/100},
		{"some tokens are presented after they expired", outcomes[event.Expired] > 0},
		{"internal errors are rare but present", outcomes[event.Error] > 0 && outcomes[event.Error] < validations/200},
		{"the IdP, the gateway and the backends all report", services["idp"] && services["gateway"] && len(services) == 2+4},
		{"some clients are on IPv6", v6 > 0 && v6 < v4},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: kinds %v, validate outcomes %v, services %v, v4 %d v6 %d", c.name, kinds, outcomes, services, v4, v6)
		}
	}
	sort.Float64s(latencies)
	p50, p99 := latencies[len(latencies)/2], latencies[len(latencies)*99/100]
	if p50 < 0.5 || p50 > 6 || p99 < 2*p50 {
		t.Errorf("validation latency p50 %.2f ms p99 %.2f ms: want a few ms with a tail", p50, p99)
	}
	slices.Sort(sizes)
	if sizes[0] < 700 || sizes[len(sizes)-1] > 1400 {
		t.Errorf("access tokens of %d-%d bytes, want 700-1400", sizes[0], sizes[len(sizes)-1])
	}
}

func TestEveryScenarioIsInjectedAsOftenAsAsked(t *testing.T) {
	for _, seed := range []uint64{7, 11, 23} {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			spec := testSpec("all=2,clock_skew_ahead=1")
			spec.Seed = seed
			checkInjectedCounts(t, spec)
		})
	}
}

func checkInjectedCounts(t *testing.T, spec Spec) {
	_, truth, g := generate(t, spec)
	want := 0
	for _, n := range spec.Inject {
		want += n
	}
	if g.Planned() != want {
		t.Errorf("planned %d instances, want %d", g.Planned(), want)
	}
	got := map[string]int{}
	for _, tr := range truth {
		got[tr.Scenario]++
		sc, _ := scenarioByName(tr.Scenario)
		if tr.Kind != sc.Kind || tr.Attack != sc.Attack {
			t.Errorf("%s recorded as kind %s attack %v, want %s %v", tr.Scenario, tr.Kind, tr.Attack, sc.Kind, sc.Attack)
		}
		if tr.Start.IsZero() {
			t.Errorf("%s has no start", tr.Scenario)
		}
	}
	for _, name := range ScenarioNames() {
		if got[name] != spec.Inject[name] {
			t.Errorf("%s: %d in the truth, want %d", name, got[name], spec.Inject[name])
		}
	}
}

// index groups a run's events for the property checks.
type index struct {
	evs      []event.Event
	byToken  map[string][]event.Event
	byFamily map[string][]event.Event // refresh events
	nat      []netip.Prefix
}

func newIndex(evs []event.Event, nat []netip.Prefix) *index {
	ix := &index{evs: evs, byToken: map[string][]event.Event{}, byFamily: map[string][]event.Event{}, nat: nat}
	for _, e := range evs {
		if e.TokenID != "" {
			ix.byToken[e.TokenID] = append(ix.byToken[e.TokenID], e)
		}
		if e.Kind == event.KindRefresh {
			ix.byFamily[e.FamilyID] = append(ix.byFamily[e.FamilyID], e)
		}
	}
	return ix
}

func prefixOf(a netip.Addr) netip.Prefix {
	bits := 24
	if a.Is6() {
		bits = 48
	}
	p, _ := a.Prefix(bits)
	return p
}

func distinct[T comparable](evs []event.Event, f func(event.Event) T) []T {
	var out []T
	for _, e := range evs {
		if v := f(e); !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func TestInjectedScenariosHaveTheirProperties(t *testing.T) {
	spec := testSpec("all=2,clock_skew_ahead=1")
	evs, truth, g := generate(t, spec)
	skewed := map[string]bool{}
	for _, tr := range truth {
		if tr.Kind == finding.ClockSkew {
			skewed[tr.Service] = true
		}
	}
	var nat []netip.Prefix
	for _, r := range g.Spec().NATEgress {
		nat = append(nat, r.Prefix)
	}
	ix := newIndex(evs, nat)

	checks := map[string]func(t *testing.T, tr eval.Truth){
		ScenarioReplay: func(t *testing.T, tr eval.Truth) {
			uses := ix.byToken[tr.TokenID]
			devices := distinct(uses, func(e event.Event) string { return e.Device })
			asns := distinct(uses, func(e event.Event) uint32 { return e.ASN })
			nets := distinct(uses, func(e event.Event) netip.Prefix { return prefixOf(e.IP) })
			countries := distinct(uses, func(e event.Event) string { return e.Country })
			if len(devices) < 2 || len(asns) < 2 || len(nets) < 2 || len(countries) < 2 {
				t.Errorf("token used by devices %v, ASNs %v, nets %v, countries %v: want two of each", devices, asns, nets, countries)
			}
			for _, e := range uses {
				if !e.TS.Before(e.EXP) && e.Outcome == event.OK {
					t.Errorf("accepted after expiry at %v", e.TS)
				}
			}
		},
		ScenarioPoPFailure: func(t *testing.T, tr eval.Truth) {
			for _, e := range ix.byToken[tr.TokenID] {
				if e.Binding == "dpop" && e.BindingOK == event.False && !e.TS.Before(tr.Start) {
					return
				}
			}
			t.Error("no failed DPoP proof for the token")
		},
		ScenarioRefreshReuseIdP: func(t *testing.T, tr eval.Truth) {
			var reused, familyRevoked bool
			for _, e := range evs {
				reused = reused || (e.Kind == event.KindRefresh && e.Outcome == event.Reused && e.ParentTokenID == tr.TokenID && e.FamilyID == tr.FamilyID)
				familyRevoked = familyRevoked || (e.Kind == event.KindRevoke && e.Target == "family" && e.FamilyID == tr.FamilyID)
			}
			if !reused || !familyRevoked {
				t.Errorf("reused reported %v, family revoked %v: want both", reused, familyRevoked)
			}
		},
		ScenarioRefreshReuseTwoDevices: func(t *testing.T, tr eval.Truth) {
			var ex []event.Event
			for _, e := range ix.byFamily[tr.FamilyID] {
				if e.ParentTokenID == tr.TokenID && e.Outcome == event.OK {
					ex = append(ex, e)
				}
			}
			if len(ex) != 2 || ex[0].Device == ex[1].Device || ex[1].TS.Sub(ex[0].TS) <= 2*time.Second {
				t.Errorf("want two accepted exchanges of the parent from two devices over 2 s apart, got %d", len(ex))
			}
		},
		ScenarioRefreshRateFamily: func(t *testing.T, tr eval.Truth) {
			var fast int
			refs := ix.byFamily[tr.FamilyID]
			for i := 1; i < len(refs); i++ {
				if refs[i].TS.Sub(refs[i-1].TS) <= 20*time.Second {
					fast++
				}
			}
			if fast < 19 {
				t.Errorf("%d refreshes within 20 s of the previous one, want at least 19 (tokens live %v)", fast, refs[0].EXP.Sub(refs[0].IAT))
			}
		},
		ScenarioRefreshRateClient: func(t *testing.T, tr eval.Truth) {
			var before, after int
			for _, e := range evs {
				if e.Kind != event.KindRefresh || e.ClientID != tr.ClientID {
					continue
				}
				switch d := e.TS.Sub(tr.Start); {
				case d < 0 && d >= -5*time.Minute:
					before++
				case d >= 0 && d < 5*time.Minute:
					after++
				}
			}
			if after < 5*max(before, 1) {
				t.Errorf("client refreshed %d times in the 5 min before and %d after: want a jump of 5x or more", before, after)
			}
		},
		ScenarioRefreshNewDevice: func(t *testing.T, tr eval.Truth) {
			refs := ix.byFamily[tr.FamilyID]
			devices := distinct(refs, func(e event.Event) string { return e.Device })
			parents := distinct(refs, func(e event.Event) string { return e.ParentTokenID })
			if len(devices) < 2 {
				t.Errorf("family refreshed from devices %v, want a second one", devices)
			}
			if len(parents) != len(refs) {
				t.Error("a parent was exchanged twice: this scenario must not look like reuse")
			}
		},
		ScenarioSlowRevocation: func(t *testing.T, tr eval.Truth) {
			revokedAt, lastOK, firstRejection := revocationAt(t, ix, tr)
			if lastOK.Sub(revokedAt) <= time.Minute || firstRejection.IsZero() || firstRejection.Sub(revokedAt) > 10*time.Minute {
				t.Errorf("%s accepted until %v after the revoke and rejected at %v: want over 60 s, then a rejection", tr.Service, lastOK.Sub(revokedAt), firstRejection.Sub(revokedAt))
			}
		},
		ScenarioRevocationNotPropagated: func(t *testing.T, tr eval.Truth) {
			revokedAt, lastOK, firstRejection := revocationAt(t, ix, tr)
			if lastOK.Sub(revokedAt) <= time.Minute || !firstRejection.IsZero() {
				t.Errorf("%s accepted until %v after the revoke, rejected as revoked at %v: want over 60 s and never", tr.Service, lastOK.Sub(revokedAt), firstRejection)
			}
		},
		ScenarioKeyRotationBreak: func(t *testing.T, tr eval.Truth) {
			rotated, failures := rotationFailures(ix, tr)
			if rotated.IsZero() || rotated.After(tr.Start) || failures < 5 {
				t.Errorf("kid rotated in at %v, %d failures at %s: want a rotation before the start and 5+ failures", rotated, failures, tr.Service)
			}
		},
		ScenarioUnknownKid: func(t *testing.T, tr eval.Truth) {
			rotated, failures := rotationFailures(ix, tr)
			if !rotated.IsZero() || failures < 10 {
				t.Errorf("kid rotated in at %v, %d failures: want no rotation and 10+ failures", rotated, failures)
			}
		},
		ScenarioClockSkew: func(t *testing.T, tr eval.Truth) {
			// Near the boundary: rejected as expired up to 10 min after exp,
			// or as not yet valid up to 10 min before iat, by the service's
			// own timestamps. The skewed service must have far more of them.
			near := func(e event.Event) bool {
				switch e.Outcome {
				case event.Expired:
					d := e.TS.Sub(e.EXP)
					return d > 0 && d <= 10*time.Minute
				case event.NotYetValid:
					d := e.IAT.Sub(e.TS)
					return d > 0 && d <= 10*time.Minute
				}
				return false
			}
			var at, atNear, rest, restNear int
			for _, e := range evs {
				if e.Kind != event.KindValidate || e.TS.Before(tr.Start) || e.TS.After(tr.Start.Add(5*time.Minute)) {
					continue
				}
				if skewed[e.Service] && e.Service != tr.Service {
					continue // another skew instance
				}
				if e.Service == tr.Service {
					at++
					if near(e) {
						atNear++
					}
				} else {
					rest++
					if near(e) {
						restNear++
					}
				}
			}
			if atNear < 10 || float64(atNear)/float64(at) < 5*float64(restNear)/float64(rest) {
				t.Errorf("%s: %d of %d validations rejected near the token's boundary, the rest %d of %d: want 10+ and 5x the rest's share", tr.Service, atNear, at, restNear, rest)
			}
		},
		ScenarioClockSkewAhead: nil, // set below: the same check
		ScenarioSameSubnet: func(t *testing.T, tr eval.Truth) {
			uses := ix.byToken[tr.TokenID]
			ips := distinct(uses, func(e event.Event) netip.Addr { return e.IP })
			nets := distinct(uses, func(e event.Event) netip.Prefix { return prefixOf(e.IP) })
			asns := distinct(uses, func(e event.Event) uint32 { return e.ASN })
			devices := distinct(uses, func(e event.Event) string { return e.Device })
			if len(ips) < 2 || len(nets) != 1 || len(asns) != 1 || len(devices) != 1 || devices[0] != "" {
				t.Errorf("addresses %v in nets %v, ASNs %v, devices %q: want 2+ addresses in one /24 or /48, one ASN, no device", ips, nets, asns, devices)
			}
		},
		ScenarioNATEgress: func(t *testing.T, tr eval.Truth) {
			uses := ix.byToken[tr.TokenID]
			nets := distinct(uses, func(e event.Event) netip.Prefix { return prefixOf(e.IP) })
			asns := distinct(uses, func(e event.Event) uint32 { return e.ASN })
			for _, e := range uses {
				if !slices.ContainsFunc(ix.nat, func(p netip.Prefix) bool { return p.Contains(e.IP) }) {
					t.Errorf("address %v is outside the NAT egress ranges %v", e.IP, ix.nat)
				}
			}
			if len(nets) < 2 || len(asns) < 2 {
				t.Errorf("nets %v ASNs %v: want the token seen behind two egress ranges", nets, asns)
			}
		},
		ScenarioDeviceMoves: func(t *testing.T, tr eval.Truth) {
			uses := ix.byToken[tr.TokenID]
			devices := distinct(uses, func(e event.Event) string { return e.Device })
			asns := distinct(uses, func(e event.Event) uint32 { return e.ASN })
			if len(devices) != 1 || devices[0] == "" || len(asns) < 2 {
				t.Errorf("devices %v ASNs %v: want one device on two networks", devices, asns)
			}
		},
		ScenarioRefreshRace: func(t *testing.T, tr eval.Truth) {
			var ex []event.Event
			for _, e := range ix.byFamily[tr.FamilyID] {
				if e.ParentTokenID == tr.TokenID {
					ex = append(ex, e)
				}
			}
			if len(ex) != 2 || ex[0].Device != ex[1].Device || ex[1].TS.Sub(ex[0].TS) >= 2*time.Second {
				t.Errorf("want two exchanges of the parent from one device within 2 s, got %d", len(ex))
			}
		},
		ScenarioFastRevocation: func(t *testing.T, tr eval.Truth) {
			var rejected int
			for _, e := range ix.byToken[tr.TokenID] {
				// A skewed service's stamps say nothing about the order.
				if e.Kind == event.KindValidate && !e.TS.Before(tr.Start) && !skewed[e.Service] {
					if e.Outcome == event.OK {
						t.Errorf("%s accepted the token %v after the revoke", e.Service, e.TS.Sub(tr.Start))
					}
					rejected++
				}
			}
			if rejected < 3 {
				t.Errorf("%d rejections after the revoke, want several", rejected)
			}
		},
		ScenarioKeyRotationHandled: func(t *testing.T, tr eval.Truth) {
			rotated, failures := rotationFailures(ix, tr)
			if rotated.IsZero() || failures != 0 {
				t.Errorf("rotated at %v with %d failures: want a rotation nobody fails", rotated, failures)
			}
		},
		ScenarioBusyClient: func(t *testing.T, tr eval.Truth) {
			var first, last int
			for _, e := range evs {
				if e.Kind == event.KindRefresh && e.ClientID == tr.ClientID {
					switch d := e.TS.Sub(g.Spec().Start); {
					case d >= 5*time.Minute && d < 15*time.Minute:
						first++
					case d >= 20*time.Minute:
						last++
					}
				}
			}
			if first < 15 || last < first/2 || last > first*2 {
				t.Errorf("%d refreshes in minutes 5-15 and %d in the last 10: want many, steady", first, last)
			}
		},
	}
	checks[ScenarioClockSkewAhead] = checks[ScenarioClockSkew]
	checks[ScenarioReplaySameCountry] = func(t *testing.T, tr eval.Truth) {
		uses := ix.byToken[tr.TokenID]
		devices := distinct(uses, func(e event.Event) string { return e.Device })
		asns := distinct(uses, func(e event.Event) uint32 { return e.ASN })
		nets := distinct(uses, func(e event.Event) netip.Prefix { return prefixOf(e.IP) })
		countries := distinct(uses, func(e event.Event) string { return e.Country })
		if len(devices) != 1 || devices[0] != "" || len(asns) < 2 || len(nets) < 2 || len(countries) != 1 {
			t.Errorf("devices %q, ASNs %v, nets %v, countries %v: want no device id, two ASNs and nets, one country", devices, asns, nets, countries)
		}
	}
	checks[ScenarioRefreshReuseInGrace] = func(t *testing.T, tr eval.Truth) {
		var ex []event.Event
		for _, e := range ix.byFamily[tr.FamilyID] {
			if e.ParentTokenID == tr.TokenID && e.Outcome == event.OK {
				ex = append(ex, e)
			}
		}
		if len(ex) != 2 || ex[0].Device == ex[1].Device || ex[1].TS.Sub(ex[0].TS) >= 2*time.Second {
			t.Errorf("want two accepted exchanges of the parent from two devices within 2 s, got %d", len(ex))
		}
	}
	oneDevice := func(t *testing.T, uses []event.Event, want string) []event.Event {
		devices := distinct(uses, func(e event.Event) string { return e.Device })
		if len(devices) != 1 || (want == "none") != (devices[0] == "") {
			t.Errorf("devices %q: want one, %s", devices, want)
		}
		return uses
	}
	checks[ScenarioCGNATMobile] = func(t *testing.T, tr eval.Truth) {
		uses := oneDevice(t, ix.byToken[tr.TokenID], "reported")
		asns := distinct(uses, func(e event.Event) uint32 { return e.ASN })
		nets := distinct(uses, func(e event.Event) netip.Prefix { return prefixOf(e.IP) })
		if len(asns) != 1 || len(nets) < 2 || !uses[0].IP.Is4() {
			t.Errorf("ASNs %v nets %v: want IPv4 /24s of one ASN", asns, nets)
		}
	}
	checks[ScenarioIPv6Privacy] = func(t *testing.T, tr eval.Truth) {
		uses := oneDevice(t, ix.byToken[tr.TokenID], "none")
		ips := distinct(uses, func(e event.Event) netip.Addr { return e.IP })
		p64 := distinct(uses, func(e event.Event) netip.Prefix { p, _ := e.IP.Prefix(64); return p })
		if len(ips) < 2 || len(p64) != 1 || !uses[0].IP.Is6() {
			t.Errorf("addresses %v in /64s %v: want several IPv6 addresses in one /64", ips, p64)
		}
	}
	checks[ScenarioDualStack] = func(t *testing.T, tr eval.Truth) {
		uses := oneDevice(t, ix.byToken[tr.TokenID], "none")
		asns := distinct(uses, func(e event.Event) uint32 { return e.ASN })
		families := distinct(uses, func(e event.Event) bool { return e.IP.Is6() })
		if len(asns) != 1 || len(families) != 2 {
			t.Errorf("ASNs %v, IPv6 %v: want IPv4 and IPv6 addresses of one ASN", asns, families)
		}
	}
	checks[ScenarioVPNSwitch] = func(t *testing.T, tr eval.Truth) {
		uses := oneDevice(t, ix.byToken[tr.TokenID], "reported")
		asns := distinct(uses, func(e event.Event) uint32 { return e.ASN })
		countries := distinct(uses, func(e event.Event) string { return e.Country })
		if len(asns) < 2 || len(countries) < 2 {
			t.Errorf("ASNs %v countries %v: want the VPN exit's network and country besides home", asns, countries)
		}
	}
	// audience scenarios: validations at a service whose audience and
	// expected audience say what SIGNALS.md's shapes say.
	atService := func(svc string, match func(e event.Event) bool) (n int) {
		for _, e := range evs {
			if e.Kind == event.KindValidate && e.Service == svc && match(e) {
				n++
			}
		}
		return n
	}
	checks[ScenarioAudienceAccepted] = func(t *testing.T, tr eval.Truth) {
		n := atService(tr.Service, func(e event.Event) bool {
			return e.Outcome == event.OK && e.Audience != e.ExpectedAudience && !strings.Contains(e.Audience, e.ExpectedAudience)
		})
		if n < 5 {
			t.Errorf("%d accepted validations of another audience at %s, want several", n, tr.Service)
		}
	}
	checks[ScenarioAudienceProbe] = func(t *testing.T, tr eval.Truth) {
		var tries []event.Event
		for _, e := range ix.byToken[tr.TokenID] {
			if e.Outcome == event.BadAudience {
				tries = append(tries, e)
			}
		}
		svcs := distinct(tries, func(e event.Event) string { return e.Service })
		if len(svcs) < 3 || tries[len(tries)-1].TS.Sub(tries[0].TS) > 10*time.Minute {
			t.Errorf("bad_audience at %v over %v: want 3 or more services within 10 minutes", svcs, tries[len(tries)-1].TS.Sub(tries[0].TS))
		}
	}
	checks[ScenarioAudienceMisrouted] = func(t *testing.T, tr eval.Truth) {
		uses := ix.byToken[tr.TokenID]
		svcs := distinct(uses, func(e event.Event) string { return e.Service })
		if len(uses) < 10 || len(svcs) != 1 || uses[0].Outcome != event.BadAudience {
			t.Errorf("%d uses at %v: want many bad_audience rejections at one service", len(uses), svcs)
		}
	}
	checks[ScenarioAudienceList] = func(t *testing.T, tr eval.Truth) {
		n := atService(tr.Service, func(e event.Event) bool {
			return e.Outcome == event.OK && strings.Contains(e.Audience, ",") && strings.Contains(e.Audience, e.ExpectedAudience)
		})
		if n < 5 {
			t.Errorf("%d accepted validations with an audience list containing the expected one at %s, want several", n, tr.Service)
		}
	}
	for _, tr := range truth {
		check, ok := checks[tr.Scenario]
		if !ok {
			t.Errorf("no property check for %s", tr.Scenario)
			continue
		}
		t.Run(tr.Scenario+" "+describeTruth(tr), func(t *testing.T) { check(t, tr) })
	}
}

func describeTruth(tr eval.Truth) string {
	for _, v := range []string{tr.FamilyID, tr.TokenID, tr.Kid, tr.ClientID, tr.Service} {
		if v != "" {
			return v
		}
	}
	return ""
}

// revocationAt finds the revoke of tr's session and, at tr's service, the
// last acceptance and the first revoked rejection of tr's token after it.
func revocationAt(t *testing.T, ix *index, tr eval.Truth) (revokedAt, lastOK, firstRejection time.Time) {
	t.Helper()
	for _, e := range ix.evs {
		if e.Kind == event.KindRevoke && e.SessionID == tr.SessionID {
			revokedAt = e.TS
			break
		}
	}
	if revokedAt.IsZero() {
		t.Fatal("no revoke for the session")
	}
	for _, e := range ix.byToken[tr.TokenID] {
		if e.Kind != event.KindValidate || e.Service != tr.Service || e.TS.Before(revokedAt) {
			continue
		}
		switch e.Outcome {
		case event.OK:
			lastOK = e.TS
		case event.Revoked:
			if firstRejection.IsZero() {
				firstRejection = e.TS
			}
		}
	}
	return revokedAt, lastOK, firstRejection
}

// rotationFailures finds when tr's kid was rotated in (zero if never) and
// how many kid failures tr's service (or any, when tr names none) reported.
func rotationFailures(ix *index, tr eval.Truth) (rotated time.Time, failures int) {
	for _, e := range ix.evs {
		if e.Kind == event.KindKeyRotate && e.Kid == tr.Kid {
			rotated = e.TS
		}
		if e.Kind == event.KindValidate && e.Kid == tr.Kid && (tr.Service == "" || e.Service == tr.Service) &&
			(e.Outcome == event.UnknownKid || e.Outcome == event.BadSignature) {
			failures++
		}
	}
	return rotated, failures
}

func TestSpecValidation(t *testing.T) {
	tests := []struct {
		name    string
		spec    Spec
		wantErr string
	}{
		{"defaults are valid", Spec{}, ""},
		{"an unknown scenario is refused", Spec{Inject: map[string]int{"teleport": 1}}, "unknown scenario"},
		{"a negative count is refused", Spec{Inject: map[string]int{ScenarioReplay: -1}}, "negative"},
		{"a run too short for the scenario is refused", Spec{Duration: 5 * time.Minute, Inject: map[string]int{ScenarioRevocationNotPropagated: 1}}, "needs a duration"},
		{"more clock skews than services is refused", Spec{Services: 2, Inject: map[string]int{ScenarioClockSkew: 3}}, "clock_skew"},
		{"too many services is refused", Spec{Services: 99}, "services"},
		{"a reversed token lifetime range is refused", Spec{AccessTTLMin: 20 * time.Minute, AccessTTLMax: 10 * time.Minute}, "access TTL"},
		{"a NAT range without an ASN is refused", Spec{NATEgress: []NATRange{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Country: "DE"}}}, "NAT egress"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseInject(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]int
		wantErr bool
	}{
		{"replay=3, nat_egress=2", map[string]int{"replay": 3, "nat_egress": 2}, false},
		{"", map[string]int{}, false},
		{"replay", nil, true},
		{"replay=x", nil, true},
		{"teleport=1", nil, true},
	}
	for _, tc := range tests {
		got, err := ParseInject(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("ParseInject(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
	all, _ := ParseInject("all=2")
	if len(all) != len(scenarios)-1 || all[ScenarioClockSkewAhead] != 0 {
		t.Errorf("all=2 set %v: want every scenario but clock_skew_ahead", all)
	}
}

func TestNATPrefixesMatchTheRanges(t *testing.T) {
	s := Default()
	got := s.NATPrefixes()
	want := []string{"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("NAT prefixes %v, want %v", got, want)
	}
}

func TestScenarioKindsAreDetectionKinds(t *testing.T) {
	for _, s := range Scenarios() {
		if !slices.Contains(finding.Kinds(), s.Kind) {
			t.Errorf("%s resembles %q, not a detection kind", s.Name, s.Kind)
		}
		if launchers[s.Name] == nil && s.Name != ScenarioBusyClient && s.Name != ScenarioRefreshRateClient {
			t.Errorf("%s has no launcher", s.Name)
		}
	}
}

// BenchmarkGenerate reports the generator's cost per event, the figure that
// bounds how fast `tokenwatch gen` and the benchmark can feed Kafka.
func BenchmarkGenerate(b *testing.B) {
	spec := testSpec("all=1")
	spec.Rate, spec.Sessions = 2000, 5000
	b.ReportAllocs()
	n := 0
	batch := make([]event.Event, 0, 1024)
	for b.Loop() {
		g, err := New(spec)
		if err != nil {
			b.Fatal(err)
		}
		for evs := g.Next(batch); evs != nil; evs = g.Next(batch) {
			n += len(evs)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
}
