package alertmanager

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
)

// webhookSink stands in for the pager and the ticket queue: it records the
// receiver and status of every notification Alertmanager sends.
type webhookSink struct {
	mu   sync.Mutex
	got  []webhookMessage
	srvr *httptest.Server
}

type webhookMessage struct {
	Receiver string `json:"receiver"`
	Status   string `json:"status"`
	Alerts   []struct {
		Status string            `json:"status"`
		Labels map[string]string `json:"labels"`
	} `json:"alerts"`
}

func newWebhookSink(t *testing.T) *webhookSink {
	s := &webhookSink{}
	s.srvr = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m webhookMessage
		if err := json.NewDecoder(r.Body).Decode(&m); err == nil {
			s.mu.Lock()
			s.got = append(s.got, m)
			s.mu.Unlock()
		}
	}))
	t.Cleanup(s.srvr.Close)
	return s
}

func (s *webhookSink) messages(receiver, status string) []webhookMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []webhookMessage
	for _, m := range s.got {
		if m.Receiver == receiver && m.Status == status {
			out = append(out, m)
		}
	}
	return out
}

// deployedConfig is deploy/alertmanager/alertmanager.yml with its
// placeholder webhooks pointed at sink and its waits shortened for a test.
func deployedConfig(t *testing.T, sink *webhookSink) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "alertmanager", "alertmanager.yml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.ReplaceAll(string(b), "http://127.0.0.1:9095", sink.srvr.URL)
	for _, wait := range []string{"group_wait: 30s", "group_wait: 10s"} {
		cfg = strings.ReplaceAll(cfg, wait, "group_wait: 1s")
	}
	return strings.ReplaceAll(cfg, "group_interval: 5m", "group_interval: 1s")
}

type gettableAlert struct {
	Labels map[string]string `json:"labels"`
	EndsAt time.Time         `json:"endsAt"`
	Status struct {
		State       string   `json:"state"`
		InhibitedBy []string `json:"inhibitedBy"`
	} `json:"status"`
}

// getAlerts lists the alerts Alertmanager holds that match every matcher
// (e.g. `severity="page"`); resolved alerts are not listed.
func getAlerts(t *testing.T, base string, matchers ...string) []gettableAlert {
	t.Helper()
	q := url.Values{"filter": matchers}
	resp, err := http.Get(base + "/api/v2/alerts?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []gettableAlert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestRealAlertmanagerPagesOnAFindingAndResolvesItWhenItCloses(t *testing.T) {
	sink := newWebhookSink(t)
	am := testkit.Alertmanager(t, deployedConfig(t, sink))
	p := newTestPusher(t, Config{URLs: []string{am}, ResendInterval: 500 * time.Millisecond}, nil, nil)

	f := replayFinding()
	p.Notify(f)
	filter := `finding_id="` + f.ID + `"`
	waitLong(t, "the finding in Alertmanager", func() bool { return len(getAlerts(t, am, filter)) == 1 })
	got := getAlerts(t, am, filter)[0]
	for k, v := range map[string]string{"alertname": "TokenReplayDetected", "severity": "page", "team": "security", "service": "api-gateway", "kind": "replay"} {
		if got.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, got.Labels[k], v)
		}
	}
	if got.Status.State != "active" {
		t.Errorf("state %q, want active", got.Status.State)
	}
	waitLong(t, "a page notification", func() bool { return len(sink.messages("pager", "firing")) > 0 })

	time.Sleep(1500 * time.Millisecond) // a few resends: still one incident, one notification
	if n := len(sink.messages("pager", "firing")); n != 1 {
		t.Errorf("%d page notifications for one finding re-sent several times, want 1", n)
	}
	if n := len(sink.messages("ticket", "firing")); n != 0 {
		t.Errorf("a page finding also reached the ticket queue %d times", n)
	}

	f.Status = finding.Closed
	p.Notify(f)
	waitLong(t, "the finding to leave the active alerts", func() bool { return len(getAlerts(t, am, filter)) == 0 })
	waitLong(t, "a resolved notification", func() bool { return len(sink.messages("pager", "resolved")) > 0 })
}

// postRaw sends alerts as Prometheus would (the rules' alerts do not come
// through the pusher).
func postRaw(t *testing.T, base string, labels ...map[string]string) {
	t.Helper()
	var alerts []postableAlert
	for _, l := range labels {
		alerts = append(alerts, postableAlert{Labels: l, StartsAt: time.Now(), EndsAt: time.Now().Add(time.Hour)})
	}
	body, _ := json.Marshal(alerts)
	resp, err := http.Post(base+"/api/v2/alerts", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST alerts: %s: %s", resp.Status, msg)
	}
}

func TestRealAlertmanagerInhibitsDuplicates(t *testing.T) {
	sink := newWebhookSink(t)
	am := testkit.Alertmanager(t, deployedConfig(t, sink))
	cases := []struct {
		name       string
		setup      func(t *testing.T)
		suppressed []string // matchers naming the alert that must be inhibited
	}{
		{
			name: "an SLO ticket is quiet while its page fires on the same service",
			setup: func(t *testing.T) {
				postRaw(t, am,
					map[string]string{"alertname": "TokenValidationErrorBudgetBurn", "severity": "page", "team": "identity", "service": "api", "slo": "token-validation"},
					map[string]string{"alertname": "TokenValidationErrorBudgetBurn", "severity": "ticket", "team": "identity", "service": "api", "slo": "token-validation"})
			},
			suppressed: []string{`alertname="TokenValidationErrorBudgetBurn"`, `severity="ticket"`},
		},
		{
			name: "the FindingsOpened backstop is quiet while the pushed finding is active",
			setup: func(t *testing.T) {
				p := newTestPusher(t, Config{URLs: []string{am}, ResendInterval: time.Second}, nil, nil)
				p.Notify(replayFinding())
				postRaw(t, am, map[string]string{"alertname": "TokenReplayFindingsOpened", "severity": "page", "team": "security", "service": "api-gateway", "kind": "replay"})
			},
			suppressed: []string{`alertname="TokenReplayFindingsOpened"`},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.setup(t)
			waitLong(t, "the inhibition", func() bool {
				got := getAlerts(t, am, c.suppressed...)
				return len(got) == 1 && got[0].Status.State == "suppressed" && len(got[0].Status.InhibitedBy) > 0
			})
		})
	}
}
