package pipeline

import (
	"fmt"
	"sort"
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

// unlogged remembers the rejections the rate limit kept out of the log, per
// topic and partition: how many and their offset span, so that every
// rejected message can still be found (logSuppressed says so once a second
// and at shutdown).
type unlogged struct {
	parts map[unloggedKey]*unloggedSpan
	total int
	last  time.Time
}

type unloggedKey struct {
	topic     string
	partition int32
}

type unloggedSpan struct {
	first, last int64
	n           int
}

func (u *unlogged) add(topic string, partition int32, offset int64) {
	if u.parts == nil {
		u.parts = map[unloggedKey]*unloggedSpan{}
	}
	k := unloggedKey{topic, partition}
	s := u.parts[k]
	if s == nil {
		u.parts[k] = &unloggedSpan{first: offset, last: offset, n: 1}
	} else {
		s.first, s.last, s.n = min(s.first, offset), max(s.last, offset), s.n+1
	}
	u.total++
}

// take returns what was kept out of the log since the last take, as
// "topic/partition:first-last (n)" sorted, and forgets it.
func (u *unlogged) take() (int, []string) {
	out := make([]string, 0, len(u.parts))
	for k, s := range u.parts {
		out = append(out, fmt.Sprintf("%s/%d:%d-%d (%d)", k.topic, k.partition, s.first, s.last, s.n))
	}
	sort.Strings(out)
	n := u.total
	u.parts, u.total = nil, 0
	return n, out
}
