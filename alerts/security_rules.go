package alerts

import (
	"fmt"
	"strconv"

	"github.com/tokenwatch/tokenwatch/finding"
)

// Thresholds of the security and pipeline alerts. They are judgement calls,
// kept together so a reader sees the whole policy and a runbook can quote it.
const (
	// findingsOpenedWindow is how far back the backstop looks for new
	// findings: longer than a few scrape and push intervals, so a pushed
	// alert that did not arrive is noticed, short enough to resolve soon.
	findingsOpenedWindow = "15m"
	// findingsBacklog open findings of one kind is more than responders
	// work through: a campaign, or a detector misfiring.
	findingsBacklog    = 20
	findingsBacklogFor = "30m"
	// consumerLagEvents is how far behind (events) the consumer may be
	// while lag is growing before detections are late enough to matter.
	consumerLagEvents = 10000
	// rejectedRatio of consumed events rejected as undecodable.
	rejectedRatio = 0.01
)

func securityRuleFile(opts Options) RuleFile {
	var rules []Rule
	for _, k := range finding.Kinds() {
		rules = append(rules, findingsOpenedRule(k, opts))
	}
	for _, k := range finding.Kinds() {
		rules = append(rules, findingsBacklogRule(k, opts))
	}
	rules = append(rules, Rule{
		Alert: "TokenRedactionViolation",
		Expr:  "sum by (emitter) (increase(tokenwatch_redaction_violations_total[10m])) > 0",
		Labels: map[string]string{
			"severity": SeverityPage,
			"team":     "security",
		},
		Annotations: map[string]string{
			"summary": "{{ $labels.emitter }} is sending raw credentials in auth events",
			"description": "tokenwatch found a raw credential (a JWT, a Bearer or Basic credential, or an operator pattern) in events " +
				"from emitter {{ $labels.emitter }} in the last 10 minutes. tokenwatch replaced it with a keyed hash before storage, " +
				"but the raw value sits in the Kafka topic for its retention: treat those credentials as exposed.",
			"runbook_url": RunbookURL(opts.RunbookBaseURL, "TokenRedactionViolation"),
		},
	})
	return RuleFile{Groups: []RuleGroup{{Name: "tokenwatch-security", Rules: rules}}}
}

func findingsOpenedRule(k finding.Kind, opts Options) Rule {
	pushed := FindingAlertName(k)
	return Rule{
		Alert: FindingsOpenedAlertName(k),
		Expr: fmt.Sprintf(`sum by (kind, severity, service) (increase(tokenwatch_findings_total{kind=%q, severity=~"page|ticket"}[%s])) > 0`,
			string(k), findingsOpenedWindow),
		Labels: map[string]string{
			// The finding's own severity: a backstop for a page is a page.
			"severity": "{{ $labels.severity }}",
			"team":     k.Team(),
		},
		Annotations: map[string]string{
			"summary": fmt.Sprintf("%s findings opened on {{ $labels.service }}", k),
			"description": fmt.Sprintf("tokenwatch opened %s %s findings on {{ $labels.service }} in the last %s: %s. "+
				"Each finding is also pushed to Alertmanager as %s with its finding_id; this rule is the backstop when that "+
				"push does not arrive, and Alertmanager inhibits it while the pushed alert fires.",
				"{{ $labels.severity }}", k, findingsOpenedWindow, KindMeaning(k), pushed),
			"runbook_url": RunbookURL(opts.RunbookBaseURL, pushed),
		},
	}
}

func findingsBacklogRule(k finding.Kind, opts Options) Rule {
	return Rule{
		Alert: "TokenFindingsBacklog",
		Expr: fmt.Sprintf(`sum by (kind, severity) (tokenwatch_findings_open{kind=%q, severity=~"page|ticket"}) > %d`,
			string(k), findingsBacklog),
		For: findingsBacklogFor,
		Labels: map[string]string{
			"severity": SeverityTicket,
			"team":     k.Team(),
			// kind is on the series already; stating it keeps the six
			// rules of this alert distinct (promtool lints duplicates).
			"kind": string(k),
		},
		Annotations: map[string]string{
			"summary": "more than " + strconv.Itoa(findingsBacklog) + " {{ $labels.severity }} {{ $labels.kind }} findings open",
			"description": fmt.Sprintf("More than %d %s findings of severity {{ $labels.severity }} have been open for %s: "+
				"either a campaign is under way or the detector is misfiring on a look-alike.", findingsBacklog, k, findingsBacklogFor),
			"runbook_url": RunbookURL(opts.RunbookBaseURL, "TokenFindingsBacklog"),
		},
	}
}

func pipelineRuleFile(opts Options) RuleFile {
	platform := func(sev string) map[string]string { return map[string]string{"severity": sev, "team": "platform"} }
	rb := func(name string) string { return RunbookURL(opts.RunbookBaseURL, name) }
	up := fmt.Sprintf("up{job=%q}", opts.Job)
	rules := []Rule{
		{
			Alert:  "TokenwatchDown",
			Expr:   fmt.Sprintf("%s == 0\nor\nabsent(%s)", up, up),
			For:    "5m",
			Labels: platform(SeverityPage),
			Annotations: map[string]string{
				"summary": "tokenwatch is down or not scraped",
				"description": fmt.Sprintf("Prometheus has not scraped tokenwatch (job %s, instance {{ $labels.instance }}) for 5 minutes. "+
					"While it is down no SLIs are exported, no token attack is detected and no finding is pushed.", opts.Job),
				"runbook_url": rb("TokenwatchDown"),
			},
		},
		{
			Alert:  "TokenwatchNotConsuming",
			Expr:   "max by (instance, group) (tokenwatch_consumer_connected) == 0",
			For:    "5m",
			Labels: platform(SeverityPage),
			Annotations: map[string]string{
				"summary": "tokenwatch on {{ $labels.instance }} is not joined to consumer group {{ $labels.group }}",
				"description": "tokenwatch on {{ $labels.instance }} has not been joined to its consumer group {{ $labels.group }} for 5 minutes " +
					"(wrong brokers, an unreachable cluster, or a group that keeps rebalancing): it reads nothing, so SLIs and detections stop while it looks up.",
				"runbook_url": rb("TokenwatchNotConsuming"),
			},
		},
		{
			Alert: "TokenwatchConsumerLagGrowing",
			Expr: fmt.Sprintf("sum by (topic) (tokenwatch_consumer_lag) > %d\nand\nsum by (topic) (delta(tokenwatch_consumer_lag[15m])) > 0",
				consumerLagEvents),
			For:    "15m",
			Labels: platform(SeverityTicket),
			Annotations: map[string]string{
				"summary": "tokenwatch is falling behind on {{ $labels.topic }}",
				"description": fmt.Sprintf("The consumer is more than %d events behind on topic {{ $labels.topic }} and the lag grew "+
					"over the last 15 minutes: SLIs and detections are late by that much.", consumerLagEvents),
				"runbook_url": rb("TokenwatchConsumerLagGrowing"),
			},
		},
		{
			Alert: "TokenwatchEventsRejected",
			Expr: fmt.Sprintf("sum without (topic, reason) (rate(tokenwatch_events_rejected_total[10m]))\n/\n"+
				"sum without (topic) (rate(tokenwatch_events_decoded_total[10m]))\n> %s", num(rejectedRatio)),
			For:    "10m",
			Labels: platform(SeverityTicket),
			Annotations: map[string]string{
				"summary": "tokenwatch rejects more than " + pct(rejectedRatio) + " of events on {{ $labels.instance }}",
				"description": "More than " + pct(rejectedRatio) + " of consumed events failed to decode over the last 10 minutes. " +
					"Rejected events count in no SLI and no detector: an emitter changed its format or sends to the wrong topic.",
				"runbook_url": rb("TokenwatchEventsRejected"),
			},
		},
		{
			Alert:  "TokenwatchClickHouseErrors",
			Expr:   "sum by (job, instance, op) (increase(tokenwatch_clickhouse_errors_total[5m])) > 0",
			For:    "10m",
			Labels: platform(SeverityTicket),
			Annotations: map[string]string{
				"summary": "ClickHouse {{ $labels.op }} keeps failing on {{ $labels.instance }}",
				"description": "ClickHouse {{ $labels.op }} operations have failed in every 5-minute window for 10 minutes. " +
					"Batches are retried and offsets are not committed until stored, so the consumer lag grows and " +
					"dashboards that read ClickHouse go stale.",
				"runbook_url": rb("TokenwatchClickHouseErrors"),
			},
		},
		{
			Alert: "TokenwatchAlertmanagerPushFailing",
			Expr: `sum by (job, instance) (increase(tokenwatch_alertmanager_pushes_total{result="error"}[10m])) > 0` +
				"\nunless\n" +
				`sum by (job, instance) (increase(tokenwatch_alertmanager_pushes_total{result="success"}[10m])) > 0`,
			For:    "10m",
			Labels: platform(SeverityTicket),
			Annotations: map[string]string{
				"summary": "tokenwatch cannot push findings to Alertmanager from {{ $labels.instance }}",
				"description": "Every push of findings to Alertmanager failed for 10 minutes. Findings are still stored and the " +
					"*FindingsOpened backstop rules still fire, but they carry no finding_id.",
				"runbook_url": rb("TokenwatchAlertmanagerPushFailing"),
			},
		},
	}
	return RuleFile{Groups: []RuleGroup{{Name: "tokenwatch-pipeline", Rules: rules}}}
}
