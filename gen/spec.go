package gen

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tokenwatch/tokenwatch/finding"
)

// Spec describes the traffic to generate. The zero value of a field means its
// default (see Default); Validate explains what is wrong with a spec.
type Spec struct {
	// Seed makes the run reproducible: the same spec gives the same events.
	Seed uint64
	// Start is the timestamp of the first simulated instant. Live mode sets
	// it to the wall clock so the events look current.
	Start time.Time
	// Duration of simulated time; Next returns nil after it.
	Duration time.Duration
	// Rate is the target events per second of simulated time, over all
	// services together (validations dominate; issue, refresh, revoke,
	// introspect and key_rotate ride on top).
	Rate float64
	// Sessions is how many sessions are active at once.
	Sessions int
	// Services is how many backend services validate tokens, besides the
	// IdP ("idp") and the API gateway ("gateway"); at most len(backendNames).
	Services int
	// AccessTTLMin and AccessTTLMax bound access-token lifetimes; each client
	// picks one lifetime in the range, in whole minutes.
	AccessTTLMin, AccessTTLMax time.Duration
	// RefreshTTL is the refresh token's lifetime.
	RefreshTTL time.Duration
	// KeyRotateEvery is how often each issuer rotates its signing key in
	// ordinary traffic (0: only the injected rotations).
	KeyRotateEvery time.Duration
	// NATEgress are the known NAT egress ranges: addresses many unrelated
	// clients share, and across which one client may hop. The detector's
	// config must list the same CIDRs (NATPrefixes gives them).
	NATEgress []NATRange
	// Inject counts scenario instances by name (Scenarios lists the names):
	// attacks the detectors must report and look-alikes they must not.
	Inject map[string]int
}

// NATRange is a NAT egress range with the network it belongs to.
type NATRange struct {
	Prefix  netip.Prefix `json:"prefix"`
	ASN     uint32       `json:"asn"`
	Country string       `json:"country"`
}

// DefaultNATEgress are the generator's NAT ranges: three documentation
// prefixes of one corporate egress provider, each announced by its own ASN,
// so hopping between them changes both the /24 and the ASN.
func DefaultNATEgress() []NATRange {
	return []NATRange{
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), ASN: 64500, Country: "DE"},
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), ASN: 64501, Country: "DE"},
		{Prefix: netip.MustParsePrefix("203.0.113.0/24"), ASN: 64502, Country: "DE"},
	}
}

// NATPrefixes returns the spec's NAT egress CIDRs as strings, in the form the
// detector config lists them.
func (s Spec) NATPrefixes() []string {
	out := make([]string, 0, len(s.NATEgress))
	for _, r := range s.NATEgress {
		out = append(out, r.Prefix.String())
	}
	return out
}

// Default returns the defaults Validate fills in: 30 minutes of traffic at
// 500 events/s from 1000 concurrent sessions over 4 backend services.
func Default() Spec {
	return Spec{
		Seed:           1,
		Start:          time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC),
		Duration:       30 * time.Minute,
		Rate:           500,
		Sessions:       1000,
		Services:       4,
		AccessTTLMin:   5 * time.Minute,
		AccessTTLMax:   15 * time.Minute,
		RefreshTTL:     24 * time.Hour,
		KeyRotateEvery: time.Hour,
		NATEgress:      DefaultNATEgress(),
	}
}

// withDefaults fills the zero fields from Default.
func (s Spec) withDefaults() Spec {
	d := Default()
	if s.Seed == 0 {
		s.Seed = d.Seed
	}
	if s.Start.IsZero() {
		s.Start = d.Start
	}
	// Event times are kept to the millisecond, the precision the JSON
	// encoder writes and the store keeps, so an event reads back exactly as
	// it was generated; a wall-clock Start is truncated to match.
	s.Start = s.Start.Truncate(time.Millisecond)
	if s.Duration == 0 {
		s.Duration = d.Duration
	}
	if s.Rate == 0 {
		s.Rate = d.Rate
	}
	if s.Sessions == 0 {
		s.Sessions = d.Sessions
	}
	if s.Services == 0 {
		s.Services = d.Services
	}
	if s.AccessTTLMin == 0 {
		s.AccessTTLMin = d.AccessTTLMin
	}
	if s.AccessTTLMax == 0 {
		s.AccessTTLMax = max(d.AccessTTLMax, s.AccessTTLMin)
	}
	if s.RefreshTTL == 0 {
		s.RefreshTTL = d.RefreshTTL
	}
	if s.NATEgress == nil {
		s.NATEgress = d.NATEgress
	}
	return s
}

// Validate reports the first thing wrong with the spec (after defaults),
// including a duration too short for an injected scenario to play out.
func (s Spec) Validate() error {
	s = s.withDefaults()
	switch {
	case s.Duration < 2*time.Minute:
		return fmt.Errorf("gen spec: duration %v is under the 2m minimum", s.Duration)
	case s.Rate <= 0:
		return fmt.Errorf("gen spec: rate %v must be positive", s.Rate)
	case s.Sessions < 1:
		return fmt.Errorf("gen spec: sessions %d must be at least 1", s.Sessions)
	case s.Services < 1 || s.Services > len(backendNames):
		return fmt.Errorf("gen spec: services %d must be between 1 and %d", s.Services, len(backendNames))
	case s.AccessTTLMin < time.Minute || s.AccessTTLMax < s.AccessTTLMin:
		return fmt.Errorf("gen spec: access TTL range %v-%v must start at 1m or more and not be reversed", s.AccessTTLMin, s.AccessTTLMax)
	case s.RefreshTTL < s.AccessTTLMax:
		return fmt.Errorf("gen spec: refresh TTL %v is shorter than the longest access TTL %v", s.RefreshTTL, s.AccessTTLMax)
	case s.KeyRotateEvery < 0:
		return fmt.Errorf("gen spec: key rotation interval %v is negative", s.KeyRotateEvery)
	}
	for i, r := range s.NATEgress {
		if !r.Prefix.IsValid() || r.ASN == 0 || r.Country == "" {
			return fmt.Errorf("gen spec: NAT egress range %d needs a prefix, an ASN and a country", i)
		}
	}
	for _, name := range sortedKeys(s.Inject) {
		n := s.Inject[name]
		sc, ok := scenarioByName(name)
		if !ok {
			return fmt.Errorf("gen spec: unknown scenario %q (known: %s)", name, strings.Join(ScenarioNames(), ", "))
		}
		if n < 0 {
			return fmt.Errorf("gen spec: scenario %s count %d is negative", name, n)
		}
		if n == 0 {
			continue
		}
		if need := sc.span(s) + time.Minute; s.Duration < need {
			return fmt.Errorf("gen spec: scenario %s needs a duration of at least %v to play out, have %v", name, need, s.Duration)
		}
		if name == ScenarioNATEgress && len(s.NATEgress) < 2 {
			return fmt.Errorf("gen spec: scenario %s needs at least two NAT egress ranges", name)
		}
	}
	if n := s.Inject[ScenarioClockSkew] + s.Inject[ScenarioClockSkewAhead]; n > s.Services {
		return fmt.Errorf("gen spec: %d clock_skew instances need as many backend services, have %d", n, s.Services)
	}
	return nil
}

// Scenario names: attacks first, then look-alikes.
const (
	ScenarioReplay                  = "replay"
	ScenarioPoPFailure              = "pop_failure"
	ScenarioRefreshReuseIdP         = "refresh_reuse_idp"
	ScenarioRefreshReuseTwoDevices  = "refresh_reuse_two_devices"
	ScenarioRefreshRateFamily       = "refresh_rate_family"
	ScenarioRefreshRateClient       = "refresh_rate_client"
	ScenarioRefreshNewDevice        = "refresh_new_device"
	ScenarioSlowRevocation          = "slow_revocation"
	ScenarioRevocationNotPropagated = "revocation_not_propagated"
	ScenarioKeyRotationBreak        = "key_rotation_break"
	ScenarioUnknownKid              = "unknown_kid"
	ScenarioClockSkew               = "clock_skew"
	ScenarioClockSkewAhead          = "clock_skew_ahead"
	ScenarioReplaySameCountry       = "replay_same_country"
	ScenarioRefreshReuseInGrace     = "refresh_reuse_in_grace"
	ScenarioAudienceAccepted        = "audience_accepted"
	ScenarioAudienceProbe           = "audience_probe"

	ScenarioSameSubnet         = "same_subnet"
	ScenarioNATEgress          = "nat_egress"
	ScenarioDeviceMoves        = "device_moves"
	ScenarioRefreshRace        = "refresh_race"
	ScenarioFastRevocation     = "fast_revocation"
	ScenarioKeyRotationHandled = "key_rotation_handled"
	ScenarioBusyClient         = "busy_client"
	ScenarioCGNATMobile        = "cgnat_mobile"
	ScenarioIPv6Privacy        = "ipv6_privacy"
	ScenarioDualStack          = "dual_stack"
	ScenarioVPNSwitch          = "vpn_switch"
	ScenarioAudienceMisrouted  = "audience_misrouted"
	ScenarioAudienceList       = "audience_list"
)

// ScenarioInfo describes one injectable scenario.
type ScenarioInfo struct {
	Name   string
	Kind   finding.Kind // the detection it is, or resembles
	Attack bool         // false: a look-alike that must not be reported
	Doc    string
}

// scenario is a ScenarioInfo plus how long it needs to play out, and
// whether it distorts other scenarios' signals (left out of all=N).
type scenario struct {
	ScenarioInfo
	span      func(Spec) time.Duration
	confounds bool
}

// ownRand lists the scenarios added after the first set: they draw from the
// generator's own stream (Generator.ownStream), so a seed's other events
// stay as they were.
var ownRand = map[string]bool{
	ScenarioAudienceAccepted: true, ScenarioAudienceProbe: true, ScenarioAudienceMisrouted: true, ScenarioAudienceList: true,
}

var scenarios = []scenario{
	{ScenarioInfo{ScenarioReplay, finding.Replay, true, "an access token used from a second device in another ASN, /24 and a far country within its lifetime"}, spanFirstToken, false},
	{ScenarioInfo{ScenarioPoPFailure, finding.Replay, true, "a DPoP-bound token presented by another device whose proof fails (binding_ok=false)"}, spanFirstToken, false},
	{ScenarioInfo{ScenarioRefreshReuseIdP, finding.RefreshReuse, true, "a rotated refresh token presented again from another device; the IdP answers reused and revokes the family"}, spanFirstRefresh, false},
	{ScenarioInfo{ScenarioRefreshReuseTwoDevices, finding.RefreshReuse, true, "the same parent refresh token exchanged twice from two devices more than the grace window apart; the IdP accepts both"}, spanFirstRefresh, false},
	{ScenarioInfo{ScenarioRefreshRateFamily, finding.RefreshAnomaly, true, "a family refreshing every few seconds, far more often than its token lifetime implies"}, spanFirstRefresh, false},
	{ScenarioInfo{ScenarioRefreshRateClient, finding.RefreshAnomaly, true, "a client's refresh rate jumping far above its own baseline as harvested refresh tokens are exercised"}, spanClientSurge, false},
	{ScenarioInfo{ScenarioRefreshNewDevice, finding.RefreshAnomaly, true, "a family's refresh token taken over by a new device on a new network"}, spanFirstRefresh, false},
	{ScenarioInfo{ScenarioSlowRevocation, finding.SlowRevocation, true, "after a logout one service keeps accepting the token for 90-240 s before rejecting it"}, fixedSpan(9 * time.Minute), false},
	{ScenarioInfo{ScenarioRevocationNotPropagated, finding.SlowRevocation, true, "after a logout one service keeps accepting the token until it expires and never rejects it as revoked"}, fixedSpan(17 * time.Minute), false},
	{ScenarioInfo{ScenarioKeyRotationBreak, finding.KeyRotationBreak, true, "after a key rotation one service rejects the new kid (unknown_kid or bad_signature) for minutes"}, fixedSpan(11 * time.Minute), false},
	{ScenarioInfo{ScenarioUnknownKid, finding.KeyRotationBreak, true, "tokens signed with a kid that was never rotated in, presented to one service"}, fixedSpan(7 * time.Minute), false},
	{ScenarioInfo{ScenarioClockSkew, finding.ClockSkew, true, "one service's clock 2-8 minutes behind for 8-15 minutes: not_yet_valid for tokens issued within minutes of its clock, and its events stamped with that clock"}, fixedSpan(5 * time.Minute), false},
	{ScenarioInfo{ScenarioClockSkewAhead, finding.ClockSkew, true, "one service's clock 2-8 minutes ahead for 8-15 minutes: expired for tokens within minutes of exp. Its acceptances just before a revoke are stamped after it, so M4 sees them as residual acceptances: not part of all=N"}, fixedSpan(5 * time.Minute), true},
	{ScenarioInfo{ScenarioReplaySameCountry, finding.Replay, true, "an access token replayed with no device id, from another provider's network (another ASN and /24) in the victim's own country"}, spanFirstToken, false},
	{ScenarioInfo{ScenarioAudienceAccepted, finding.AudienceMisuse, true, "a service that does not check audience accepts tokens the issuer minted for the admin API"}, fixedSpan(6 * time.Minute), false},
	{ScenarioInfo{ScenarioAudienceProbe, finding.AudienceMisuse, true, "a stolen access token presented to 3-4 other services within minutes, each rejecting it with bad_audience"}, fixedSpan(7 * time.Minute), false},
	{ScenarioInfo{ScenarioRefreshReuseInGrace, finding.RefreshReuse, true, "a thief exchanges the refresh token the victim just exchanged, from another device within the 2 s grace window (which covers one device only)"}, spanFirstRefresh, false},

	{ScenarioInfo{ScenarioSameSubnet, finding.Replay, false, "a client without a device fingerprint changing address inside one /24 (or /48)"}, spanFirstToken, false},
	{ScenarioInfo{ScenarioNATEgress, finding.Replay, false, "a client hopping between known NAT egress ranges (different /24 and ASN)"}, spanFirstToken, false},
	{ScenarioInfo{ScenarioDeviceMoves, finding.Replay, false, "one device moving to another network (wifi to cellular, or a train across a border)"}, spanFirstToken, false},
	{ScenarioInfo{ScenarioRefreshRace, finding.RefreshReuse, false, "one device exchanging the same refresh token twice within the 2 s grace window"}, spanFirstRefresh, false},
	{ScenarioInfo{ScenarioFastRevocation, finding.SlowRevocation, false, "a revoked token rejected at once by every service it is shown to"}, fixedSpan(7 * time.Minute), false},
	{ScenarioInfo{ScenarioKeyRotationHandled, finding.KeyRotationBreak, false, "a key rotation every service handles"}, fixedSpan(4 * time.Minute), false},
	{ScenarioInfo{ScenarioBusyClient, finding.RefreshAnomaly, false, "a client with many users refreshing on a normal cadence from the start"}, fixedSpan(0), false},
	{ScenarioInfo{ScenarioCGNATMobile, finding.Replay, false, "a phone behind its carrier's carrier-grade NAT: every few minutes an address in another /24 of the carrier's one ASN, one device"}, spanFirstToken, false},
	{ScenarioInfo{ScenarioIPv6Privacy, finding.Replay, false, "a browser without a device id whose IPv6 privacy address (RFC 8981) rotates inside its /64"}, spanFirstToken, false},
	{ScenarioInfo{ScenarioDualStack, finding.Replay, false, "a dual-stack browser without a device id alternating between its provider's IPv4 and IPv6 addresses (one ASN)"}, spanFirstToken, false},
	{ScenarioInfo{ScenarioAudienceMisrouted, finding.AudienceMisuse, false, "one misconfigured client sending its token to the same wrong service again and again (bad_audience at one service)"}, fixedSpan(7 * time.Minute), false},
	{ScenarioInfo{ScenarioAudienceList, finding.AudienceMisuse, false, "tokens whose audience list contains the audience the service wants, accepted"}, fixedSpan(6 * time.Minute), false},
	{ScenarioInfo{ScenarioVPNSwitch, finding.Replay, false, "a phone switching its VPN on (an exit on another continent, another ASN) and off again, one device"}, spanFirstToken, false},
}

// Scenarios lists every injectable scenario, attacks first.
func Scenarios() []ScenarioInfo {
	out := make([]ScenarioInfo, len(scenarios))
	for i, s := range scenarios {
		out[i] = s.ScenarioInfo
	}
	return out
}

// ScenarioNames lists the scenario names, for flags and error messages.
func ScenarioNames() []string {
	out := make([]string, len(scenarios))
	for i, s := range scenarios {
		out[i] = s.Name
	}
	return out
}

func scenarioByName(name string) (scenario, bool) {
	for _, s := range scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return scenario{}, false
}

// spanFirstToken covers a victim's login, use of its first token at up to
// 40 % of its lifetime, and a few minutes of misuse.
func spanFirstToken(s Spec) time.Duration { return s.AccessTTLMax*2/5 + 6*time.Minute }

// spanFirstRefresh covers a victim's login, its first refresh (at the latest
// when its first access token expires) and a few minutes after.
func spanFirstRefresh(s Spec) time.Duration { return s.AccessTTLMax + 6*time.Minute }

// spanClientSurge covers the surge itself; the baseline before it comes from
// placing it in the second half of the run (see placement).
func spanClientSurge(s Spec) time.Duration { return 6 * time.Minute }

func fixedSpan(d time.Duration) func(Spec) time.Duration {
	return func(Spec) time.Duration { return d }
}

// ParseInject parses "replay=3,nat_egress=2" (as a flag gives it) into an
// Inject map, refusing unknown names and bad counts. "all=N" sets every
// scenario to N except those that confound others' signals
// (clock_skew_ahead); name them to add them.
func ParseInject(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, count, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("inject %q: want name=count", part)
		}
		n, err := strconv.Atoi(strings.TrimSpace(count))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("inject %q: count must be a non-negative integer", part)
		}
		name = strings.TrimSpace(name)
		if name == "all" {
			for _, sc := range scenarios {
				if !sc.confounds {
					out[sc.Name] = n
				}
			}
			continue
		}
		if _, ok := scenarioByName(name); !ok {
			return nil, fmt.Errorf("inject %q: unknown scenario (known: %s)", part, strings.Join(ScenarioNames(), ", "))
		}
		out[name] = n
	}
	return out, nil
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// scenarioOrder returns the injected scenario names in the fixed order of
// the scenarios table, so map iteration never changes the output.
func scenarioOrder(inject map[string]int) []string {
	var out []string
	for _, s := range scenarios {
		if inject[s.Name] > 0 {
			out = append(out, s.Name)
		}
	}
	return slices.Clip(out)
}
