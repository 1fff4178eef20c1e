// Package broker runs an in-process Kafka-protocol broker for the demo and quick tests, so that
// tokenwatch can be tried without a Kafka cluster while the pipeline still goes through its real
// Kafka client (kafka-go): consumer groups, offset commits and writers all speak the wire
// protocol to it on loopback.
//
// The broker is franz-go's kfake, a maintained fake that implements the protocol (groups,
// commits, transactions) rather than a mock of kafka-go: writing one would mean re-implementing
// Kafka's group coordinator. It is not Kafka; integration tests run against Apache Kafka 4.4
// (internal/testkit).
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultPartitions matches the test Kafka's num.partitions, so that the demo and the
// integration tests spread events over the same number of partitions.
const DefaultPartitions = 6

// Options configures the broker. The zero value is a broker on a free loopback port whose
// topics are created on first use with DefaultPartitions partitions, in memory.
type Options struct {
	// Partitions is the partition count of Topics and of topics created on first use
	// (DefaultPartitions when zero).
	Partitions int
	// Topics are created at start, so that consumers can join before the first write.
	Topics []string
	// Port is the loopback port to listen on; zero picks a free one (see Addrs).
	Port int
	// DataDir, when set, keeps topics, messages and committed offsets on disk across restarts
	// of the demo; empty keeps everything in memory.
	DataDir string
	// Logger receives the broker's own logs (failed requests, group changes, persistence
	// errors); nil discards them.
	Logger *slog.Logger
}

// Validate reports options that cannot make a broker, naming the field.
func (o Options) Validate() error {
	var errs []error
	if o.Partitions < 0 {
		errs = append(errs, fmt.Errorf("broker: Partitions is %d, want 0 (default %d) or more", o.Partitions, DefaultPartitions))
	}
	if o.Port < 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("broker: Port is %d, want 0 (any free port) to 65535", o.Port))
	}
	for i, topic := range o.Topics {
		if strings.TrimSpace(topic) == "" {
			errs = append(errs, fmt.Errorf("broker: Topics[%d] is empty", i))
		}
	}
	return errors.Join(errs...)
}

// Broker is a running in-process broker. Close it to release its port.
type Broker struct {
	cluster *kfake.Cluster
	addrs   []string
}

// Start starts a single-node broker on 127.0.0.1 and returns once it accepts connections. ctx
// bounds the start only; the broker runs until Close.
func Start(ctx context.Context, opts Options) (*Broker, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	partitions := opts.Partitions
	if partitions == 0 {
		partitions = DefaultPartitions
	}
	kopts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(partitions),
	}
	if opts.Port != 0 {
		kopts = append(kopts, kfake.Ports(opts.Port))
	}
	if len(opts.Topics) > 0 {
		kopts = append(kopts, kfake.SeedTopics(int32(partitions), opts.Topics...))
	}
	if opts.DataDir != "" {
		kopts = append(kopts, kfake.DataDir(opts.DataDir))
	}
	if opts.Logger != nil {
		kopts = append(kopts, kfake.WithLogger(slogAdapter{opts.Logger}))
	}
	cluster, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("broker: starting on 127.0.0.1:%d: %w", opts.Port, err)
	}
	b := &Broker{cluster: cluster, addrs: cluster.ListenAddrs()}
	if err := b.waitAccepting(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// waitAccepting dials the listener once: kfake listens before NewCluster returns, so this only
// fails when something is badly wrong, and then Start says so instead of the first client.
func (b *Broker) waitAccepting(ctx context.Context) error {
	dialer := net.Dialer{Timeout: 5 * time.Second}
	for _, addr := range b.addrs {
		conn, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("broker: listening on %s but not accepting: %w", addr, err)
		}
		conn.Close()
	}
	return nil
}

// Addrs returns the broker's bootstrap addresses (host:port on 127.0.0.1).
func (b *Broker) Addrs() []string {
	return append([]string(nil), b.addrs...)
}

// Close stops the broker, closing its listener and client connections; with DataDir set it
// saves the data first. Calling it again does nothing.
func (b *Broker) Close() {
	b.cluster.Close()
}

// slogAdapter routes kfake's leveled logs (rare: failed requests, group membership changes,
// persistence errors) to slog at the matching level.
type slogAdapter struct{ logger *slog.Logger }

func (a slogAdapter) Logf(level kfake.LogLevel, format string, args ...any) {
	var l slog.Level
	switch level {
	case kfake.LogLevelError:
		l = slog.LevelError
	case kfake.LogLevelWarn:
		l = slog.LevelWarn
	case kfake.LogLevelInfo:
		l = slog.LevelInfo
	default:
		l = slog.LevelDebug
	}
	ctx := context.Background()
	if a.logger.Enabled(ctx, l) {
		a.logger.Log(ctx, l, fmt.Sprintf(format, args...), "component", "embedded-broker")
	}
}
