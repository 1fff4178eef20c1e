package gen

import (
	"context"
	"fmt"
	"time"

	"github.com/tokenwatch/tokenwatch/event"
)

// Clock is the wall clock Run paces against; tests pass a fake one.
type Clock interface {
	Now() time.Time
	// Sleep waits d or until ctx is done, returning ctx's error then.
	Sleep(ctx context.Context, d time.Duration) error
}

// WallClock is the real clock.
type WallClock struct{}

func (WallClock) Now() time.Time { return time.Now() }

func (WallClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ScaledClock runs traffic time Speed times faster than the wall clock,
// starting at Start when the wall clock reads Origin: a demo of a few minutes
// then holds half an hour of traffic, with every scenario played out.
type ScaledClock struct {
	Start, Origin time.Time
	Speed         float64
}

// NewScaledClock starts traffic time at start, now, at speed (>= 1).
func NewScaledClock(start time.Time, speed float64) ScaledClock {
	return ScaledClock{Start: start, Origin: time.Now(), Speed: max(speed, 1)}
}

func (c ScaledClock) Now() time.Time {
	return c.Start.Add(time.Duration(float64(time.Since(c.Origin)) * c.Speed))
}

func (c ScaledClock) Sleep(ctx context.Context, d time.Duration) error {
	return WallClock{}.Sleep(ctx, time.Duration(float64(d)/c.Speed))
}

// paceSlack is how far ahead of the clock Run lets events go before it
// sleeps: waking per event at thousands of events a second would cost more
// than the timestamps gain.
const paceSlack = 5 * time.Millisecond

// Run is live mode: it hands g's events to emit no earlier than the wall
// clock reaches their timestamps, so a generator whose Spec.Start is the
// current time produces events that look current, at Spec.Rate. emit gets
// consecutive events in order and must not keep the slice. Run returns when
// the Duration is over, ctx ends, or emit fails.
func Run(ctx context.Context, g *Generator, clock Clock, emit func([]event.Event) error) error {
	batch := make([]event.Event, 0, 256)
	for b := g.Next(batch); b != nil; b = g.Next(batch) {
		from := 0
		for i := range b {
			wait := b[i].TS.Sub(clock.Now())
			if wait <= paceSlack {
				continue
			}
			if from < i {
				if err := emit(b[from:i]); err != nil {
					return fmt.Errorf("live generation: %w", err)
				}
				from = i
			}
			if err := clock.Sleep(ctx, wait); err != nil {
				return fmt.Errorf("live generation: %w", err)
			}
		}
		if from < len(b) {
			if err := emit(b[from:]); err != nil {
				return fmt.Errorf("live generation: %w", err)
			}
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("live generation: %w", err)
		}
	}
	return nil
}
