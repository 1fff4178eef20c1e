package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/tokenwatch/tokenwatch/alerts/alertmanager"
	"github.com/tokenwatch/tokenwatch/config"
	"github.com/tokenwatch/tokenwatch/detect"
	"github.com/tokenwatch/tokenwatch/eventtime"
	"github.com/tokenwatch/tokenwatch/ingest"
	"github.com/tokenwatch/tokenwatch/ingest/consumer"
	"github.com/tokenwatch/tokenwatch/ingest/dedup"
	"github.com/tokenwatch/tokenwatch/ingest/redact"
	"github.com/tokenwatch/tokenwatch/metrics"
	"github.com/tokenwatch/tokenwatch/rekey"
	"github.com/tokenwatch/tokenwatch/sli"
	"github.com/tokenwatch/tokenwatch/slo"
)

// Built is a pipeline assembled from the config, with what it was made of.
type Built struct {
	Pipeline *Pipeline
	Stages   *Stages
	Metrics  *metrics.Pipeline
	closers  []func() error
}

// Close releases side-topic writers and the notifier.
func (b *Built) Close() {
	for _, c := range b.closers {
		_ = c()
	}
}

// StoreReplayer is a store that can also read its events back.
type StoreReplayer interface {
	Store
	Replayer
}

// Build assembles decoder, redaction guard, stages, side topics and the
// pipeline from the config, as one process that does everything (no
// re-keying); metrics go on reg. The caller sets the acker (the consumer
// group) and runs it.
func Build(c config.Config, st StoreReplayer, reg prometheus.Registerer, log *slog.Logger) (*Built, error) {
	return BuildStage(c, "", st, reg, log)
}

// AnalyzeGroupID is the fleet's analyze stage consumer group.
func AnalyzeGroupID(c config.Config) string {
	if c.Fleet.AnalyzeGroupID != "" {
		return c.Fleet.AnalyzeGroupID
	}
	return c.Kafka.GroupID + "-analyze"
}

// BuildStage assembles one stage of the fleet (docs/fleet.md): role
// config.RoleIngest reads the raw topics, stores the events, feeds the SLI
// exporter and publishes every accepted event to fleet.keyed_topic;
// config.RoleAnalyze reads the keyed topic (its consumer group reads
// fleet.keyed_topic) and runs the revocation tracker and the detectors,
// storing findings and revocations. Role "" is the single process.
func BuildStage(c config.Config, role string, st StoreReplayer, reg prometheus.Registerer, log *slog.Logger) (*Built, error) {
	format, err := ingest.ParseFormat(c.Kafka.Format)
	if err != nil {
		return nil, fmt.Errorf("kafka.format: %w", err)
	}
	var dec Decoder
	if role == config.RoleAnalyze {
		if dec, err = rekey.NewDecoder(c.Fleet.KeyedPartitions, reg); err != nil {
			return nil, err
		}
	} else if dec, err = ingest.NewDecoder(format); err != nil {
		return nil, err
	}
	if c.Redaction.Key == "" {
		log.Warn("redaction.key is empty: leaked credentials are hashed with a random per-process key, so their hashes do not correlate across restarts; set TOKENWATCH_REDACTION_KEY")
	}
	guard, err := redact.New(redact.Config{Key: []byte(c.Redaction.Key), Patterns: c.Redaction.Patterns})
	if err != nil {
		return nil, fmt.Errorf("redaction.patterns: %w", err)
	}
	var split *sli.Split
	part := rekey.NewPartitioner(c.Fleet.KeyedPartitions)
	if role == config.RoleAnalyze {
		split = part.Split()
	}
	stages, err := buildStages(c, reg, split)
	if err != nil {
		return nil, err
	}
	m := metrics.New(reg)
	b := &Built{Stages: stages, Metrics: m}
	// The analyze stage filters again, in event-time order (Pipeline.observe):
	// a copy on another raw partition passed the other ingest member's filter.
	opts := Options{Decoder: dec, Guard: guard, Observers: []Observer{stages}, Store: st, Replayer: st, Metrics: m, Log: log,
		Dedup: NewDedup(c.Pipeline)}
	rebuild := c.Pipeline.RebuildWindow
	keyedPartitions := 0
	var maxAhead time.Duration
	var lagging time.Duration
	switch role {
	case config.RoleIngest:
		opts.Observers = []Observer{exporterOnly{stages.Exporter}}
		tr, err := consumer.Transport(c.Kafka)
		if err != nil {
			return nil, err
		}
		pub, err := rekey.NewPublisher(rekey.PublisherConfig{Brokers: c.Kafka.Brokers, Topic: c.Fleet.KeyedTopic,
			Partitions: c.Fleet.KeyedPartitions, Transport: tr}, log)
		if err != nil {
			return nil, err
		}
		opts.Publisher = pub
		b.closers = append(b.closers, pub.Close)
		rebuild = 0 // no detectors here
		// The keyed topic receives the raw partitions in the order this
		// stage reads them: keep them within the lateness of each other in
		// event time, or a backlog read faster on one raw partition makes
		// the other partitions' events late for the analyze members.
		maxAhead = c.Pipeline.Lateness
	case config.RoleAnalyze:
		opts.Guard = nil // the ingest stage guarded every event it published
		opts.Observers = []Observer{detectorsOnly{stages}}
		opts.Store = eventsStoredByIngest{st}
		keyedPartitions = c.Fleet.KeyedPartitions
		// A raw partition whose ingest member died is silent until the
		// ingest group hands it on: while the ingest group has not
		// committed its end, its streams hold the watermark.
		lagging = c.Fleet.UpstreamBacklogWait
		// The stored events are keyed by their raw partitions, not by the
		// keyed partitions this member owns: it rebuilds from the keyed
		// records the previous owner processed.
		tr, err := consumer.Transport(c.Kafka)
		if err != nil {
			return nil, err
		}
		d, err := consumer.Dialer(c.Kafka)
		if err != nil {
			return nil, err
		}
		opts.Replayer = nil
		up := &rekey.UpstreamLag{Client: &kafka.Client{Addr: kafka.TCP(c.Kafka.Brokers...), Transport: tr},
			Group: c.Kafka.GroupID, Topics: c.Kafka.Topics}
		opts.Upstream = func(ctx context.Context) (Upstream, error) {
			lag, err := up.Read(ctx)
			if err != nil {
				return Upstream{}, err
			}
			ends, err := up.Ends(ctx, c.Fleet.KeyedTopic, c.Fleet.KeyedPartitions)
			if err != nil {
				return Upstream{}, err
			}
			return Upstream{Raw: rekey.Lagging(lag), RawLag: lag, KeyedEnds: ends, KeyedOf: rekey.KeyedOfStream}, nil
		}
		opts.MessageReplayer = &rekey.Replayer{Brokers: c.Kafka.Brokers, Dialer: d, Transport: tr,
			Group: AnalyzeGroupID(c), Window: rebuild, MaxRecords: c.Fleet.RebuildMaxRecords}
		// A broadcast revoke's result is split by keyed partition: each
		// member publishes its partitions' partials to the revoke's owner,
		// which merges them (docs/fleet.md).
		pub, err := rekey.NewPublisher(rekey.PublisherConfig{Brokers: c.Kafka.Brokers, Topic: c.Fleet.KeyedTopic,
			Partitions: c.Fleet.KeyedPartitions, Transport: tr}, log)
		if err != nil {
			return nil, err
		}
		b.closers = append(b.closers, pub.Close)
		stages.tasks.OnPartial(func(x sli.RevocationPartial) {
			if err := pub.PublishPartial(x); err != nil {
				log.Error("a partial revocation result could not be encoded", "revocation", x.Revoke.ID, "err", err)
			}
		})
		dec.(*rekey.Decoder).SetPartialSink(stages.Partial)
		// The per-service detectors' state: each member folds its keyed
		// partitions' events into per-minute partials and publishes them to
		// the member owning the aggregates, which merges every partition's
		// and judges the merged minutes (docs/fleet.md, "Aggregates").
		member := memberName()
		stages.Detect.SetAggregates(detect.AggregateConfig{Sources: c.Fleet.KeyedPartitions, Wait: c.Fleet.PartialWait,
			Retain: max(rebuild, time.Hour), Global: part.AggregatesOwner(), DestOf: part.RateOwner,
			Publish: func(xs []detect.Partial) {
				for _, x := range xs {
					x.Member = member
					if err := pub.PublishAggregate(x.Dest, x); err != nil {
						log.Error("a partial aggregate could not be encoded", "source", x.Source, "slice", x.Slice, "err", err)
					}
				}
				pub.Mark()
			}})
		dec.(*rekey.Decoder).SetAggregateSink(func(v []byte, replay bool) error {
			var x detect.Partial
			if err := json.Unmarshal(v, &x); err != nil {
				return err
			}
			if x.Source < 0 || int(x.Source) >= c.Fleet.KeyedPartitions || x.Dest < 0 || int(x.Dest) >= c.Fleet.KeyedPartitions || x.Slice <= 0 {
				return fmt.Errorf("source %d, dest %d of %d partitions, slice %d", x.Source, x.Dest, c.Fleet.KeyedPartitions, x.Slice)
			}
			stages.aggregate(x, replay)
			return nil
		})
		dec.(*rekey.Decoder).SetTokenFactsSink(stages.tasks.Learn)
		opts.OnAssigned = func(partitions []int32) {
			dec.(*rekey.Decoder).Owned(partitions)
			stages.assigned(part, partitions)
		}
		opts.OnLag = stages.tasks.SetLag
	}
	if c.Kafka.DeadLetterTopic != "" || c.Kafka.QuarantineTopic != "" {
		tr, err := consumer.Transport(c.Kafka)
		if err != nil {
			return nil, err
		}
		if c.Kafka.DeadLetterTopic != "" {
			f := NewTopicForwarder(c.Kafka.Brokers, c.Kafka.DeadLetterTopic, tr)
			opts.DeadLetter = f
			b.closers = append(b.closers, f.Close)
		}
		if c.Kafka.QuarantineTopic != "" {
			f := NewTopicForwarder(c.Kafka.Brokers, c.Kafka.QuarantineTopic, tr)
			opts.Quarantine = f
			b.closers = append(b.closers, f.Close)
		}
	}
	p, err := New(Config{
		BatchRows: c.ClickHouse.BatchRows, BatchInterval: c.ClickHouse.BatchInterval,
		MaxPendingBatches: c.ClickHouse.MaxPendingBatches, RetryInitial: c.ClickHouse.RetryInitial,
		RetryMax: c.ClickHouse.RetryMax, LabelCap: c.Pipeline.LabelCap, RebuildWindow: rebuild, RebuildMaxEvents: c.Pipeline.RebuildMaxEvents,
		EventTime: eventtime.Config{IdleTimeout: c.Pipeline.PartitionIdleTimeout, LaggingTimeout: lagging, MaxBuffered: c.Pipeline.MergeBuffer,
			Lateness: c.Pipeline.Lateness, MaxAhead: maxAhead},
		KeyedPartitions: keyedPartitions,
		MaxEventAhead:   c.Pipeline.MaxEventAhead, MaxEventAge: c.Pipeline.MaxEventAge, Format: format,
		MaxMessageBytes: c.Pipeline.MaxMessageBytes, MaxExtraBytes: c.Pipeline.MaxExtraBytes,
	}, opts)
	if err != nil {
		return nil, err
	}
	stages.SetSink(p)
	b.Pipeline = p
	if len(c.Alertmanager.URLs) > 0 {
		pusher, err := alertmanager.New(alertmanager.Config{
			URLs: c.Alertmanager.URLs, ResendInterval: c.Alertmanager.ResendInterval, Timeout: c.Alertmanager.Timeout,
			BearerToken: c.Alertmanager.BearerToken, RunbookBaseURL: c.Alertmanager.RunbookBaseURL,
		}, reg, log)
		if err != nil {
			return nil, fmt.Errorf("alertmanager: %w", err)
		}
		if err := pusher.Start(context.Background()); err != nil {
			return nil, fmt.Errorf("alertmanager: %w", err)
		}
		p.SetNotifier(pusher)
		b.closers = append(b.closers, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return pusher.Shutdown(ctx)
		})
	}
	return b, nil
}

// BuildStages makes the SLI exporter, the revocation tracker and the
// detectors from the config.
func BuildStages(c config.Config, reg prometheus.Registerer) (*Stages, error) {
	return buildStages(c, reg, nil)
}

// buildStages is BuildStages; with split (the fleet's analyze stage) the
// tracker reports broadcast revokes per keyed partition, and the stages
// merge the partials of those this member owns.
func buildStages(c config.Config, reg prometheus.Registerer, split *sli.Split) (*Stages, error) {
	spec := slo.Default()
	if c.SLOFile != "" {
		s, err := slo.Load(c.SLOFile)
		if err != nil {
			return nil, err
		}
		spec = s
	}
	// The exporter exports raw outcomes (the rules apply the spec's classes);
	// it needs the propagation threshold to tell a slow revoke from an
	// unconfirmed one, as the detector does.
	propagationSLO := spec.RevocationThreshold(c.Detect.RevocationSLO)
	exp, err := sli.NewExporter(reg, sli.ExporterConfig{MaxLabelValues: c.Pipeline.LabelCap, PropagationSLO: propagationSLO})
	if err != nil {
		return nil, err
	}
	tc := sli.TrackerConfig{Horizon: c.Pipeline.RevocationHorizon, Lateness: c.Pipeline.Lateness, BreachAfter: propagationSLO, Split: split}
	st := &Stages{Exporter: exp}
	var tr RevocationTracker
	if split == nil {
		tr, err = sli.NewTracker(tc)
	} else {
		st.tasks, err = sli.NewTasks(tc)
		tr = st.tasks
	}
	if err != nil {
		return nil, err
	}
	st.Tracker = tr
	if split != nil {
		st.merger = sli.NewRevocationMerger(c.Fleet.PartialWait)
		st.partials = &partialMetrics{
			pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tokenwatch_revocation_partials_pending",
				Help: "Broadcast revokes this analyze member owns that wait for the partial results of some keyed partitions."}),
			late: prometheus.NewCounter(prometheus.CounterOpts{Name: "tokenwatch_revocation_partials_late_total",
				Help: "Partial results of broadcast revokes that arrived after fleet.partial_wait, when the revoke had been reported truncated: merged in and reported again."}),
		}
		if st.aggs, err = newAggregateMetrics(reg); err != nil {
			return nil, err
		}
		if reg != nil {
			if err := reg.Register(st.partials.pending); err != nil {
				return nil, err
			}
			if err := reg.Register(st.partials.late); err != nil {
				return nil, err
			}
		}
	}
	dc := c.Detect
	dc.RevocationSLO = propagationSLO
	det, err := detect.New(dc, st, reg)
	if err != nil {
		return nil, err
	}
	st.Detect = det
	tr.OnResult(st.revocation)
	tr.OnBreach(st.breach)
	return st, nil
}

// memberName names this process in the partials it publishes (for people
// reading the keyed topic; partials are identified by keyed partition).
func memberName() string {
	host, _ := os.Hostname()
	return host + "/" + strconv.Itoa(os.Getpid())
}

// NewDedup is the copy filter pipeline.dedup_window configures (nil when
// off); analyze uses the same, so both drop the same copies.
func NewDedup(c config.Pipeline) Dedup {
	if c.DedupWindow <= 0 {
		return nil
	}
	return dedup.New(dedup.Config{Window: c.DedupWindow, MaxEntries: c.DedupMaxEntries})
}
