package pipeline

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/ingest/consumer"
)

// TopicForwarder copies messages to a side topic (dead letters, quarantine)
// with headers that say where they came from and why.
type TopicForwarder struct {
	w *kafka.Writer
}

// NewTopicForwarder writes to topic on the given brokers.
// A nil transport is kafka-go's default (no TLS, no SASL).
func NewTopicForwarder(brokers []string, topic string, transport *kafka.Transport) *TopicForwarder {
	w := &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Topic:                  topic,
		RequiredAcks:           kafka.RequireAll,
		AllowAutoTopicCreation: true,
		BatchTimeout:           10 * time.Millisecond,
	}
	if transport != nil {
		w.Transport = transport // a typed nil would not be kafka-go's default
	}
	return &TopicForwarder{w: w}
}

// Forward writes m synchronously: its offset is committed later only if
// this returned, so a dead letter is never lost.
func (f *TopicForwarder) Forward(ctx context.Context, m consumer.Message, why string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := f.w.WriteMessages(ctx, kafka.Message{
		Key:   m.Key,
		Value: m.Value,
		Headers: []kafka.Header{
			{Key: "tokenwatch.source.topic", Value: []byte(m.Src.Topic)},
			{Key: "tokenwatch.source.partition", Value: []byte(strconv.Itoa(int(m.Src.Partition)))},
			{Key: "tokenwatch.source.offset", Value: []byte(strconv.FormatInt(m.Src.Offset, 10))},
			{Key: "tokenwatch.error", Value: []byte(why)},
		},
	})
	if err != nil {
		return fmt.Errorf("forward to %s: %w", f.w.Topic, err)
	}
	return nil
}

// Close flushes and closes the writer.
func (f *TopicForwarder) Close() error { return f.w.Close() }
