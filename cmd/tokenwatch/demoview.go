package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/tokenwatch/tokenwatch/eval"
	"github.com/tokenwatch/tokenwatch/gen"
	"github.com/tokenwatch/tokenwatch/pipeline"
)

// demoSummary is what the demo prints at the end and writes with --summary-json.
type demoSummary struct {
	Duration            string           `json:"duration"`
	Interrupted         bool             `json:"interrupted"`
	EventsProduced      int64            `json:"events_produced"`
	MessagesProduced    int64            `json:"messages_produced"`
	Consumed            int64            `json:"consumed"`
	Accepted            int64            `json:"accepted"`
	Stored              int64            `json:"stored"`
	StoredInClickHouse  uint64           `json:"stored_in_clickhouse"`
	Rejected            int64            `json:"rejected"`
	RejectedByReason    map[string]int64 `json:"rejected_by_reason"`
	RedactionViolations int64            `json:"redaction_violations"`
	Findings            map[string]int   `json:"findings"`
	FindingLatency      latencyStats     `json:"finding_latency"`
	Detection           eval.Result      `json:"detection"`
	ClickHouseURL       string           `json:"clickhouse_url"`
}

// latencyStats summarizes append-to-finding-stored latencies, in seconds.
type latencyStats struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_s"`
	P99     float64 `json:"p99_s"`
	Max     float64 `json:"max_s"`
}

func latencySummary(ds []time.Duration) latencyStats {
	if len(ds) == 0 {
		return latencyStats{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	rank := func(p float64) float64 {
		i := int(p*float64(len(ds))+0.999999) - 1 // nearest rank
		i = min(max(i, 0), len(ds)-1)
		return ds[i].Seconds()
	}
	return latencyStats{Samples: len(ds), P50: rank(0.50), P99: rank(0.99), Max: ds[len(ds)-1].Seconds()}
}

// statusView draws the live status: one redrawn screen on a terminal,
// a plain line every five seconds otherwise.
type statusView struct {
	out      io.Writer
	tty      bool
	chURL    string
	metrics  string
	duration time.Duration
	lastLine time.Duration
}

func (v *statusView) draw(elapsed time.Duration, p gen.ProduceProgress, s pipeline.Stats, findings map[string]int) {
	if !v.tty {
		if elapsed-v.lastLine < 5*time.Second {
			return
		}
		v.lastLine = elapsed
		fmt.Fprintf(v.out, "[%s] produced %d  consumed %d  stored %d  rejected %d  redaction violations %d  findings %s\n",
			elapsed.Round(time.Second), p.Events, s.Consumed, s.Stored, s.Rejected, s.RedactionViolations, kindCounts(findings))
		return
	}
	var b strings.Builder
	b.WriteString("\x1b[H\x1b[2J")
	fmt.Fprintf(&b, "tokenwatch demo — %s of %s   (Ctrl-C to stop early)\n\n", elapsed.Round(time.Second), v.duration)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(s.Stored) / elapsed.Seconds()
	}
	fmt.Fprintf(&b, "  produced   %10d events\n", p.Events)
	fmt.Fprintf(&b, "  consumed   %10d messages\n", s.Consumed)
	fmt.Fprintf(&b, "  stored     %10d events   (%.0f/s into ClickHouse)\n", s.Stored, rate)
	fmt.Fprintf(&b, "  rejected   %10d           %s\n", s.Rejected, reasonCounts(s.RejectedByReason))
	fmt.Fprintf(&b, "  redaction  %10d violations\n\n", s.RedactionViolations)
	b.WriteString("  findings\n")
	kinds := make([]string, 0, len(findings))
	for k := range findings {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	if len(kinds) == 0 {
		b.WriteString("    (none yet)\n")
	}
	for _, k := range kinds {
		fmt.Fprintf(&b, "    %-20s %d\n", k, findings[k])
	}
	fmt.Fprintf(&b, "\n  ClickHouse  %s   (curl '%s/?query=SELECT+count()+FROM+tokenwatch.events')\n", v.chURL, v.chURL)
	fmt.Fprintf(&b, "  /metrics    http://%s/metrics\n", v.metrics)
	_, _ = io.WriteString(v.out, b.String())
}

// joinCounts prints counts as "a=1 b=2" in name order; none is "" (or
// "none" for the findings line).
func joinCounts[V int | int64](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func kindCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	return joinCounts(m)
}

func reasonCounts(m map[string]int64) string { return joinCounts(m) }

func printSummary(w io.Writer, s demoSummary, res eval.Result) {
	fmt.Fprintf(w, "\ntokenwatch demo summary (%s%s)\n", s.Duration, map[bool]string{true: ", stopped early", false: ""}[s.Interrupted])
	fmt.Fprintf(w, "  events produced        %d (%d messages)\n", s.EventsProduced, s.MessagesProduced)
	fmt.Fprintf(w, "  messages consumed      %d\n", s.Consumed)
	fmt.Fprintf(w, "  events stored          %d (ClickHouse count: %d)\n", s.Stored, s.StoredInClickHouse)
	fmt.Fprintf(w, "  rejected               %d %s\n", s.Rejected, reasonCounts(s.RejectedByReason))
	fmt.Fprintf(w, "  redaction violations   %d\n", s.RedactionViolations)
	fmt.Fprintf(w, "  findings               %s\n", kindCounts(s.Findings))
	if s.FindingLatency.Samples > 0 {
		fmt.Fprintf(w, "  finding latency        p50 %.3fs  p99 %.3fs  max %.3fs  (%d samples; append to Kafka → stored in ClickHouse)\n",
			s.FindingLatency.P50, s.FindingLatency.P99, s.FindingLatency.Max, s.FindingLatency.Samples)
	}
	fmt.Fprintf(w, "\ndetection against the generator's ground truth:\n%s", res.String())
}
