package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/event"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/pipeline"
	"github.com/tokenwatch/tokenwatch/rekey"
)

// runKeyedReplay is the other rebuild of Fleet 3/4: what the fleet's
// analyze stage does when it takes keyed partitions over. It publishes
// window synthetic events (the same traffic as runRebuild's) to a keyed
// topic of their own, as the ingest stage does, commits the analyze
// group's offsets at the end, and replays them the way
// Pipeline.rebuildFromRecords does: rekey.Replayer reads each partition
// back from the committed offsets (the keyed topic is the changelog,
// Kafka Streams' source-topic optimization), the records are decoded, and
// the events go into fresh detectors. The bound is lifted to the window so
// both rebuilds replay the same events; heap is what the detectors' state
// grew by, plus the records held while they are sorted by ts.
func runKeyedReplay(ctx context.Context, c config.Config, partitions, window int, log *slog.Logger) (rebuildPhase, error) {
	topic := "bench-replay-" + strconv.Itoa(window)
	if err := rekey.EnsureTopic(ctx, &kafka.Dialer{}, c.Kafka.Brokers, rekey.TopicConfig{Name: topic, Partitions: partitions,
		ReplicationFactor: -1, Retention: time.Hour}, log); err != nil {
		return rebuildPhase{}, err
	}
	pub, err := rekey.NewPublisher(rekey.PublisherConfig{Brokers: c.Kafka.Brokers, Topic: topic, Partitions: partitions}, log)
	if err != nil {
		return rebuildPhase{}, err
	}
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range window {
		e := syntheticEvent(base, i, window)
		pub.Publish(&e, 0)
	}
	if err := pub.Wait(ctx, pub.Mark()); err != nil {
		return rebuildPhase{}, fmt.Errorf("keyed replay: publish %d events: %w", window, err)
	}
	_ = pub.Close()

	// The analyze group processed all of it: its committed offsets are
	// the partitions' ends.
	client := &kafka.Client{Addr: kafka.TCP(c.Kafka.Brokers...), Timeout: 10 * time.Second}
	reqs := make([]kafka.OffsetRequest, partitions)
	for p := range reqs {
		reqs[p] = kafka.LastOffsetOf(p)
	}
	lo, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return rebuildPhase{}, fmt.Errorf("keyed replay: end offsets: %w", err)
	}
	group := topic + "-analyze"
	commits := []kafka.OffsetCommit{}
	for _, p := range lo.Topics[topic] {
		commits = append(commits, kafka.OffsetCommit{Partition: p.Partition, Offset: p.LastOffset})
	}
	res, err := client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{topic: commits}})
	if err != nil {
		return rebuildPhase{}, fmt.Errorf("keyed replay: commit: %w", err)
	}
	for _, ps := range res.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return rebuildPhase{}, fmt.Errorf("keyed replay: commit partition %d: %w", p.Partition, p.Error)
			}
		}
	}

	stages, err := pipeline.BuildStages(c, prometheus.NewRegistry())
	if err != nil {
		return rebuildPhase{}, err
	}
	dec, err := rekey.NewDecoder(partitions, prometheus.NewRegistry())
	if err != nil {
		return rebuildPhase{}, err
	}
	r := &rekey.Replayer{Brokers: c.Kafka.Brokers, Dialer: &kafka.Dialer{}, Group: group,
		Window: config.Default().Pipeline.RebuildWindow, MaxRecords: int64(window)}
	parts := make([]int32, partitions)
	for i := range parts {
		parts[i] = int32(i)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start, c0 := time.Now(), cpu()
	// Held, then replayed in ts order, as the pipeline's rebuild does.
	var evs []event.Event
	if _, err := r.ReplayMessages(ctx, topic, parts, func(m *consumer.Message) {
		evs, _ = dec.DecodeMessage(m, evs)
	}); err != nil {
		return rebuildPhase{}, err
	}
	slices.SortStableFunc(evs, func(a, b event.Event) int { return a.TS.Compare(b.TS) })
	for i := range evs {
		stages.Replay(&evs[i])
	}
	p := phase{name: "keyed replay", wall: time.Since(start), cpu: cpu() - c0, n: len(evs)}
	runtime.ReadMemStats(&after) // before the GC: the held records count
	runtime.KeepAlive(stages)
	runtime.KeepAlive(evs)
	return rebuildPhase{phase: p, window: window, heap: after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)}, nil
}

// syntheticEvent is event i of n in runRebuild's 30 minutes of traffic:
// validations, one issue in 16 and one refresh in 64, a token per 16
// events and a session per 128, over 6 raw partitions.
func syntheticEvent(base time.Time, i, n int) event.Event {
	kind := event.KindValidate
	switch {
	case i%16 == 0:
		kind = event.KindIssue
	case i%64 == 9:
		kind = event.KindRefresh
	}
	ts := base.Add(time.Duration(int64(i) * int64(30*time.Minute) / int64(n)))
	return event.Event{TS: ts, Kind: kind, Outcome: event.OK,
		Service: []string{"api", "orders", "billing"}[i%3], Issuer: "https://idp.example", Region: "eu-west-1",
		TokenID: "t" + strconv.Itoa(i/16), SessionID: "s" + strconv.Itoa(i/128), Subject: "u" + strconv.Itoa(i/128%100000),
		ClientID: "web", FamilyID: "f" + strconv.Itoa(i/128), IAT: ts, EXP: ts.Add(15 * time.Minute), LatencyMS: 3.5, HasLatency: true, TokenBytes: 900,
		Src: event.Source{Topic: "bench", Partition: int32(i % 6), Offset: int64(i / 6)}}
}
