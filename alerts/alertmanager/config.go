// Package alertmanager pushes findings to Alertmanager's API v2 as alerts:
// one alert per finding, sent when it opens, re-sent while it stays open so
// Alertmanager keeps it active, and resolved when it closes. Labels route it
// (alertname, severity, team, service, kind, finding_id); no label or
// annotation ever carries a token, session, family or subject id.
package alertmanager

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/tokenwatch/tokenwatch/alerts"
)

// Config says where and how often to push.
type Config struct {
	// URLs are Alertmanager base URLs (http://host:9093). Every push goes to
	// all of them, as Prometheus does for an Alertmanager HA cluster.
	URLs []string
	// ResendInterval is how often open findings are sent again (default 1m).
	ResendInterval time.Duration
	// Timeout bounds one HTTP request (default 10s).
	Timeout time.Duration
	// MaxFindings bounds the findings held for delivery (default 10000);
	// past it new findings are dropped and counted, never queued unbounded.
	MaxFindings int
	// Credentials for Alertmanager itself (never logged).
	Username    string
	Password    string
	BearerToken string
	// RunbookBaseURL prefixes runbook_url (default alerts.DefaultRunbookBaseURL).
	RunbookBaseURL string
	// GeneratorURL, when set, is each alert's link back (e.g. the on-call
	// dashboard); finding_id=<id> is added to its query.
	GeneratorURL string
}

const (
	defaultResendInterval = time.Minute
	defaultTimeout        = 10 * time.Second
	defaultMaxFindings    = 10000
)

func (c Config) withDefaults() Config {
	if c.ResendInterval == 0 {
		c.ResendInterval = defaultResendInterval
	}
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	if c.MaxFindings == 0 {
		c.MaxFindings = defaultMaxFindings
	}
	if c.RunbookBaseURL == "" {
		c.RunbookBaseURL = alerts.DefaultRunbookBaseURL
	}
	return c
}

// Validate names the setting that is wrong.
func (c Config) Validate() error {
	if len(c.URLs) == 0 {
		return fmt.Errorf("alertmanager.urls: want at least one Alertmanager URL (e.g. http://localhost:9093)")
	}
	for i, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("alertmanager.urls[%d]: want an http(s) URL like http://localhost:9093, got %q", i, u)
		}
	}
	if c.ResendInterval < 0 || c.Timeout < 0 || c.MaxFindings < 0 {
		return fmt.Errorf("alertmanager: resend_interval, timeout and max_findings must not be negative")
	}
	if c.BearerToken != "" && (c.Username != "" || c.Password != "") {
		return fmt.Errorf("alertmanager: set either basic auth (username/password) or bearer_token, not both")
	}
	if c.GeneratorURL != "" {
		if _, err := url.Parse(c.GeneratorURL); err != nil {
			return fmt.Errorf("alertmanager.generator_url: %w", err)
		}
	}
	return nil
}

// LogValue keeps the credentials out of logs.
func (c Config) LogValue() slog.Value {
	mask := func(s string) string {
		if s == "" {
			return ""
		}
		return "****"
	}
	return slog.GroupValue(
		slog.String("urls", strings.Join(c.URLs, ",")),
		slog.Duration("resend_interval", c.ResendInterval),
		slog.Duration("timeout", c.Timeout),
		slog.Int("max_findings", c.MaxFindings),
		slog.String("username", c.Username),
		slog.String("password", mask(c.Password)),
		slog.String("bearer_token", mask(c.BearerToken)),
	)
}
