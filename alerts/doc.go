// Package alerts turns the SLO spec into Prometheus rule files: recording
// rules for every SLO's error ratio, multiwindow multi-burn-rate alerts on
// them, and the security and pipeline-health alerts on tokenwatch's own
// metrics. Like Sloth, the generator is a pure function of the spec: Rules
// does no I/O, so the same spec always gives the same files, which the
// golden tests and the committed deploy/prometheus/rules pin down. Writing
// the files (RuleFiles.WriteDir) is the only edge.
//
// The names it produces are a contract: dashboards read the recording rules
// (tokenwatch:slo_error_ratio:rate<W>, docs/architecture.md), Alertmanager
// routes on the severity and team labels (deploy/alertmanager), and every
// alert's runbook_url names a page in docs/runbooks. The Alertmanager pusher
// for individual findings lives in the alertmanager sub-package.
package alerts
