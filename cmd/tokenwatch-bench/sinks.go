package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/finding"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/metrics"
	"github.com/tokenwatch/tokenwatch/store"
)

func newMetrics() *metrics.Pipeline { return metrics.New(prometheus.NewRegistry()) }

// countSink counts delivered messages and does nothing else.
type countSink struct {
	n    atomic.Int64
	want int
	done chan struct{}
}

func (s *countSink) Deliver(_ context.Context, msgs []consumer.Message) error {
	if s.n.Add(int64(len(msgs))) >= int64(s.want) && s.n.Load()-int64(len(msgs)) < int64(s.want) {
		close(s.done)
	}
	return nil
}

func (s *countSink) Drain(context.Context) error { return nil }

// discard is a store that accepts everything and keeps nothing.
type discard struct{}

func (discard) InsertEvents(context.Context, *store.Batch) error            { return nil }
func (discard) InsertFindings(context.Context, []finding.Finding) error     { return nil }
func (discard) InsertRevocations(context.Context, []store.Revocation) error { return nil }
func (discard) StoredEventTime(context.Context, string, []int32) (map[int32]time.Time, error) {
	return nil, nil
}
func (discard) ReplayEvents(context.Context, string, []int32, time.Time, func(*event.Event)) (int, error) {
	return 0, nil
}
