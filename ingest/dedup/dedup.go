// Package dedup recognises an event delivered twice: a producer that
// retried, or a pipeline upstream that redelivered, writes the same event
// again at another offset (SIGNALS.md, "Duplicates and order"). Such a copy
// must not count twice in the SLIs, nor look like a second use of a token or
// a second exchange of a refresh token to the detectors.
//
// An event is identified by its request_id together with what it says:
// kind, outcome, service, token and ts. A request_id alone does not do: one
// request is validated by the gateway and by the service behind it, each an
// event of its own. Events without a request_id cannot be told from a
// legitimate repeat and are never dropped.
//
// Memory is bounded: identities are kept for Window of event time and at
// most MaxEntries of them (about 40 bytes each), oldest first out. A copy
// arriving later than that is let through, and counted by nothing: the
// window is the promise.
package dedup

import (
	"encoding/binary"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/tokenwatch/tokenwatch/event"
)

// Config bounds the filter.
type Config struct {
	// Window is how long (event time) an identity is remembered. Default 10m.
	Window time.Duration
	// MaxEntries bounds the identities kept. Default 500,000.
	MaxEntries int
}

type entry struct {
	key uint64
	ts  int64
}

// Filter remembers recent identities. It belongs to one goroutine.
type Filter struct {
	cfg    Config
	seen   map[uint64]int64
	fifo   []entry // in arrival order; head is the oldest
	head   int
	newest int64
	low    int64 // SetLow's bound; 0: none
	buf    []byte
}

// New builds a filter.
func New(cfg Config) *Filter {
	if cfg.Window <= 0 {
		cfg.Window = 10 * time.Minute
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 500_000
	}
	return &Filter{cfg: cfg, seen: map[uint64]int64{}}
}

// Seen reports whether e is a copy of an event seen within the window, and
// remembers it otherwise.
func (f *Filter) Seen(e *event.Event) bool {
	if e.RequestID == "" {
		return false
	}
	k := f.key(e)
	ts := e.TS.UnixNano()
	if _, ok := f.seen[k]; ok {
		return true
	}
	f.seen[k] = ts
	f.fifo = append(f.fifo, entry{k, ts})
	f.newest = max(f.newest, ts)
	f.evict()
	return false
}

// SetLow tells the filter how far the slowest source has reached in event
// time (the pipeline's watermark over its partitions): identities are kept
// for Window before it, however far the fastest source ran ahead. Over an
// unkeyed topic a copy lands on another partition, and on a backlog the
// partitions are read minutes apart; with a window counted from the newest
// event alone, a slow partition's events were forgotten by the time their
// copies came on a fast one. MaxEntries still bounds the memory.
func (f *Filter) SetLow(low time.Time) {
	if low.IsZero() {
		return
	}
	f.low = low.UnixNano()
}

// Len is how many identities are kept now.
func (f *Filter) Len() int { return len(f.seen) }

func (f *Filter) evict() {
	from := f.newest
	if f.low != 0 && f.low < from {
		from = f.low
	}
	horizon := from - int64(f.cfg.Window)
	for f.head < len(f.fifo) && (len(f.seen) > f.cfg.MaxEntries || f.fifo[f.head].ts < horizon) {
		delete(f.seen, f.fifo[f.head].key)
		f.head++
	}
	if f.head > 4096 && f.head > len(f.fifo)/2 {
		n := copy(f.fifo, f.fifo[f.head:])
		f.fifo, f.head = f.fifo[:n], 0
	}
}

func (f *Filter) key(e *event.Event) uint64 {
	b := f.buf[:0]
	for _, s := range []string{e.RequestID, e.Service, e.TokenID} {
		b = append(b, s...)
		b = append(b, 0)
	}
	b = append(b, byte(e.Kind), byte(e.Outcome))
	b = binary.LittleEndian.AppendUint64(b, uint64(e.TS.UnixNano()))
	f.buf = b
	return xxhash.Sum64(b)
}
