// Package config is tokenwatch's one YAML file: defaults, the file, then
// TOKENWATCH_* environment variables, then flags (--set key=value), each
// layer overriding the one before. Validate names the key that is wrong and
// what it expects; Masked prints the effective config without secrets.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tokenwatch/tokenwatch/detect"
)

// Config is the whole file. Every key is documented in docs/config.md.
type Config struct {
	Kafka      Kafka      `yaml:"kafka"`
	ClickHouse ClickHouse `yaml:"clickhouse"`
	Redaction  Redaction  `yaml:"redaction"`
	Pipeline   Pipeline   `yaml:"pipeline"`
	// Fleet re-keys unkeyed input for several replicas (docs/fleet.md);
	// off (one process, no internal topic) unless fleet.keyed_topic is set.
	Fleet Fleet `yaml:"fleet"`
	// Detect tunes the detectors (detect.Config documents every key).
	Detect       detect.Config `yaml:"detect"`
	Alertmanager Alertmanager  `yaml:"alertmanager"`
	Metrics      Metrics       `yaml:"metrics"`
	Log          Log           `yaml:"log"`
	// SLOFile is the SLO spec; empty means the built-in default (slo/default.yaml).
	SLOFile string `yaml:"slo_file"`
}

// Kafka says where events come from.
type Kafka struct {
	Brokers []string `yaml:"brokers"`
	Topics  []string `yaml:"topics"`
	GroupID string   `yaml:"group_id"`
	// Format of the messages: json, otlp_proto, otlp_json, or auto (sniffed per message).
	Format string `yaml:"format"`
	// StartOffset is where a new consumer group starts: earliest or latest.
	StartOffset string `yaml:"start_offset"`
	// DeadLetterTopic receives messages that failed to decode (empty: off).
	DeadLetterTopic string `yaml:"dead_letter_topic"`
	// QuarantineTopic receives the original of a message that leaked a
	// credential. Off by default: that topic holds the secret.
	QuarantineTopic string        `yaml:"quarantine_topic"`
	TLS             TLS           `yaml:"tls"`
	SASL            SASL          `yaml:"sasl"`
	MaxWait         time.Duration `yaml:"max_wait"`
	SessionTimeout  time.Duration `yaml:"session_timeout"`
	// StartupTimeout: `run` exits non-zero when its consumer groups have
	// not joined this long after start, naming the brokers and the last
	// error (0: wait for ever).
	StartupTimeout time.Duration `yaml:"startup_timeout"`
}

// TLS configures a client's TLS; Enabled with no files uses the system roots.
type TLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// SASL configures Kafka authentication: plain, scram-sha-256 or scram-sha-512.
type SASL struct {
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password" secret:"true"`
}

// ClickHouse says where events, SLIs and findings are stored.
type ClickHouse struct {
	// Addr is host:port of the HTTP (8123) or native (9000) interface.
	Addr     []string `yaml:"addr"`
	Protocol string   `yaml:"protocol"` // http or native
	Database string   `yaml:"database"`
	Username string   `yaml:"username"`
	Password string   `yaml:"password" secret:"true"`
	TLS      TLS      `yaml:"tls"`
	// TTLDays keeps events this many days (0: forever).
	TTLDays int `yaml:"ttl_days"`
	// BatchRows and BatchInterval cut a batch, whichever comes first.
	BatchRows     int           `yaml:"batch_rows"`
	BatchInterval time.Duration `yaml:"batch_interval"`
	// MaxPendingBatches bounds memory: when this many batches wait for
	// ClickHouse, the consumer stops fetching (back-pressure).
	MaxPendingBatches int           `yaml:"max_pending_batches"`
	RetryInitial      time.Duration `yaml:"retry_initial"`
	RetryMax          time.Duration `yaml:"retry_max"`
	Compression       string        `yaml:"compression"` // none, lz4, zstd, gzip
	// DialTimeout, ReadTimeout and MaxOpenConns tune the connection pool:
	// a ClickHouse that accepts connections but never answers fails a
	// query after ReadTimeout, and a pool of MaxOpenConns all waiting
	// fails a new one after DialTimeout.
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	MaxOpenConns int           `yaml:"max_open_conns"`
	// Cluster names the ClickHouse cluster (remote_servers) to migrate ON
	// CLUSTER: ReplicatedMergeTree tables with Distributed tables over
	// them (docs/scaling.md). Empty: one node.
	Cluster string `yaml:"cluster"`
}

// Redaction configures the guard that keeps raw credentials out.
type Redaction struct {
	// Key is the HMAC key for replacing leaked values; set it through
	// TOKENWATCH_REDACTION_KEY rather than the file.
	Key string `yaml:"key" secret:"true"`
	// Patterns are extra regular expressions that mark a value as a leak.
	Patterns []string `yaml:"patterns"`
}

// Pipeline tunes the in-process stages.
type Pipeline struct {
	// Lateness bounds how late an event may arrive (by ts) and still be
	// ordered correctly by the stateful stages (revocation propagation,
	// detectors). The stored per-minute SLIs accept any lateness.
	Lateness time.Duration `yaml:"lateness"`
	// RevocationHorizon is how long a revoke waits to be seen propagated.
	RevocationHorizon time.Duration `yaml:"revocation_horizon"`
	// LabelCap bounds distinct service/issuer/region label values on /metrics.
	LabelCap int `yaml:"label_cap"`
	// RebuildWindow is how much stored history (from ClickHouse) is replayed
	// into the detectors when this member takes over partitions, after a
	// restart or a rebalance; 0 turns the rebuild off.
	RebuildWindow time.Duration `yaml:"rebuild_window"`
	// RebuildMaxEvents bounds the events one rebuild replays from
	// ClickHouse: when the window holds more, it replays the latest this
	// many (the detectors' state tables bound the memory either way).
	RebuildMaxEvents int `yaml:"rebuild_max_events"`
	// PartitionIdleTimeout: a partition that delivered nothing for this
	// long (wall clock) stops holding back the event-time watermark of the
	// merged partitions.
	PartitionIdleTimeout time.Duration `yaml:"partition_idle_timeout"`
	// MergeBuffer bounds the events held to merge the partitions in event
	// time; a partition running ahead is paused when it is half full.
	MergeBuffer int `yaml:"merge_buffer"`
	// DedupWindow is how long (event time) an accepted event's identity
	// (request_id, kind, outcome, service, token, ts) is remembered, so a
	// copy is dropped; 0 turns it off.
	DedupWindow time.Duration `yaml:"dedup_window"`
	// DedupMaxEntries bounds the identities remembered (about 40 B each).
	DedupMaxEntries int `yaml:"dedup_max_entries"`
	// MaxEventAhead rejects an event whose ts is further ahead of the
	// wall clock than this (an emitter's clock gone wrong, a unit mixed
	// up): stored, it would sit in the future of every dashboard.
	MaxEventAhead time.Duration `yaml:"max_event_ahead"`
	// MaxEventAge rejects an event older than this; 0 (the default) only
	// what the events table cannot hold (before 1900). Not the events
	// table's retention by default: a backfill of older history still
	// feeds the per-minute SLIs, which are kept 400 days. Nothing is ever
	// stored with another ts than it was sent with.
	MaxEventAge time.Duration `yaml:"max_event_age"`
	// MaxMessageBytes rejects a raw message larger than this, and
	// MaxExtraBytes an event whose fields the contract does not name (kept
	// in extra) take more than this, names and values together: a 10 MB
	// unknown field was once stored whole.
	MaxMessageBytes int `yaml:"max_message_bytes"`
	MaxExtraBytes   int `yaml:"max_extra_bytes"`
}

// Fleet is the two-stage deployment: an ingest stage re-keys the raw
// topics onto an internal keyed topic, an analyze stage (a second consumer
// group) reads it (docs/fleet.md).
type Fleet struct {
	// KeyedTopic is the internal topic; empty turns the fleet off.
	KeyedTopic string `yaml:"keyed_topic"`
	// KeyedPartitions is its partition count, fixed once created: the
	// analyze stage's parallelism.
	KeyedPartitions int `yaml:"keyed_partitions"`
	// ReplicationFactor and MinInsyncReplicas for creating it; -1 and 0
	// take the brokers' defaults.
	ReplicationFactor int `yaml:"replication_factor"`
	MinInsyncReplicas int `yaml:"min_insync_replicas"`
	// Retention of the keyed topic: long enough for an analyze member to
	// catch up after an outage.
	Retention time.Duration `yaml:"retention"`
	// Role is what `run` runs: both stages (default), ingest or analyze.
	Role string `yaml:"role"`
	// AnalyzeGroupID is the analyze stage's consumer group (default
	// kafka.group_id + "-analyze").
	AnalyzeGroupID string `yaml:"analyze_group_id"`
	// RebuildMaxRecords bounds the keyed records an analyze member reads
	// back (pipeline.rebuild_window of them) when it takes over partitions.
	RebuildMaxRecords int64 `yaml:"rebuild_max_records"`
	// PartialWait is how long (wall clock) the owner of a broadcast revoke
	// waits for the partial results of every keyed partition before it
	// reports the revoke truncated.
	PartialWait time.Duration `yaml:"partial_wait"`
	// UpstreamBacklogWait is how long a stream of the keyed topic (a raw
	// partition as one keyed partition carries it) whose raw partition
	// still has events the ingest group has not committed may be silent
	// before it stops holding back the analyze stage's watermark: longer
	// than the ingest group takes to hand a dead member's raw partitions
	// on (kafka.session_timeout), or their events arrive late.
	UpstreamBacklogWait time.Duration `yaml:"upstream_backlog_wait"`
}

// Fleet roles.
const (
	RoleBoth    = "both"
	RoleIngest  = "ingest"
	RoleAnalyze = "analyze"
)

// Alertmanager is where findings are pushed (empty URLs: off).
type Alertmanager struct {
	URLs           []string      `yaml:"urls"`
	ResendInterval time.Duration `yaml:"resend_interval"`
	Timeout        time.Duration `yaml:"timeout"`
	BearerToken    string        `yaml:"bearer_token" secret:"true"`
	RunbookBaseURL string        `yaml:"runbook_base_url"`
}

// Metrics is the /metrics listener.
type Metrics struct {
	Listen string `yaml:"listen"`
}

// Log configures log/slog output.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Default is the configuration with nothing set: a local Kafka and ClickHouse.
func Default() Config {
	return Config{
		Kafka: Kafka{
			Brokers:        []string{"localhost:9092"},
			Topics:         []string{"auth-events"},
			GroupID:        "tokenwatch",
			Format:         "json",
			StartOffset:    "earliest",
			MaxWait:        250 * time.Millisecond,
			SessionTimeout: 30 * time.Second,
			StartupTimeout: 2 * time.Minute,
		},
		ClickHouse: ClickHouse{
			Addr:              []string{"localhost:8123"},
			Protocol:          "http",
			Database:          "tokenwatch",
			Username:          "default",
			TTLDays:           30,
			BatchRows:         50000,
			BatchInterval:     500 * time.Millisecond,
			MaxPendingBatches: 4,
			RetryInitial:      200 * time.Millisecond,
			RetryMax:          15 * time.Second,
			DialTimeout:       10 * time.Second,
			ReadTimeout:       5 * time.Minute,
			MaxOpenConns:      4,
			Compression:       "lz4",
		},
		Pipeline: Pipeline{
			Lateness:             30 * time.Second,
			RevocationHorizon:    10 * time.Minute,
			LabelCap:             200,
			RebuildWindow:        30 * time.Minute,
			RebuildMaxEvents:     5_000_000,
			PartitionIdleTimeout: 5 * time.Second,
			MergeBuffer:          100_000,
			DedupWindow:          10 * time.Minute,
			MaxEventAhead:        24 * time.Hour,
			MaxMessageBytes:      1 << 20,
			MaxExtraBytes:        16 << 10,
			DedupMaxEntries:      500_000,
		},
		Fleet: Fleet{KeyedPartitions: 12, ReplicationFactor: -1, Retention: 24 * time.Hour, Role: RoleBoth,
			RebuildMaxRecords: 200_000, PartialWait: 10 * time.Minute,
			UpstreamBacklogWait: 2 * time.Minute},
		Detect: detect.DefaultConfig(),
		Alertmanager: Alertmanager{
			ResendInterval: time.Minute,
			Timeout:        10 * time.Second,
			RunbookBaseURL: "https://github.com/tokenwatch/tokenwatch/blob/main/docs/runbooks",
		},
		Metrics: Metrics{Listen: ":9464"},
		Log:     Log{Level: "info", Format: "text"},
	}
}

// Load builds the effective config: defaults, then the file (if path is not
// empty), then the environment, then the key=value overrides from flags.
func Load(path string, environ []string, overrides []string) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&c, environ); err != nil {
		return c, err
	}
	for _, kv := range overrides {
		if err := Set(&c, kv); err != nil {
			return c, err
		}
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}
