package detect

import "github.com/prometheus/client_golang/prometheus"

// table is one kind of detector state (tokens, families, ...) keyed by a
// 64-bit hash of its id. Entries carry an expiry in event time (ms); a timing
// wheel of one-second buckets finds the expired ones without scanning the
// map, and past the cap the entry nearest to expiry (for entries of one kind,
// the oldest) is evicted and counted. Written here rather than taken from a
// cache library because the clock is event time, not the wall clock, and the
// entries are plain values, which keeps a million of them cheap for the GC.
type table[V any] struct {
	m        map[uint64]slot[V]
	wheel    map[int64][]uint64 // bucket (expiry / bucketMS) → keys
	sweepAt  int64              // next bucket to sweep
	evictAt  int64              // no bucket below this holds keys still in m
	started  bool
	capacity int
	spare    [][]uint64
	evicted  prometheus.Counter
	entries  prometheus.Gauge
}

type slot[V any] struct {
	exp int64
	v   V
}

const bucketMS = 1000

func newTable[V any](capacity int, evicted prometheus.Counter, entries prometheus.Gauge) *table[V] {
	return &table[V]{
		m:        make(map[uint64]slot[V]),
		wheel:    make(map[int64][]uint64),
		capacity: capacity,
		evicted:  evicted,
		entries:  entries,
	}
}

func (t *table[V]) len() int { return len(t.m) }

// get returns the entry and its expiry.
func (t *table[V]) get(k uint64) (V, int64, bool) {
	s, ok := t.m[k]
	return s.v, s.exp, ok
}

// put inserts or replaces an entry. An expiry may only be extended lazily:
// the wheel finds the new one when the old bucket comes due.
func (t *table[V]) put(k uint64, v V, exp int64) {
	old, ok := t.m[k]
	if !ok {
		if len(t.m) >= t.capacity {
			t.evictOne()
		}
		t.enqueue(k, exp)
	} else if exp/bucketMS < old.exp/bucketMS {
		t.enqueue(k, exp)
	}
	t.m[k] = slot[V]{exp: exp, v: v}
}

func (t *table[V]) del(k uint64) { delete(t.m, k) }

func (t *table[V]) enqueue(k uint64, exp int64) {
	b := exp / bucketMS
	if !t.started {
		t.started, t.sweepAt, t.evictAt = true, b, b
	}
	if b < t.evictAt {
		t.evictAt = b
	}
	if b < t.sweepAt {
		// Already past: the next sweep takes it.
		b = t.sweepAt
	}
	keys, ok := t.wheel[b]
	if !ok && len(t.spare) > 0 {
		keys, t.spare = t.spare[len(t.spare)-1], t.spare[:len(t.spare)-1]
	}
	t.wheel[b] = append(keys, k)
}

// expire drops every entry whose expiry is at or before now.
func (t *table[V]) expire(now int64) {
	if !t.started {
		return
	}
	last := now/bucketMS - 1 // buckets wholly in the past
	if len(t.wheel) == 0 {
		if last+1 > t.sweepAt {
			t.sweepAt = last + 1
		}
		return
	}
	for b := t.sweepAt; b <= last; b++ {
		keys, ok := t.wheel[b]
		if !ok {
			continue
		}
		delete(t.wheel, b)
		for _, k := range keys {
			s, ok := t.m[k]
			if !ok {
				continue
			}
			if s.exp <= now {
				delete(t.m, k)
				continue
			}
			nb := s.exp / bucketMS
			if nb <= last {
				nb = last + 1
			}
			t.wheel[nb] = append(t.wheel[nb], k)
		}
		t.recycle(keys)
	}
	if last+1 > t.sweepAt {
		t.sweepAt = last + 1
	}
	if t.evictAt < t.sweepAt {
		t.evictAt = t.sweepAt
	}
}

// evictOne removes the entry nearest to expiry.
func (t *table[V]) evictOne() {
	for len(t.wheel) > 0 {
		keys, ok := t.wheel[t.evictAt]
		if !ok || len(keys) == 0 {
			if ok {
				delete(t.wheel, t.evictAt)
				t.recycle(keys)
			}
			t.evictAt++
			continue
		}
		k := keys[len(keys)-1]
		t.wheel[t.evictAt] = keys[:len(keys)-1]
		s, ok := t.m[k]
		if !ok {
			continue
		}
		if nb := s.exp / bucketMS; nb > t.evictAt {
			// Extended since it was queued: requeue where it belongs.
			t.wheel[nb] = append(t.wheel[nb], k)
			continue
		}
		delete(t.m, k)
		t.evicted.Inc()
		return
	}
}

func (t *table[V]) recycle(keys []uint64) {
	if cap(keys) <= 1024 && len(t.spare) < 256 {
		t.spare = append(t.spare, keys[:0])
	}
}

// report publishes the entry count (done on the tick, not per insert, to keep
// the hot path free of atomic writes).
func (t *table[V]) report() { t.entries.Set(float64(len(t.m))) }
