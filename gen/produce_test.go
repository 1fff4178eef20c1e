package gen

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest"
)

// fakeWriter stands in for kafka.Writer: it keeps the messages and reports
// each write to the producer's completion callback, failing when told to.
type fakeWriter struct {
	p      *producer
	msgs   []kafka.Message
	fail   error
	closed bool
}

func (w *fakeWriter) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	w.msgs = append(w.msgs, msgs...)
	w.p.complete(msgs, w.fail)
	return nil
}

func (w *fakeWriter) Close() error { w.closed = true; return nil }

func smallGenerator(t *testing.T) *Generator {
	t.Helper()
	g, err := New(Spec{Seed: 3, Rate: 20, Sessions: 30, Duration: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func countEvents(t *testing.T) int {
	t.Helper()
	g := smallGenerator(t)
	n := 0
	for b := g.Next(nil); b != nil; b = g.Next(nil) {
		n += len(b)
	}
	return n
}

func produceFake(t *testing.T, cfg ProduceConfig, fail error) (*fakeWriter, ProduceProgress, error) {
	t.Helper()
	cfg.Brokers, cfg.Topic = []string{"fake:9092"}, "auth-events"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p := &producer{cfg: cfg.withDefaults()}
	w := &fakeWriter{p: p, fail: fail}
	p.w = w
	prog, err := p.run(context.Background(), smallGenerator(t))
	return w, prog, err
}

func TestProduceSendsEveryEventKeyedBySession(t *testing.T) {
	want := countEvents(t)
	var calls int
	w, prog, err := produceFake(t, ProduceConfig{Format: "json", Progress: func(ProduceProgress) { calls++ }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.msgs) != want || prog.Events != int64(want) || prog.Messages != int64(want) || prog.Acked != int64(want) {
		t.Fatalf("%d messages, progress %+v; want %d of each", len(w.msgs), prog, want)
	}
	if !w.closed || calls == 0 {
		t.Errorf("writer closed %v, progress calls %d: want the writer flushed and progress reported", w.closed, calls)
	}
	dec, _ := ingest.NewDecoder(ingest.FormatJSON)
	var out []event.Event
	for i, m := range w.msgs {
		var errs []error
		out, errs = dec.Decode(event.Source{Offset: int64(i)}, m.Value, out[:0])
		if len(errs) > 0 {
			t.Fatalf("message %d: %v", i, errs)
		}
		if got, want := string(m.Key), out[0].PartitionKey(); got != want {
			t.Fatalf("message %d keyed %q, want %q (session, else token)", i, got, want)
		}
	}
}

func TestProduceOTLPBatches(t *testing.T) {
	want := countEvents(t)
	tests := []struct {
		name     string
		cfg      ProduceConfig
		decodeAs ingest.Format
		keyed    bool
	}{
		{"OTLP protobuf grouped per session is keyed by session", ProduceConfig{Format: "otlp_proto"}, ingest.FormatOTLPProto, true},
		{"OTLP JSON like the Collector is unkeyed batches", ProduceConfig{Format: "otlp_json", OTLPUnkeyed: true, OTLPBatch: 100}, ingest.FormatOTLPJSON, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, _, err := produceFake(t, tc.cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			dec, _ := ingest.NewDecoder(tc.decodeAs)
			total := 0
			var out []event.Event
			for i, m := range w.msgs {
				var errs []error
				out, errs = dec.Decode(event.Source{Offset: int64(i)}, m.Value, out[:0])
				if len(errs) > 0 {
					t.Fatalf("message %d: %v", i, errs)
				}
				total += len(out)
				for _, e := range out {
					if tc.keyed && string(m.Key) != e.PartitionKey() {
						t.Fatalf("message %d keyed %q holds an event of %q", i, m.Key, e.PartitionKey())
					}
				}
				if !tc.keyed && (m.Key != nil || len(out) > 100) {
					t.Fatalf("message %d has key %q and %d events: want unkeyed batches of at most 100", i, m.Key, len(out))
				}
			}
			if total != want || len(w.msgs) >= want {
				t.Errorf("%d events in %d messages, want all %d events batched", total, len(w.msgs), want)
			}
		})
	}
}

func TestProduceReportsUndeliveredMessages(t *testing.T) {
	_, prog, err := produceFake(t, ProduceConfig{}, errors.New("broker said no"))
	if err == nil || !strings.Contains(err.Error(), "broker said no") || prog.Failed == 0 || prog.Failed != prog.Messages {
		t.Fatalf("error %v, progress %+v: want every message failed and the cause named", err, prog)
	}
}

func TestProduceConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  ProduceConfig
	}{
		{"no brokers", ProduceConfig{Topic: "t"}},
		{"no topic", ProduceConfig{Brokers: []string{"b:9092"}}},
		{"unknown format", ProduceConfig{Brokers: []string{"b:9092"}, Topic: "t", Format: "xml"}},
		{"auto is for reading, not writing", ProduceConfig{Brokers: []string{"b:9092"}, Topic: "t", Format: "auto"}},
	}
	for _, tc := range tests {
		if err := tc.cfg.Validate(); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// TestProduceToABroker runs the real kafka-go writer against an in-process
// Kafka-protocol broker and counts what landed on each partition.
func TestProduceToABroker(t *testing.T) {
	const topic = "auth-events"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := countEvents(t)
	prog, err := Produce(ctx, smallGenerator(t), ProduceConfig{Brokers: cluster.ListenAddrs(), Topic: topic}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if prog.Acked != int64(want) {
		t.Fatalf("broker acknowledged %d of %d", prog.Acked, want)
	}
	var stored int64
	used := 0
	for part := 0; part < 3; part++ {
		conn, err := kafka.DialLeader(ctx, "tcp", cluster.ListenAddrs()[0], topic, part)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		stored += last
		if last > 0 {
			used++
		}
	}
	if stored != int64(want) || used != 3 {
		t.Errorf("%d messages stored over %d partitions, want %d over all 3", stored, used, want)
	}
}

// fakeClock advances only when Run sleeps.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps int
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.sleeps++
	return nil
}

func TestLiveModeNeverSendsAnEventBeforeItsTime(t *testing.T) {
	g := smallGenerator(t)
	clock := &fakeClock{now: g.Spec().Start}
	want := countEvents(t)
	got := 0
	err := Run(context.Background(), g, clock, func(evs []event.Event) error {
		for _, e := range evs {
			if e.TS.After(clock.Now().Add(paceSlack)) {
				t.Fatalf("event at %v sent when the clock says %v", e.TS, clock.Now())
			}
		}
		got += len(evs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != want || clock.sleeps == 0 {
		t.Errorf("sent %d of %d events after %d sleeps", got, want, clock.sleeps)
	}
	if lag := clock.Now().Sub(g.Spec().Start); lag > 2*time.Minute+time.Second {
		t.Errorf("two minutes of traffic took %v of clock time", lag)
	}
}

func TestLiveModeStopsWhenEmitFails(t *testing.T) {
	g := smallGenerator(t)
	clock := &fakeClock{now: g.Spec().Start}
	boom := errors.New("topic gone")
	err := Run(context.Background(), g, clock, func([]event.Event) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want the emit failure", err)
	}
}
