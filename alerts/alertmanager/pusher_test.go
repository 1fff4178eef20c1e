package alertmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tokenwatch/tokenwatch/finding"
)

// fakeAlertmanager records every POST /api/v2/alerts; fail makes it answer
// 503 while it returns true.
type fakeAlertmanager struct {
	mu     sync.Mutex
	bodies [][]byte
	alerts []postableAlert
	auth   []string
	fail   func() bool
	srv    *httptest.Server
}

func newFakeAlertmanager(t *testing.T) *fakeAlertmanager {
	t.Helper()
	f := &fakeAlertmanager{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v2/alerts" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		if f.fail != nil && f.fail() {
			http.Error(w, "cluster not ready", http.StatusServiceUnavailable)
			return
		}
		var got []postableAlert
		if err := json.Unmarshal(body, &got); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.bodies = append(f.bodies, body)
		f.alerts = append(f.alerts, got...)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// received returns the accepted alerts for one finding id, oldest first.
func (f *fakeAlertmanager) received(id string) []postableAlert {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []postableAlert
	for _, a := range f.alerts {
		if a.Labels["finding_id"] == id {
			out = append(out, a)
		}
	}
	return out
}

// syncBuffer is a log sink the test can read while the pusher writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func replayFinding() finding.Finding {
	return finding.Finding{
		ID:        finding.MakeID(finding.Replay, "tok-7f3a9c"),
		Kind:      finding.Replay,
		Severity:  finding.Page,
		Status:    finding.Open,
		Key:       "tok-7f3a9c",
		Service:   "api-gateway",
		Region:    "eu-west",
		TokenID:   "tok-7f3a9c",
		SessionID: "sess-41d2e8",
		FamilyID:  "fam-0b9c11",
		Subject:   "user-5e6f70",
		ClientID:  "client-mobile-app",
		FirstSeen: time.Now().Add(-2 * time.Minute),
		LastSeen:  time.Now().Add(-time.Minute),
		Count:     2,
		Evidence: map[string]any{"uses": []map[string]any{
			{"ts": "2026-01-01T10:00:00Z", "service": "api-gateway", "ip": "203.0.113.7", "asn": 64500, "country": "DE", "device": "dev-aa11"},
			{"ts": "2026-01-01T10:00:05Z", "service": "api-gateway", "ip": "198.51.100.9", "asn": 64501, "country": "BR", "device": "dev-bb22"},
		}},
		Action: "revoke session sess-41d2e8 and family fam-0b9c11 of user-5e6f70",
	}
}

func newTestPusher(t *testing.T, cfg Config, reg prometheus.Registerer, log *slog.Logger) *Pusher {
	t.Helper()
	p, err := New(cfg, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return p
}

func TestAnOpenedFindingIsPushedAtOnceWithRoutingLabels(t *testing.T) {
	am := newFakeAlertmanager(t)
	p := newTestPusher(t, Config{URLs: []string{am.srv.URL}, ResendInterval: time.Hour}, nil, nil)
	f := replayFinding()
	before := time.Now()
	p.Notify(f)
	waitFor(t, "the push", func() bool { return len(am.received(f.ID)) > 0 })
	a := am.received(f.ID)[0]
	want := map[string]string{
		"alertname": "TokenReplayDetected", "severity": "page", "team": "security",
		"service": "api-gateway", "kind": "replay", "finding_id": f.ID,
	}
	for k, v := range want {
		if a.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, a.Labels[k], v)
		}
	}
	if len(a.Labels) != len(want) {
		t.Errorf("labels %v, want exactly %v", a.Labels, want)
	}
	if !a.EndsAt.After(before.Add(3 * time.Hour)) {
		t.Errorf("an open finding's endsAt %s should be a few resend intervals ahead", a.EndsAt)
	}
	if a.StartsAt.Sub(f.FirstSeen).Abs() > time.Millisecond {
		t.Errorf("startsAt %s, want the finding's first_seen %s", a.StartsAt, f.FirstSeen)
	}
	if a.Annotations["summary"] != "token replay on api-gateway from 2 countries" {
		t.Errorf("summary %q", a.Annotations["summary"])
	}
	if !strings.HasSuffix(a.Annotations["runbook_url"], "/TokenReplayDetected.md") {
		t.Errorf("runbook_url %q", a.Annotations["runbook_url"])
	}
}

func TestAnOpenFindingIsResentEveryInterval(t *testing.T) {
	am := newFakeAlertmanager(t)
	p := newTestPusher(t, Config{URLs: []string{am.srv.URL}, ResendInterval: 40 * time.Millisecond}, nil, nil)
	f := replayFinding()
	p.Notify(f)
	waitFor(t, "three sends of one open finding", func() bool { return len(am.received(f.ID)) >= 3 })
	got := am.received(f.ID)
	if !got[len(got)-1].EndsAt.After(got[0].EndsAt) {
		t.Errorf("each resend should move endsAt forward: first %s, last %s", got[0].EndsAt, got[len(got)-1].EndsAt)
	}
}

func TestAClosedFindingIsResolvedAndThenForgotten(t *testing.T) {
	am := newFakeAlertmanager(t)
	p := newTestPusher(t, Config{URLs: []string{am.srv.URL}, ResendInterval: 40 * time.Millisecond}, nil, nil)
	f := replayFinding()
	p.Notify(f)
	waitFor(t, "the open push", func() bool { return len(am.received(f.ID)) > 0 })
	f.Status = finding.Closed
	closing := time.Now()
	p.Notify(f)
	waitFor(t, "the resolve", func() bool {
		got := am.received(f.ID)
		return !got[len(got)-1].EndsAt.After(time.Now())
	})
	got := am.received(f.ID)
	if end := got[len(got)-1].EndsAt; end.Before(closing.Add(-time.Second)) || end.After(time.Now()) {
		t.Errorf("resolve endsAt %s, want the close time (about %s)", end, closing)
	}
	n := len(got)
	time.Sleep(200 * time.Millisecond) // five resend intervals
	if after := len(am.received(f.ID)); after != n {
		t.Errorf("a resolved finding was sent %d more times", after-n)
	}
}

func TestWhileAlertmanagerIsDownThePusherRetriesAndTheLatestStateWins(t *testing.T) {
	am := newFakeAlertmanager(t)
	var mu sync.Mutex
	down := true
	am.fail = func() bool { mu.Lock(); defer mu.Unlock(); return down }
	reg := prometheus.NewRegistry()
	p := newTestPusher(t, Config{URLs: []string{am.srv.URL}, ResendInterval: time.Second}, reg, nil)
	f := replayFinding()
	p.Notify(f)
	errors := func() float64 { return counterValue(t, p.pushes.WithLabelValues(resultError)) }
	waitFor(t, "two failed pushes", func() bool { return errors() >= 2 })
	f.Count = 9
	f.Status = finding.Closed
	p.Notify(f)
	mu.Lock()
	down = false
	mu.Unlock()
	waitFor(t, "delivery once Alertmanager is back", func() bool { return len(am.received(f.ID)) > 0 })
	first := am.received(f.ID)[0]
	if !strings.Contains(first.Annotations["description"], "seen 9 times") || first.EndsAt.After(time.Now()) {
		t.Errorf("the first delivered state should be the latest (closed, count 9), got %+v", first)
	}
	if got := counterValue(t, p.pushes.WithLabelValues(resultSuccess)); got < 1 {
		t.Errorf("pushes_total{result=success} = %v after recovery", got)
	}
}

func TestNotifyNeverBlocksWhenAlertmanagerHangs(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })
	reg := prometheus.NewRegistry()
	p := newTestPusher(t, Config{URLs: []string{hang.URL}, Timeout: 5 * time.Second, MaxFindings: 100}, reg, nil)
	start := time.Now()
	for i := range 5000 {
		f := replayFinding()
		f.ID = finding.MakeID(finding.Replay, fmt.Sprint("token-", i))
		p.Notify(f)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("5000 Notify calls took %s with Alertmanager hanging", took)
	}
	if dropped := counterValue(t, p.pushes.WithLabelValues(resultDropped)); dropped != 4900 {
		t.Errorf("pushes_total{result=dropped} = %v, want 4900 (5000 findings, 100 held)", dropped)
	}
}

// TestNoIdentifierReachesAlertmanager scans every label and annotation that
// went over the wire for the finding's ids, the evidence's addresses and
// devices, and the free-text action that names them.
func TestNoIdentifierReachesAlertmanager(t *testing.T) {
	am := newFakeAlertmanager(t)
	p := newTestPusher(t, Config{URLs: []string{am.srv.URL}, ResendInterval: time.Hour}, nil, nil)
	kinds := finding.Kinds()
	var sent []finding.Finding
	for _, k := range kinds {
		f := replayFinding()
		f.Kind = k
		f.ID = finding.MakeID(k, f.Key)
		f.Kid = "kid-2026-01"
		f.Evidence["exchanges"] = []map[string]any{{"device": "dev-aa11", "ip": "203.0.113.7"}, {"device": "dev-bb22", "ip": "198.51.100.9"}}
		f.Evidence["services"] = map[string]any{"api-gateway": map[string]any{"residual_acceptances": 3, "lag_s": 95.5}}
		p.Notify(f)
		sent = append(sent, f)
	}
	waitFor(t, "every kind pushed", func() bool {
		for _, f := range sent {
			if len(am.received(f.ID)) == 0 {
				return false
			}
		}
		return true
	})
	forbidden := []string{"tok-7f3a9c", "sess-41d2e8", "fam-0b9c11", "user-5e6f70", "client-mobile-app",
		"203.0.113.7", "198.51.100.9", "dev-aa11", "dev-bb22"}
	am.mu.Lock()
	defer am.mu.Unlock()
	for _, a := range am.alerts {
		for where, m := range map[string]map[string]string{"label": a.Labels, "annotation": a.Annotations} {
			for k, v := range m {
				for _, id := range forbidden {
					if strings.Contains(v, id) || strings.Contains(k, id) {
						t.Errorf("%s alert: %s %s=%q carries %q", a.Labels["alertname"], where, k, v, id)
					}
				}
			}
		}
		for _, k := range []string{"token_id", "session_id", "subject", "family_id", "client_id", "device", "ip"} {
			if _, ok := a.Labels[k]; ok {
				t.Errorf("%s alert has a %s label", a.Labels["alertname"], k)
			}
		}
	}
}

func TestAlertmanagerCredentialsAreSentButNeverLogged(t *testing.T) {
	cases := []struct {
		name     string
		cfg      Config
		wantAuth string
		secret   string
	}{
		{"a bearer token", Config{BearerToken: "am-s3cret-token"}, "Bearer am-s3cret-token", "am-s3cret-token"},
		{"basic auth", Config{Username: "tokenwatch", Password: "am-s3cret-pass"}, "Basic dG9rZW53YXRjaDphbS1zM2NyZXQtcGFzcw==", "am-s3cret-pass"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			am := newFakeAlertmanager(t)
			am.fail = func() bool { return len(am.auth) == 1 } // fail once so the pusher logs a warning
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			c.cfg.URLs = []string{am.srv.URL}
			c.cfg.ResendInterval = time.Second
			p := newTestPusher(t, c.cfg, nil, log)
			f := replayFinding()
			p.Notify(f)
			waitFor(t, "delivery after one failure", func() bool { return len(am.received(f.ID)) > 0 })
			am.mu.Lock()
			auth := am.auth[len(am.auth)-1]
			am.mu.Unlock()
			if auth != c.wantAuth {
				t.Errorf("Authorization %q, want %q", auth, c.wantAuth)
			}
			if !strings.Contains(logs.String(), "push to Alertmanager failed") {
				t.Fatalf("expected a logged failure, got logs:\n%s", logs.String())
			}
			if strings.Contains(logs.String(), c.secret) {
				t.Errorf("the credential reached the log:\n%s", logs.String())
			}
		})
	}
}

func TestConfigValidationNamesTheBadSetting(t *testing.T) {
	cases := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no Alertmanager URL", Config{}, "alertmanager.urls"},
		{"a URL without scheme", Config{URLs: []string{"localhost:9093"}}, "alertmanager.urls[0]"},
		{"both basic auth and a bearer token", Config{URLs: []string{"http://am:9093"}, Username: "u", BearerToken: "t"}, "not both"},
		{"a negative resend interval", Config{URLs: []string{"http://am:9093"}, ResendInterval: -time.Second}, "negative"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Validate: %v, want an error naming %q", err, c.wantErr)
			}
		})
	}
	if err := (Config{URLs: []string{"https://am.example:9093"}}).Validate(); err != nil {
		t.Errorf("a plain https URL: %v", err)
	}
}

func TestSummariesSayWhatHappenedWithoutIds(t *testing.T) {
	base := replayFinding()
	cases := []struct {
		name string
		f    func() finding.Finding
		want string
	}{
		{"replay across countries counts the countries", func() finding.Finding { return base }, "token replay on api-gateway from 2 countries"},
		{"refresh reuse counts the exchanges", func() finding.Finding {
			f := base
			f.Kind = finding.RefreshReuse
			f.Evidence = map[string]any{"exchanges": []any{map[string]any{"device": "a"}, map[string]any{"device": "b"}}}
			return f
		}, "refresh token reused on api-gateway (2 exchanges of one token)"},
		{"slow revocation gives the propagation time", func() finding.Finding {
			f := base
			f.Kind = finding.SlowRevocation
			f.Evidence = map[string]any{"propagation_s": 93.47}
			return f
		}, "slow revocation seen from api-gateway: 93.5 s to propagate"},
		{"key rotation break names the key id", func() finding.Finding {
			f := base
			f.Kind = finding.KeyRotationBreak
			f.Kid = "kid-2026-01"
			return f
		}, "key rotation break on api-gateway for kid kid-2026-01"},
		{"clock skew gives the estimated offset", func() finding.Finding {
			f := base
			f.Kind = finding.ClockSkew
			f.Evidence = map[string]any{"skew_s": -184.0}
			return f
		}, "clock skew of -184 s on api-gateway"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := summary(c.f()); got != c.want {
				t.Errorf("summary %q, want %q", got, c.want)
			}
		})
	}
}

func TestAFindingThatChangesSeverityResolvesItsOldAlert(t *testing.T) {
	am := newFakeAlertmanager(t)
	p := newTestPusher(t, Config{URLs: []string{am.srv.URL}, ResendInterval: time.Hour}, nil, nil)
	f := replayFinding()
	f.Severity = finding.Ticket
	p.Notify(f)
	waitFor(t, "the ticket push", func() bool { return len(am.received(f.ID)) == 1 })
	f.Severity = finding.Page
	p.Notify(f)
	waitFor(t, "the page push", func() bool { return len(am.received(f.ID)) == 3 })
	states := map[string]bool{} // severity → still active
	for _, a := range am.received(f.ID)[1:] {
		states[a.Labels["severity"]] = a.EndsAt.After(time.Now())
	}
	if !states["page"] {
		t.Error("the page alert should be active")
	}
	if active, ok := states["ticket"]; !ok || active {
		t.Errorf("the old ticket alert should be resolved (sent: %v, active: %v)", ok, active)
	}
}

// An audience_misuse finding about a service accepting other audiences goes
// to the platform team, one about a token tried across services to
// security (SIGNALS.md); the other kinds keep their kind's team.
func TestAudienceMisuseIsRoutedByShape(t *testing.T) {
	for _, c := range []struct {
		f    finding.Finding
		team string
	}{
		{finding.Finding{ID: "a", Kind: finding.AudienceMisuse, Severity: finding.Page, Service: "reports"}, "platform"},
		{finding.Finding{ID: "b", Kind: finding.AudienceMisuse, Severity: finding.Page, Service: "admin", TokenID: "t"}, "security"},
		{finding.Finding{ID: "c", Kind: finding.ClockSkew, Severity: finding.Ticket, Service: "api"}, "platform"},
		{finding.Finding{ID: "d", Kind: finding.Replay, Severity: finding.Page, Service: "api", TokenID: "t"}, "security"},
	} {
		if got := toAlert(c.f, time.Now(), Config{}).Labels["team"]; got != c.team {
			t.Errorf("%s (token %q): team %q, want %q", c.f.Kind, c.f.TokenID, got, c.team)
		}
	}
}
