package pipeline

import (
	"sync"
	"time"
)

// labelCap keeps a metric label bounded: the first n distinct values pass,
// later ones become "other", so a producer sending random service names
// cannot blow up Prometheus.
type labelCap struct {
	mu   sync.Mutex
	n    int
	seen map[string]struct{}
}

func newLabelCap(n int) *labelCap { return &labelCap{n: n, seen: map[string]struct{}{}} }

func (c *labelCap) value(v string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[v]; ok {
		return v
	}
	if len(c.seen) >= c.n {
		return "other"
	}
	c.seen[v] = struct{}{}
	return v
}

// rateLimit lets at most 10 log lines a second through, so a flood of bad
// messages is counted in full but logged in samples.
type rateLimit struct {
	second int64
	count  int
}

func (r *rateLimit) allow(now time.Time) bool {
	s := now.Unix()
	if s != r.second {
		r.second, r.count = s, 0
	}
	r.count++
	return r.count <= 10
}
