package detect

import (
	"errors"
	"fmt"
	"time"

	"github.com/tokenwatch/tokenwatch/finding"
)

// Config tunes the detectors. Every threshold has a default (DefaultConfig)
// chosen so that ordinary traffic stays quiet; the yaml keys are the ones the
// config file uses under `detect:`.
type Config struct {
	// Finding life cycle.
	QuietPeriod     time.Duration                     `yaml:"quiet_period"`     // close a finding after this much event time without a new signal
	UpdateInterval  time.Duration                     `yaml:"update_interval"`  // at most one update per finding per this much event time
	AllowedLateness time.Duration                     `yaml:"allowed_lateness"` // how late (event time) an event may arrive; state outlives its expiry by this much
	Severity        map[finding.Kind]finding.Severity `yaml:"severity"`         // per kind; kinds not named keep their default
	MaxFindings     int                               `yaml:"max_findings"`     // findings kept in memory (open and closed); the oldest closed go first

	// Replay.
	NATEgressRanges      []string      `yaml:"nat_egress_ranges"`      // CIDRs whose addresses are shared by unrelated clients
	MaxTravelSpeedKmh    float64       `yaml:"max_travel_speed_kmh"`   // faster than this between two uses is impossible travel
	TravelToleranceKm    float64       `yaml:"travel_tolerance_km"`    // centroid distances are rough: this much is forgiven
	DefaultTokenLifetime time.Duration `yaml:"default_token_lifetime"` // a token's lifetime when its exp is unknown
	MaxTokenLifetime     time.Duration `yaml:"max_token_lifetime"`     // state never outlives this, whatever exp says
	MaxTokens            int           `yaml:"max_tokens"`             // token entries kept; the oldest are evicted past it

	// Refresh reuse and anomaly.
	RefreshGrace         time.Duration `yaml:"refresh_grace"`          // two exchanges from one device this close are a client race
	AccessTokenLifetime  time.Duration `yaml:"access_token_lifetime"`  // a family's token lifetime until exp-iat of its tokens says otherwise
	RefreshBurstCount    int           `yaml:"refresh_burst_count"`    // this many refreshes ...
	RefreshBurstFraction float64       `yaml:"refresh_burst_fraction"` // ... within this fraction of the token lifetime is a burst
	FamilyIdleTTL        time.Duration `yaml:"family_idle_ttl"`        // family state kept this long after its last event (at least 2 lifetimes)
	MaxFamilies          int           `yaml:"max_families"`           // family entries kept
	RateZScore           float64       `yaml:"rate_z_score"`           // robust z-score above the baseline that makes a rate anomaly
	RateMinCount         int           `yaml:"rate_min_count"`         // refreshes in one minute below this are never a rate anomaly
	RateMinBaseline      time.Duration `yaml:"rate_min_baseline"`      // history a client or subject needs before its rate is judged
	MaxRateSeries        int           `yaml:"max_rate_series"`        // client and subject baselines kept (each)

	// Slow revocation.
	RevocationSLO time.Duration `yaml:"revocation_slo"` // propagation above this is a finding

	// Key rotation break.
	RotationWindow        time.Duration `yaml:"rotation_window"`          // failures counted this long before and after a key_rotate
	RotationMinFailures   int           `yaml:"rotation_min_failures"`    // fewer failures after a rotation is never a break
	RotationJumpFactor    float64       `yaml:"rotation_jump_factor"`     // failures after must be this many times those before
	UnknownKidMinFailures int           `yaml:"unknown_kid_min_failures"` // failures of a never-announced kid before it is a finding
	MaxKids               int           `yaml:"max_kids"`                 // kids remembered

	// Clock skew.
	ClockSkewMaxOffset     time.Duration `yaml:"clock_skew_max_offset"`    // rejections further from the token's iat/exp are ordinary expiry
	ClockSkewMinOffset     time.Duration `yaml:"clock_skew_min_offset"`    // an estimated skew smaller than this is not worth a finding
	ClockSkewWindow        time.Duration `yaml:"clock_skew_window"`        // rejections are compared across services over this window
	ClockSkewMinSamples    int           `yaml:"clock_skew_min_samples"`   // near-boundary rejections a service needs in the window
	ClockSkewConcentration float64       `yaml:"clock_skew_concentration"` // its near-boundary rejection ratio must be this many times the rest's
	ClockSkewMinShare      float64       `yaml:"clock_skew_min_share"`     // with no other service to compare: the ratio it needs

	// Audience misuse.
	AudienceProbeWindow   time.Duration `yaml:"audience_probe_window"`   // one token's bad_audience rejections are counted over this window ...
	AudienceProbeServices int           `yaml:"audience_probe_services"` // ... at this many distinct services (or expected audiences) it is being tried across them
	MaxAudienceProbes     int           `yaml:"max_audience_probes"`     // tokens with bad_audience rejections remembered

	MaxServices int `yaml:"max_services"` // distinct services tracked; later ones are folded into "other"
}

// DefaultConfig returns the defaults the contract names (2 s refresh grace,
// 60 s revocation SLO) and conservative values for the rest.
func DefaultConfig() Config {
	return Config{
		QuietPeriod:     15 * time.Minute,
		UpdateInterval:  time.Second,
		AllowedLateness: 30 * time.Second,
		Severity:        defaultSeverity(),
		MaxFindings:     100_000,

		MaxTravelSpeedKmh:    1000, // a airliner's cruise speed, with margin
		TravelToleranceKm:    500,
		DefaultTokenLifetime: time.Hour,
		MaxTokenLifetime:     24 * time.Hour,
		MaxTokens:            4_000_000,

		RefreshGrace:         2 * time.Second,
		AccessTokenLifetime:  15 * time.Minute,
		RefreshBurstCount:    5,
		RefreshBurstFraction: 0.25,
		FamilyIdleTTL:        time.Hour,
		MaxFamilies:          2_000_000,
		RateZScore:           6,
		RateMinCount:         20,
		RateMinBaseline:      10 * time.Minute,
		MaxRateSeries:        1_000_000,

		RevocationSLO: 60 * time.Second,

		RotationWindow:        10 * time.Minute,
		RotationMinFailures:   5,
		RotationJumpFactor:    5,
		UnknownKidMinFailures: 5,
		MaxKids:               10_000,

		ClockSkewMaxOffset:     10 * time.Minute,
		ClockSkewMinOffset:     60 * time.Second, // validators allow about a minute of leeway, so a skew that rejects tokens is larger; smaller estimates are gaps between a client's requests around its token's expiry
		ClockSkewWindow:        10 * time.Minute,
		ClockSkewMinSamples:    10,
		ClockSkewConcentration: 5,
		ClockSkewMinShare:      0.05,

		AudienceProbeWindow:   10 * time.Minute,
		AudienceProbeServices: 3,
		MaxAudienceProbes:     100_000,

		MaxServices: 1000,
	}
}

func defaultSeverity() map[finding.Kind]finding.Severity {
	return map[finding.Kind]finding.Severity{
		finding.Replay:           finding.Page,
		finding.RefreshReuse:     finding.Page,
		finding.KeyRotationBreak: finding.Page,
		finding.RefreshAnomaly:   finding.Ticket,
		finding.SlowRevocation:   finding.Ticket,
		finding.ClockSkew:        finding.Ticket,
		finding.AudienceMisuse:   finding.Page,
	}
}

// severity returns the configured severity of a kind, falling back to the
// default so a partial map in the config file is enough.
func (c *Config) severity(k finding.Kind) finding.Severity {
	if s, ok := c.Severity[k]; ok {
		return s
	}
	return defaultSeverity()[k]
}

// Validate checks every key and names the one that is wrong.
func (c *Config) Validate() error {
	var errs []error
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("detect.%s: must be positive, got %s", key, d))
		}
	}
	atLeast := func(key string, v, min int) {
		if v < min {
			errs = append(errs, fmt.Errorf("detect.%s: must be at least %d, got %d", key, min, v))
		}
	}
	positiveF := func(key string, v float64) {
		if !(v > 0) {
			errs = append(errs, fmt.Errorf("detect.%s: must be positive, got %g", key, v))
		}
	}
	positive("quiet_period", c.QuietPeriod)
	positive("update_interval", c.UpdateInterval)
	if c.AllowedLateness < 0 {
		errs = append(errs, fmt.Errorf("detect.allowed_lateness: must not be negative, got %s", c.AllowedLateness))
	}
	for k, s := range c.Severity {
		if !knownKind(k) {
			errs = append(errs, fmt.Errorf("detect.severity: unknown kind %q (want one of %v)", k, finding.Kinds()))
		}
		if s != finding.Page && s != finding.Ticket && s != finding.Info {
			errs = append(errs, fmt.Errorf("detect.severity.%s: %q is not page, ticket or info", k, s))
		}
	}
	atLeast("max_findings", c.MaxFindings, 1)
	if _, err := parseNATRanges(c.NATEgressRanges); err != nil {
		errs = append(errs, fmt.Errorf("detect.%w", err))
	}
	positiveF("max_travel_speed_kmh", c.MaxTravelSpeedKmh)
	if c.TravelToleranceKm < 0 {
		errs = append(errs, fmt.Errorf("detect.travel_tolerance_km: must not be negative, got %g", c.TravelToleranceKm))
	}
	positive("default_token_lifetime", c.DefaultTokenLifetime)
	positive("max_token_lifetime", c.MaxTokenLifetime)
	if c.DefaultTokenLifetime > c.MaxTokenLifetime {
		errs = append(errs, fmt.Errorf("detect.default_token_lifetime: %s is above max_token_lifetime %s", c.DefaultTokenLifetime, c.MaxTokenLifetime))
	}
	atLeast("max_tokens", c.MaxTokens, 1)
	positive("refresh_grace", c.RefreshGrace)
	positive("access_token_lifetime", c.AccessTokenLifetime)
	atLeast("refresh_burst_count", c.RefreshBurstCount, 3)
	if !(c.RefreshBurstFraction > 0 && c.RefreshBurstFraction <= 1) {
		errs = append(errs, fmt.Errorf("detect.refresh_burst_fraction: must be in (0, 1], got %g", c.RefreshBurstFraction))
	}
	positive("family_idle_ttl", c.FamilyIdleTTL)
	atLeast("max_families", c.MaxFamilies, 1)
	positiveF("rate_z_score", c.RateZScore)
	atLeast("rate_min_count", c.RateMinCount, 2)
	if c.RateMinBaseline < 2*time.Minute || c.RateMinBaseline > baselineMinutes*time.Minute {
		errs = append(errs, fmt.Errorf("detect.rate_min_baseline: must be between 2m and %dm, got %s", baselineMinutes, c.RateMinBaseline))
	}
	atLeast("max_rate_series", c.MaxRateSeries, 1)
	positive("revocation_slo", c.RevocationSLO)
	positive("rotation_window", c.RotationWindow)
	if c.RotationWindow > 6*time.Hour {
		errs = append(errs, fmt.Errorf("detect.rotation_window: at most 6h, got %s", c.RotationWindow))
	}
	atLeast("rotation_min_failures", c.RotationMinFailures, 1)
	if c.RotationJumpFactor < 1 {
		errs = append(errs, fmt.Errorf("detect.rotation_jump_factor: must be at least 1, got %g", c.RotationJumpFactor))
	}
	atLeast("unknown_kid_min_failures", c.UnknownKidMinFailures, 1)
	atLeast("max_kids", c.MaxKids, 1)
	positive("clock_skew_max_offset", c.ClockSkewMaxOffset)
	if c.ClockSkewMinOffset < 0 || c.ClockSkewMinOffset >= c.ClockSkewMaxOffset {
		errs = append(errs, fmt.Errorf("detect.clock_skew_min_offset: must be in [0, clock_skew_max_offset), got %s", c.ClockSkewMinOffset))
	}
	if c.ClockSkewWindow < time.Minute || c.ClockSkewWindow > time.Duration(skewWindowMinutes)*time.Minute {
		errs = append(errs, fmt.Errorf("detect.clock_skew_window: must be between 1m and %dm, got %s", skewWindowMinutes, c.ClockSkewWindow))
	}
	atLeast("clock_skew_min_samples", c.ClockSkewMinSamples, 3)
	if c.ClockSkewConcentration < 1 {
		errs = append(errs, fmt.Errorf("detect.clock_skew_concentration: must be at least 1, got %g", c.ClockSkewConcentration))
	}
	if !(c.ClockSkewMinShare > 0 && c.ClockSkewMinShare <= 1) {
		errs = append(errs, fmt.Errorf("detect.clock_skew_min_share: must be in (0, 1], got %g", c.ClockSkewMinShare))
	}
	positive("audience_probe_window", c.AudienceProbeWindow)
	atLeast("audience_probe_services", c.AudienceProbeServices, 2)
	atLeast("max_audience_probes", c.MaxAudienceProbes, 1)
	atLeast("max_services", c.MaxServices, 1)
	if c.MaxServices > 60000 {
		errs = append(errs, fmt.Errorf("detect.max_services: at most 60000, got %d", c.MaxServices))
	}
	return errors.Join(errs...)
}

func knownKind(k finding.Kind) bool {
	for _, x := range finding.Kinds() {
		if x == k {
			return true
		}
	}
	return false
}
