package config

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
)

// Validate checks every key and names the first one that is wrong, with
// what it expects.
func (c *Config) Validate() error {
	k := c.Kafka
	if len(k.Brokers) == 0 {
		return fmt.Errorf("kafka.brokers: want at least one host:port")
	}
	for _, b := range k.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("kafka.brokers: %q is not host:port", b)
		}
	}
	if len(k.Topics) == 0 {
		return fmt.Errorf("kafka.topics: want at least one topic")
	}
	if k.GroupID == "" {
		return fmt.Errorf("kafka.group_id: want a consumer group name")
	}
	if err := oneOf("kafka.format", k.Format, "json", "otlp_proto", "otlp_json", "auto"); err != nil {
		return err
	}
	if err := oneOf("kafka.start_offset", k.StartOffset, "earliest", "latest"); err != nil {
		return err
	}
	if err := oneOf("kafka.sasl.mechanism", strings.ToLower(k.SASL.Mechanism), "", "plain", "scram-sha-256", "scram-sha-512"); err != nil {
		return err
	}
	if k.SASL.Mechanism != "" && (k.SASL.Username == "" || k.SASL.Password == "") {
		return fmt.Errorf("kafka.sasl: mechanism %s needs username and password", k.SASL.Mechanism)
	}
	if err := k.TLS.validate("kafka.tls"); err != nil {
		return err
	}
	if k.MaxWait <= 0 {
		return fmt.Errorf("kafka.max_wait: want a positive duration")
	}
	if k.StartupTimeout < 0 {
		return fmt.Errorf("kafka.startup_timeout: want 0 (wait for ever) or a positive duration, got %s", k.StartupTimeout)
	}
	ch := c.ClickHouse
	if len(ch.Addr) == 0 {
		return fmt.Errorf("clickhouse.addr: want at least one host:port")
	}
	for _, a := range ch.Addr {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("clickhouse.addr: %q is not host:port", a)
		}
	}
	if err := oneOf("clickhouse.protocol", ch.Protocol, "http", "native"); err != nil {
		return err
	}
	if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(ch.Database) {
		return fmt.Errorf("clickhouse.database: want letters, digits and underscores, got %q", ch.Database)
	}
	if err := oneOf("clickhouse.compression", ch.Compression, "none", "lz4", "zstd", "gzip"); err != nil {
		return err
	}
	if ch.Cluster != "" && !regexp.MustCompile(`^[A-Za-z0-9_.-]+$`).MatchString(ch.Cluster) {
		return fmt.Errorf("clickhouse.cluster: want the cluster's name from remote_servers (letters, digits, '_', '.', '-'), got %q", ch.Cluster)
	}
	if ch.TTLDays < 0 {
		return fmt.Errorf("clickhouse.ttl_days: want 0 (keep forever) or more")
	}
	if ch.BatchRows < 1 || ch.BatchRows > 10_000_000 {
		return fmt.Errorf("clickhouse.batch_rows: want 1 to 10000000, got %d", ch.BatchRows)
	}
	if ch.BatchInterval <= 0 {
		return fmt.Errorf("clickhouse.batch_interval: want a positive duration")
	}
	if ch.MaxPendingBatches < 1 {
		return fmt.Errorf("clickhouse.max_pending_batches: want at least 1")
	}
	if ch.DialTimeout <= 0 || ch.ReadTimeout <= 0 || ch.MaxOpenConns < 1 {
		return fmt.Errorf("clickhouse.dial_timeout, read_timeout: want positive durations (defaults 10s, 5m); clickhouse.max_open_conns: want at least 1 (default 4)")
	}
	if ch.RetryInitial <= 0 || ch.RetryMax < ch.RetryInitial {
		return fmt.Errorf("clickhouse.retry_initial/retry_max: want 0 < retry_initial <= retry_max")
	}
	if err := ch.TLS.validate("clickhouse.tls"); err != nil {
		return err
	}
	for i, p := range c.Redaction.Patterns {
		if _, err := regexp.Compile(p); err != nil {
			return fmt.Errorf("redaction.patterns[%d]: not a regular expression: %v", i, err)
		}
	}
	p := c.Pipeline
	if p.Lateness < 0 {
		return fmt.Errorf("pipeline.lateness: want 0 or a positive duration")
	}
	if p.RevocationHorizon <= 0 {
		return fmt.Errorf("pipeline.revocation_horizon: want a positive duration (default 10m)")
	}
	if p.RebuildWindow < 0 {
		return fmt.Errorf("pipeline.rebuild_window: want 0 (off) or a positive duration")
	}
	if p.RebuildMaxEvents < 1 {
		return fmt.Errorf("pipeline.rebuild_max_events: want at least 1 (default 5000000)")
	}
	if p.PartitionIdleTimeout <= 0 {
		return fmt.Errorf("pipeline.partition_idle_timeout: want a positive duration (default 5s)")
	}
	if p.DedupWindow < 0 || p.DedupMaxEntries < 1 {
		return fmt.Errorf("pipeline.dedup_window: want 0 (off) or a positive duration, and pipeline.dedup_max_entries at least 1")
	}
	if c.Pipeline.MaxMessageBytes < 1 || c.Pipeline.MaxExtraBytes < 1 {
		return fmt.Errorf("pipeline.max_message_bytes and pipeline.max_extra_bytes: want at least 1 (defaults 1048576 and 16384)")
	}
	if c.Pipeline.MaxEventAhead <= 0 || c.Pipeline.MaxEventAge < 0 {
		return fmt.Errorf("pipeline.max_event_ahead: want a positive duration (default 24h), and pipeline.max_event_age 0 (off) or a positive duration")
	}
	if p.MergeBuffer < 2 {
		return fmt.Errorf("pipeline.merge_buffer: want at least 2 events (default 100000)")
	}
	if f := c.Fleet; f.KeyedTopic != "" {
		switch f.Role {
		case RoleBoth, RoleIngest, RoleAnalyze:
		default:
			return fmt.Errorf("fleet.role: want both, ingest or analyze, got %q", f.Role)
		}
		if f.KeyedPartitions < 1 {
			return fmt.Errorf("fleet.keyed_partitions: want at least 1 (default 12)")
		}
		if f.ReplicationFactor == 0 || f.ReplicationFactor < -1 {
			return fmt.Errorf("fleet.replication_factor: want -1 (the brokers' default) or at least 1")
		}
		if f.Retention <= 0 {
			return fmt.Errorf("fleet.retention: want a positive duration (default 24h)")
		}
		if f.UpstreamBacklogWait <= 0 {
			return fmt.Errorf("fleet.upstream_backlog_wait: want a positive duration (default 2m)")
		}
		if f.PartialWait <= 0 {
			return fmt.Errorf("fleet.partial_wait: want a positive duration (default 10m)")
		}
		if f.RebuildMaxRecords < 1 {
			return fmt.Errorf("fleet.rebuild_max_records: want at least 1 (default 200000)")
		}
		if slices.Contains(c.Kafka.Topics, f.KeyedTopic) {
			return fmt.Errorf("fleet.keyed_topic: %q is also one of kafka.topics; the keyed topic is internal", f.KeyedTopic)
		}
	}
	if p.LabelCap < 1 {
		return fmt.Errorf("pipeline.label_cap: want at least 1")
	}
	if err := c.Detect.Validate(); err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	for _, u := range c.Alertmanager.URLs {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return fmt.Errorf("alertmanager.urls: %q: want an http(s) URL like http://localhost:9093", u)
		}
	}
	if len(c.Alertmanager.URLs) > 0 && c.Alertmanager.ResendInterval <= 0 {
		return fmt.Errorf("alertmanager.resend_interval: want a positive duration")
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			return fmt.Errorf("metrics.listen: %q is not [host]:port", c.Metrics.Listen)
		}
	}
	if err := oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error"); err != nil {
		return err
	}
	return oneOf("log.format", c.Log.Format, "text", "json")
}

func (t TLS) validate(prefix string) error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("%s: cert_file and key_file go together", prefix)
	}
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "") {
		return fmt.Errorf("%s.enabled: files are set but TLS is off; set enabled: true", prefix)
	}
	return nil
}

func oneOf(key, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	var shown []string
	for _, a := range allowed {
		if a != "" {
			shown = append(shown, a)
		}
	}
	return fmt.Errorf("%s: want one of %s, got %q", key, strings.Join(shown, ", "), v)
}
