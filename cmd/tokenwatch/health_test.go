package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/internal/testkit"
	"github.com/tokenwatch/tokenwatch/store"
)

type fakeGroup struct {
	id     string
	joined bool
}

func (g fakeGroup) Joined() bool    { return g.joined }
func (g fakeGroup) GroupID() string { return g.id }

// /readyz is 200 only while every consumer group is joined, ClickHouse
// answers and the schema is at this build's version; otherwise 503 naming
// what is not ready. /livez (and /healthz) answer while the process serves.
func TestReadyzSaysWhichOfKafkaClickHouseAndSchemaIsNotReady(t *testing.T) {
	ctx := context.Background()
	open := func(migrate bool) *store.Store {
		addr, db := testkit.ClickHouse(t)
		c := config.Default().ClickHouse
		c.Addr, c.Database = []string{addr}, db
		st, err := store.Open(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if migrate {
			if _, err := st.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return st
	}
	migrated, fresh := open(true), open(false)
	cases := []struct {
		name   string
		st     *store.Store
		groups []joiner
		code   int
		want   []string
	}{
		{"all ready", migrated, []joiner{fakeGroup{"tw", true}, fakeGroup{"tw-analyze", true}}, 200,
			[]string{"kafka: ok", "clickhouse: ok", "schema: ok"}},
		{"before the consumer starts", migrated, nil, 503,
			[]string{"kafka: not ready: the consumer has not started", "clickhouse: ok"}},
		{"one group rejoining", migrated, []joiner{fakeGroup{"tw", true}, fakeGroup{"tw-analyze", false}}, 503,
			[]string{"kafka: not ready: not joined to consumer group tw-analyze", "schema: ok"}},
		{"schema not migrated", fresh, []joiner{fakeGroup{"tw", true}}, 503,
			[]string{"kafka: ok", "clickhouse: ok", "schema: not ready:", "run `tokenwatch migrate` first"}},
		{"no store yet", nil, []joiner{fakeGroup{"tw", true}}, 503,
			[]string{"clickhouse: not ready: not connected"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &health{st: c.st}
			for _, g := range c.groups {
				h.addGroup(g)
			}
			rec := httptest.NewRecorder()
			h.readyz(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != c.code {
				t.Errorf("status %d, want %d:\n%s", rec.Code, c.code, rec.Body.String())
			}
			for _, w := range c.want {
				if !strings.Contains(rec.Body.String(), w) {
					t.Errorf("body lacks %q:\n%s", w, rec.Body.String())
				}
			}
			live := httptest.NewRecorder()
			h.livez(live, httptest.NewRequest(http.MethodGet, "/livez", nil))
			if live.Code != 200 {
				t.Errorf("/livez %d while the process serves", live.Code)
			}
		})
	}
}

// A `run` that cannot reach its brokers exports its consumer series from
// the start (connected 0, consumed 0), answers /readyz 503 naming the
// group, and exits 1 after kafka.startup_timeout naming the brokers,
// instead of retrying for ever behind a live health check.
func TestRunThatCannotReachKafkaSaysSoAndExits(t *testing.T) {
	addr, db := testkit.ClickHouse(t)
	c := config.Default().ClickHouse
	c.Addr, c.Database = []string{addr}, db
	st, err := store.Open(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(context.Background(), []string{"run", "--set", "kafka.brokers=127.0.0.1:1", "--set", "kafka.startup_timeout=4s",
			"--set", "kafka.group_id=unreachable", "--set", "clickhouse.addr=" + addr, "--set", "clickhouse.database=" + db,
			"--set", "metrics.listen=127.0.0.1:0"}, &stdout, &stderr)
	}()
	re := regexp.MustCompile(`serving /metrics.* addr=(\S+)`)
	var maddr string
	for deadline := time.Now().Add(10 * time.Second); maddr == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			maddr = m[1]
		}
	}
	if maddr == "" {
		t.Fatalf("no metrics address logged:\n%s", stderr.String())
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + maddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var metrics string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, metrics = get("/metrics"); strings.Contains(metrics, "tokenwatch_consumer_connected") {
			break
		}
	}
	for _, want := range []string{`tokenwatch_consumer_connected{group="unreachable"} 0`, `tokenwatch_events_consumed_total{topic="auth-events"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if status, body := get("/readyz"); status != http.StatusServiceUnavailable || !strings.Contains(body, "not joined to consumer group unreachable") {
		t.Errorf("/readyz %d:\n%s\nwant 503 naming the group", status, body)
	}
	select {
	case c := <-code:
		if c != 1 {
			t.Errorf("exit code %d, want 1", c)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not exit after kafka.startup_timeout")
	}
	if !strings.Contains(stderr.String(), "did not join within kafka.startup_timeout (4s) at brokers 127.0.0.1:1") {
		t.Errorf("stderr does not name the brokers and the timeout:\n%s", stderr.String())
	}
}
