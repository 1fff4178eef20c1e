package rekey

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/eventtime"
)

// streamVia joins a raw topic and the keyed partition carrying it in the
// name of an analyze-stage merge stream (Decoder.MergePartition).
const streamVia = " via "

// RawOfStream is the raw topic of an analyze-stage merge stream; the
// stream's Partition is the raw partition.
func RawOfStream(p eventtime.Partition) (topic string, ok bool) {
	topic, _, ok = strings.Cut(p.Topic, streamVia)
	return topic, ok
}

// UpstreamLag reads how far the ingest group is behind on each raw
// partition: the partition's end offset minus the group's committed
// offset. The ingest stage commits a raw offset only once the keyed copies
// of its events are acknowledged, so a raw partition at 0 has nothing more
// on its way to the keyed topic, and one above 0 does: the analyze stage
// keeps waiting for its streams while they are silent (a dead ingest
// member's partitions, until the group hands them on).
type UpstreamLag struct {
	Client *kafka.Client
	Group  string // the ingest stage's consumer group
	Topics []string
}

// Read returns the lag of every raw partition by topic.
func (u *UpstreamLag) Read(ctx context.Context) (map[string]map[int32]int64, error) {
	md, err := u.Client.Metadata(ctx, &kafka.MetadataRequest{Topics: u.Topics})
	if err != nil {
		return nil, fmt.Errorf("upstream lag: metadata: %w", err)
	}
	ends := map[string][]kafka.OffsetRequest{}
	parts := map[string][]int{}
	for _, t := range md.Topics {
		if t.Error != nil {
			return nil, fmt.Errorf("upstream lag: topic %s: %w", t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			ends[t.Name] = append(ends[t.Name], kafka.LastOffsetOf(p.ID))
			parts[t.Name] = append(parts[t.Name], p.ID)
		}
	}
	lo, err := u.Client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: ends})
	if err != nil {
		return nil, fmt.Errorf("upstream lag: end offsets: %w", err)
	}
	of, err := u.Client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: u.Group, Topics: parts})
	if err != nil {
		return nil, fmt.Errorf("upstream lag: committed offsets of %s: %w", u.Group, err)
	}
	committed := map[string]map[int]int64{}
	for topic, ps := range of.Topics {
		committed[topic] = map[int]int64{}
		for _, p := range ps {
			committed[topic][p.Partition] = p.CommittedOffset
		}
	}
	out := map[string]map[int32]int64{}
	for topic, ps := range lo.Topics {
		out[topic] = map[int32]int64{}
		for _, p := range ps {
			if p.Error != nil {
				// Its leader is moving (a broker died): whatever it holds
				// is on its way once a new leader serves it, so its
				// streams keep waiting, as for a backlog.
				out[topic][int32(p.Partition)] = 1
				continue
			}
			c, ok := committed[topic][p.Partition]
			if !ok || c < 0 {
				c = p.FirstOffset // nothing committed yet: everything there is ahead
				if c < 0 {
					c = 0
				}
			}
			out[topic][int32(p.Partition)] = max(p.LastOffset-c, 0)
		}
	}
	return out, nil
}

// KeyedOfStream is the keyed partition carrying an analyze-stage merge
// stream.
func KeyedOfStream(p eventtime.Partition) (int32, bool) {
	_, via, ok := strings.Cut(p.Topic, streamVia)
	if !ok {
		return 0, false
	}
	i := strings.LastIndexByte(via, '/')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(via[i+1:], 10, 32)
	return int32(n), err == nil
}

// Ends returns the end offset of each of the first partitions partitions
// of topic (the keyed topic: the analyze stage compares them with what its
// readers delivered, to tell a stalled reader from a quiet partition).
func (u *UpstreamLag) Ends(ctx context.Context, topic string, partitions int) (map[int32]int64, error) {
	reqs := make([]kafka.OffsetRequest, partitions)
	for i := range reqs {
		reqs[i] = kafka.LastOffsetOf(i)
	}
	lo, err := u.Client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("keyed end offsets: %w", err)
	}
	out := map[int32]int64{}
	for _, p := range lo.Topics[topic] {
		if p.Error == nil {
			out[int32(p.Partition)] = p.LastOffset
		}
	}
	return out, nil
}

// Lagging turns Read's result into the merge's predicate: a stream whose
// raw partition has a backlog upstream.
func Lagging(lag map[string]map[int32]int64) func(eventtime.Partition) bool {
	return func(p eventtime.Partition) bool {
		topic, ok := RawOfStream(p)
		return ok && lag[topic][p.Partition] > 0
	}
}
