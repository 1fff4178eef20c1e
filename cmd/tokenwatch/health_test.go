package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
