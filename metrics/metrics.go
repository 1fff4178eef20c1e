// Package metrics is the pipeline's own health on /metrics: what it consumed,
// stored and rejected, how batches flush, how far behind it is. The SLIs and
// detector metrics are registered by their own packages on the same registry.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Pipeline holds the pipeline's metrics. Labels are bounded: topic, partition,
// a closed set of rejection reasons, an emitter (service) name capped by the
// caller, ClickHouse operation names.
type Pipeline struct {
	Consumed           *prometheus.CounterVec
	Decoded            *prometheus.CounterVec
	Accepted           *prometheus.CounterVec
	Late               *prometheus.CounterVec
	Watermark          prometheus.Gauge
	MergeBuffered      prometheus.Gauge
	MergeForced        prometheus.Counter
	MergeIdle          prometheus.Gauge
	PartialView        *prometheus.GaugeVec
	Duplicates         *prometheus.CounterVec
	Stored             prometheus.Counter
	Rejected           *prometheus.CounterVec
	RedactionViolation *prometheus.CounterVec
	BatchRows          prometheus.Histogram
	FlushSeconds       prometheus.Histogram
	Lag                *prometheus.GaugeVec
	Connected          *prometheus.GaugeVec
	CHErrors           *prometheus.CounterVec
	CHRetries          *prometheus.CounterVec
	DeadLettered       prometheus.Counter
	Committed          *prometheus.GaugeVec
	FindingLatency     prometheus.Histogram
}

// New registers the pipeline metrics on reg.
func New(reg prometheus.Registerer) *Pipeline {
	p := &Pipeline{
		Consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_events_consumed_total", Help: "Kafka messages read, by topic (a message may carry many events: see tokenwatch_events_decoded_total).",
		}, []string{"topic"}),
		Decoded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_events_decoded_total", Help: "Events (records) the messages carried, accepted or rejected, by topic.",
		}, []string{"topic"}),
		Accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_events_accepted_total", Help: "Events decoded and accepted, by topic.",
		}, []string{"topic"}),
		Late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_late_events_total",
			Help: "Events that arrived behind the event time a stateful stage had reached, by stage: merge (more than the lateness behind the merged partitions' watermark, passed on), revocation (ignored by the propagation tracker), detect (behind the detectors' clock by more than detect.allowed_lateness). They are still stored and counted in the per-minute SLIs.",
		}, []string{"stage"}),
		Watermark: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokenwatch_event_time_watermark_seconds", Help: "Event time (unix seconds) the merged partitions have reached: the minimum over the partitions being read of the newest ts each delivered.",
		}),
		MergeBuffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokenwatch_event_time_buffered_events", Help: "Events held to be released in event-time order (pipeline.merge_buffer bounds it).",
		}),
		MergeForced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenwatch_event_time_forced_total", Help: "Events released before the watermark reached them because the merge buffer was full; partitions behind then arrive late.",
		}),
		Duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_events_duplicate_total",
			Help: "Accepted events dropped as copies of one seen within pipeline.dedup_window (same request_id, kind, outcome, service, token and ts): neither stored nor counted again, by topic.",
		}, []string{"topic"}),
		PartialView: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenwatch_detectors_partial_view",
			Help: "1 when the detector kind (per service, kid or client state) of this fleet analyze member judges only the events of its share of the keyed partitions; 0 when it judges every partition's (the per-minute aggregates merged by their owners: every kind today).",
		}, []string{"kind"}),
		MergeIdle: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokenwatch_event_time_idle_partitions", Help: "Partitions excluded from the watermark because they delivered nothing for pipeline.partition_idle_timeout.",
		}),
		Stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenwatch_events_stored_total", Help: "Events acknowledged by ClickHouse.",
		}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_events_rejected_total", Help: "Messages or records that failed to decode, by topic and reason.",
		}, []string{"topic", "reason"}),
		RedactionViolation: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_redaction_violations_total", Help: "Events that carried a raw credential (replaced by a keyed hash), by emitter.",
		}, []string{"emitter"}),
		BatchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tokenwatch_batch_rows", Help: "Rows per ClickHouse insert.",
			Buckets: prometheus.ExponentialBuckets(10, 4, 9),
		}),
		FlushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tokenwatch_flush_duration_seconds", Help: "Time to insert one batch, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
		}),
		Connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenwatch_consumer_connected", Help: "1 while this process is joined to its consumer group (it owns partitions and reads them), 0 before it first joins and while it rejoins, by group; exported from the start.",
		}, []string{"group"}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenwatch_consumer_lag", Help: "Messages between the partition's high watermark and the next offset to read.",
		}, []string{"topic", "partition"}),
		CHErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_clickhouse_errors_total", Help: "Failed ClickHouse operations, by operation.",
		}, []string{"op"}),
		CHRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenwatch_clickhouse_retries_total", Help: "Retried ClickHouse operations, by operation.",
		}, []string{"op"}),
		DeadLettered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenwatch_events_dead_lettered_total", Help: "Rejected messages written to the dead-letter topic.",
		}),
		Committed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenwatch_committed_offset", Help: "Last offset committed to Kafka, by topic and partition.",
		}, []string{"topic", "partition"}),
		FindingLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tokenwatch_finding_latency_seconds", Help: "From the triggering event's append to Kafka to its finding stored in ClickHouse.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30},
		}),
	}
	reg.MustRegister(p.Consumed, p.Decoded, p.Accepted, p.Late, p.Watermark, p.MergeBuffered, p.MergeForced, p.MergeIdle, p.PartialView, p.Duplicates, p.Stored, p.Rejected, p.RedactionViolation, p.BatchRows, p.FlushSeconds,
		p.Connected, p.Lag, p.CHErrors, p.CHRetries, p.DeadLettered, p.Committed, p.FindingLatency)
	return p
}
