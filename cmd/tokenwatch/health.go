package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tokenwatch/tokenwatch/store"
)

// health answers Kubernetes' probes on the metrics port. /livez: the
// process serves (a restart would not help anything /readyz reports).
// /readyz: ready only while every consumer group of the process is joined,
// ClickHouse answers, and its schema is at the version this build expects;
// otherwise 503, naming each check that fails. /healthz stays as /livez.
type health struct {
	mu     sync.Mutex
	st     *store.Store
	groups []joiner
	// the last answer, reused for a second: a probe every second costs
	// ClickHouse one query a second at most.
	at   time.Time
	last []checkResult
}

// joiner is a consumer group member (consumer.Group).
type joiner interface {
	Joined() bool
	GroupID() string
}

type checkResult struct {
	name string
	err  error
}

func (h *health) setStore(st *store.Store) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st = st
}

func (h *health) addGroup(g joiner) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.groups = append(h.groups, g)
}

// checks runs the three readiness checks (cached for a second).
func (h *health) checks(ctx context.Context) []checkResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.at.IsZero() && time.Since(h.at) < time.Second {
		return h.last
	}
	var kafka error
	switch {
	case len(h.groups) == 0:
		kafka = fmt.Errorf("the consumer has not started")
	default:
		var out []string
		for _, g := range h.groups {
			if !g.Joined() {
				out = append(out, g.GroupID())
			}
		}
		if len(out) > 0 {
			kafka = fmt.Errorf("not joined to consumer group %s", strings.Join(out, ", "))
		}
	}
	res := []checkResult{{"kafka", kafka}}
	if h.st == nil {
		res = append(res, checkResult{"clickhouse", fmt.Errorf("not connected")}, checkResult{"schema", fmt.Errorf("not checked")})
	} else {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := h.st.Conn().Ping(cctx)
		cancel()
		res = append(res, checkResult{"clickhouse", err})
		if err != nil {
			res = append(res, checkResult{"schema", fmt.Errorf("not checked: ClickHouse does not answer")})
		} else {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			res = append(res, checkResult{"schema", checkSchema(cctx, h.st)})
			cancel()
		}
	}
	h.at, h.last = time.Now(), res
	return res
}

func (h *health) livez(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") }

func (h *health) readyz(w http.ResponseWriter, r *http.Request) {
	res := h.checks(r.Context())
	var b strings.Builder
	ready := true
	for _, c := range res {
		if c.err != nil {
			ready = false
			fmt.Fprintf(&b, "%s: not ready: %v\n", c.name, c.err)
		} else {
			fmt.Fprintf(&b, "%s: ok\n", c.name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = io.WriteString(w, b.String())
}
