package rekey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// TopicConfig is how the keyed topic is created.
type TopicConfig struct {
	Name       string
	Partitions int
	// ReplicationFactor -1 and MinInsyncReplicas 0 take the brokers'
	// defaults.
	ReplicationFactor int
	MinInsyncReplicas int
	Retention         time.Duration
}

// EnsureTopic creates the keyed topic when it does not exist, with its
// partitions, replication, retention and min.insync.replicas. An existing
// one must have the configured partition count: the keys' placement
// depends on it, and members disagreeing on it would split a token's
// events.
func EnsureTopic(ctx context.Context, d *kafka.Dialer, brokers []string, tc TopicConfig, log *slog.Logger) error {
	var conn *kafka.Conn
	var err error
	for _, b := range brokers {
		if conn, err = d.DialContext(ctx, "tcp", b); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("fleet.keyed_topic: cannot reach a broker: %w", err)
	}
	defer conn.Close()
	if parts, err := conn.ReadPartitions(tc.Name); err == nil && len(parts) > 0 {
		if len(parts) != tc.Partitions {
			return fmt.Errorf("fleet.keyed_topic %s has %d partitions, fleet.keyed_partitions says %d: keys would be placed on the wrong members (set the key to %d, or recreate the topic)",
				tc.Name, len(parts), tc.Partitions, len(parts))
		}
		return nil
	}
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("fleet.keyed_topic: find the controller: %w", err)
	}
	cc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return fmt.Errorf("fleet.keyed_topic: dial the controller: %w", err)
	}
	defer cc.Close()
	entries := []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: strconv.FormatInt(tc.Retention.Milliseconds(), 10)}}
	if tc.MinInsyncReplicas > 0 {
		entries = append(entries, kafka.ConfigEntry{ConfigName: "min.insync.replicas", ConfigValue: strconv.Itoa(tc.MinInsyncReplicas)})
	}
	if err := cc.CreateTopics(kafka.TopicConfig{Topic: tc.Name, NumPartitions: tc.Partitions,
		ReplicationFactor: tc.ReplicationFactor, ConfigEntries: entries}); err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("fleet.keyed_topic: create %s: %w", tc.Name, err)
	}
	log.Info("keyed topic created", "topic", tc.Name, "partitions", tc.Partitions, "replication_factor", tc.ReplicationFactor,
		"retention", tc.Retention, "min_insync_replicas", tc.MinInsyncReplicas)
	return nil
}
