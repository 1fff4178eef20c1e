package eval

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokenwatch/tokenwatch/finding"
)

// Why a finding counted as a false positive.
const (
	ReasonLookAlike = "look_alike" // it matched a look-alike: the detector fell for it
	ReasonDuplicate = "duplicate"  // it matched an attack another finding already reported
	ReasonUnmatched = "unmatched"  // it matched no truth entry at all
)

// Result is the score of one report against one truth file.
type Result struct {
	// Kinds has one row per finding kind, in finding.Kinds() order, then any
	// other kind a finding or truth entry named.
	Kinds []KindResult `json:"kinds"`
	// Total sums the rows; its precision, recall and latency are computed
	// over the sums, not averaged over kinds.
	Total KindResult `json:"total"`
	// Missed lists the attacks no finding matched.
	Missed []Truth `json:"missed"`
	// FalsePositives lists every finding that was not a true positive.
	FalsePositives []FalsePositive `json:"false_positives"`
}

// KindResult is the score for one kind.
type KindResult struct {
	Kind           finding.Kind `json:"kind"`
	Attacks        int          `json:"attacks"`     // truth entries that are attacks
	LookAlikes     int          `json:"look_alikes"` // truth entries that are look-alikes
	Findings       int          `json:"findings"`
	TruePositives  int          `json:"true_positives"`
	FalsePositives int          `json:"false_positives"`
	FalseNegatives int          `json:"false_negatives"`
	// The false positives split by reason.
	LookAlikeHits int `json:"look_alike_hits"`
	Duplicates    int `json:"duplicates"`
	Unmatched     int `json:"unmatched"`
	// Precision is TP/(TP+FP), 1 when there were no findings (nothing was
	// claimed, so nothing was wrong). Recall is TP/attacks, 1 when there were
	// no attacks (nothing to find, nothing missed).
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	Latency   Latency `json:"latency"`
}

// Latency is the detection latency of the true positives: the finding's
// detection time (see detectedAt) minus the truth entry's Start, floored at 0.
type Latency struct {
	Count      int     `json:"count"`
	P50Seconds float64 `json:"p50_s"`
	P99Seconds float64 `json:"p99_s"`
	MaxSeconds float64 `json:"max_s"`
}

// FalsePositive is one finding that did not count as a detection, with the
// truth entry it matched when it matched one.
type FalsePositive struct {
	FindingID string       `json:"finding_id"`
	Kind      finding.Kind `json:"kind"`
	Key       string       `json:"key"`
	Reason    string       `json:"reason"`
	Scenario  string       `json:"scenario,omitempty"`
}

// Evaluate scores findings against truth.
//
// A finding matches a truth entry of the same kind when at least one of the
// entry's identifying fields for that kind is non-empty and equal to the
// finding's field of the same name:
//
//	replay              token_id, session_id
//	refresh_reuse       family_id (session_id when the entry has no family)
//	refresh_anomaly     family_id; for an entry without a family (a client's
//	                    or subject's rate): client_id, subject
//	slow_revocation     token_id, session_id, family_id, subject
//	key_rotation_break  kid, service
//	clock_skew          service
//	audience_misuse     token_id; for an entry without a token (a service
//	                    accepting other audiences): service
//	any other kind      every id field
//
// Findings are taken in order of detection (then ID). Each picks the matching
// entry with the most equal fields; ties go to an entry not yet matched, then
// to an attack, then to the earliest Start. The first finding for an attack is
// a true positive; a later one for the same attack is a false positive
// (duplicate), because one incident must be one finding. A finding whose best
// match is a look-alike, or that matches nothing, is a false positive. An
// attack no finding matched is a false negative. Look-alikes are never
// counted as negatives to find; they only turn findings into false positives.
//
// Detection latency is the finding's DetectedAt (the event time at which the
// detector opened it; FirstSeen for findings that lack it) minus the entry's
// Start. A detection time before Start (a finding dated from earlier benign
// use of the same token) counts as latency 0.
func Evaluate(truth []Truth, findings []finding.Finding) Result {
	rows := map[finding.Kind]*KindResult{}
	row := func(k finding.Kind) *KindResult {
		r, ok := rows[k]
		if !ok {
			r = &KindResult{Kind: k}
			rows[k] = r
		}
		return r
	}
	for _, k := range finding.Kinds() {
		row(k)
	}
	for _, t := range truth {
		if t.Attack {
			row(t.Kind).Attacks++
		} else {
			row(t.Kind).LookAlikes++
		}
	}

	ordered := slices.Clone(findings)
	slices.SortStableFunc(ordered, func(a, b finding.Finding) int {
		return cmp.Or(detectedAt(a).Compare(detectedAt(b)), cmp.Compare(a.ID, b.ID))
	})

	var res Result
	matched := make([]bool, len(truth))
	latencies := map[finding.Kind][]time.Duration{}
	for _, f := range ordered {
		r := row(f.Kind)
		r.Findings++
		i := bestMatch(truth, matched, f)
		switch {
		case i < 0:
			r.Unmatched++
			res.FalsePositives = append(res.FalsePositives, falsePositive(f, ReasonUnmatched, ""))
		case !truth[i].Attack:
			r.LookAlikeHits++
			res.FalsePositives = append(res.FalsePositives, falsePositive(f, ReasonLookAlike, truth[i].Scenario))
		case matched[i]:
			r.Duplicates++
			res.FalsePositives = append(res.FalsePositives, falsePositive(f, ReasonDuplicate, truth[i].Scenario))
		default:
			matched[i] = true
			r.TruePositives++
			latencies[f.Kind] = append(latencies[f.Kind], max(0, detectedAt(f).Sub(truth[i].Start)))
		}
	}
	for i, t := range truth {
		if t.Attack && !matched[i] {
			row(t.Kind).FalseNegatives++
			res.Missed = append(res.Missed, t)
		}
	}

	var all []time.Duration
	res.Total.Kind = "total"
	for _, k := range kindOrder(rows) {
		r := rows[k]
		r.FalsePositives = r.LookAlikeHits + r.Duplicates + r.Unmatched
		r.Precision, r.Recall = ratios(r.TruePositives, r.FalsePositives, r.Attacks)
		r.Latency = summarize(latencies[k])
		all = append(all, latencies[k]...)
		res.Kinds = append(res.Kinds, *r)
		res.Total.add(r)
	}
	res.Total.Precision, res.Total.Recall = ratios(res.Total.TruePositives, res.Total.FalsePositives, res.Total.Attacks)
	res.Total.Latency = summarize(all)
	return res
}

// detectedAt is when f was detected: DetectedAt, or FirstSeen in reports
// written before findings carried it.
func detectedAt(f finding.Finding) time.Time {
	if !f.DetectedAt.IsZero() {
		return f.DetectedAt
	}
	return f.FirstSeen
}

// identifyingFields lists, for a truth entry, the fields a finding of the
// same kind is matched on (see Evaluate).
func identifyingFields(t Truth) []string {
	switch t.Kind {
	case finding.Replay:
		return []string{"token_id", "session_id"}
	case finding.RefreshReuse:
		if t.FamilyID == "" {
			return []string{"session_id"}
		}
		return []string{"family_id"}
	case finding.RefreshAnomaly:
		if t.FamilyID == "" {
			return []string{"client_id", "subject"}
		}
		return []string{"family_id"}
	case finding.SlowRevocation:
		return []string{"token_id", "session_id", "family_id", "subject"}
	case finding.KeyRotationBreak:
		return []string{"kid", "service"}
	case finding.ClockSkew:
		return []string{"service"}
	case finding.AudienceMisuse:
		if t.TokenID != "" {
			return []string{"token_id"} // one token tried across services
		}
		return []string{"service"} // a service accepting other audiences
	}
	return []string{"token_id", "session_id", "family_id", "subject", "client_id", "service", "kid"}
}

func truthField(t Truth, name string) string {
	switch name {
	case "token_id":
		return t.TokenID
	case "session_id":
		return t.SessionID
	case "family_id":
		return t.FamilyID
	case "subject":
		return t.Subject
	case "client_id":
		return t.ClientID
	case "service":
		return t.Service
	case "kid":
		return t.Kid
	}
	return ""
}

func findingField(f finding.Finding, name string) string {
	switch name {
	case "token_id":
		return f.TokenID
	case "session_id":
		return f.SessionID
	case "family_id":
		return f.FamilyID
	case "subject":
		return f.Subject
	case "client_id":
		return f.ClientID
	case "service":
		return f.Service
	case "kid":
		return f.Kid
	}
	return ""
}

// matchScore is how many identifying fields of t the finding f shares.
func matchScore(t Truth, f finding.Finding) int {
	if t.Kind != f.Kind {
		return 0
	}
	n := 0
	for _, name := range identifyingFields(t) {
		if v := truthField(t, name); v != "" && v == findingField(f, name) {
			n++
		}
	}
	return n
}

// bestMatch returns the index of the truth entry f matches best, or -1.
func bestMatch(truth []Truth, matched []bool, f finding.Finding) int {
	best, bestScore := -1, 0
	for i, t := range truth {
		s := matchScore(t, f)
		if s == 0 {
			continue
		}
		if best < 0 || s > bestScore || (s == bestScore && preferred(t, matched[i], truth[best], matched[best])) {
			best, bestScore = i, s
		}
	}
	return best
}

// preferred breaks a tie between two equally good matches: an entry not yet
// matched, then an attack, then the earlier start.
func preferred(a Truth, aMatched bool, b Truth, bMatched bool) bool {
	if aMatched != bMatched {
		return !aMatched
	}
	if a.Attack != b.Attack {
		return a.Attack
	}
	return a.Start.Before(b.Start)
}

func falsePositive(f finding.Finding, reason, scenario string) FalsePositive {
	return FalsePositive{FindingID: f.ID, Kind: f.Kind, Key: f.Key, Reason: reason, Scenario: scenario}
}

func (r *KindResult) add(o *KindResult) {
	r.Attacks += o.Attacks
	r.LookAlikes += o.LookAlikes
	r.Findings += o.Findings
	r.TruePositives += o.TruePositives
	r.FalsePositives += o.FalsePositives
	r.FalseNegatives += o.FalseNegatives
	r.LookAlikeHits += o.LookAlikeHits
	r.Duplicates += o.Duplicates
	r.Unmatched += o.Unmatched
}

func ratios(tp, fp, attacks int) (precision, recall float64) {
	precision, recall = 1, 1
	if tp+fp > 0 {
		precision = float64(tp) / float64(tp+fp)
	}
	if attacks > 0 {
		recall = float64(tp) / float64(attacks)
	}
	return precision, recall
}

// summarize computes nearest-rank percentiles: the p-quantile of n sorted
// values is the ceil(p·n)-th, so p99 of fewer than 100 values is the max.
func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(i, 0)].Seconds()
	}
	return Latency{Count: len(s), P50Seconds: rank(0.50), P99Seconds: rank(0.99), MaxSeconds: s[len(s)-1].Seconds()}
}

// kindOrder is finding.Kinds() first, then any other kind sorted by name.
func kindOrder(rows map[finding.Kind]*KindResult) []finding.Kind {
	order := finding.Kinds()
	var extra []finding.Kind
	for k := range rows {
		if !slices.Contains(order, k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	return append(order, extra...)
}

// String prints the result as a table, one row per kind and a total, then
// the missed attacks and the false positives.
func (r Result) String() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tattacks\tlook-alikes\tfindings\tTP\tFP\tFN\tlook-alike hits\tduplicates\tprecision\trecall\tlatency p50\tp99\tmax\t")
	for _, k := range append(slices.Clone(r.Kinds), r.Total) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.3f\t%.3f\t%s\t%s\t%s\t\n",
			k.Kind, k.Attacks, k.LookAlikes, k.Findings, k.TruePositives, k.FalsePositives, k.FalseNegatives,
			k.LookAlikeHits, k.Duplicates, k.Precision, k.Recall,
			seconds(k.Latency, k.Latency.P50Seconds), seconds(k.Latency, k.Latency.P99Seconds), seconds(k.Latency, k.Latency.MaxSeconds))
	}
	tw.Flush()
	for _, t := range r.Missed {
		fmt.Fprintf(&b, "missed %s (%s) starting %s%s\n", t.Kind, t.Scenario, t.Start.UTC().Format(time.RFC3339), describe(t))
	}
	for _, fp := range r.FalsePositives {
		fmt.Fprintf(&b, "false positive %s %s (%s", fp.Kind, fp.FindingID, fp.Reason)
		if fp.Scenario != "" {
			fmt.Fprintf(&b, " %s", fp.Scenario)
		}
		fmt.Fprintf(&b, ") key %s\n", fp.Key)
	}
	return b.String()
}

func seconds(l Latency, v float64) string {
	if l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fs", v)
}

func describe(t Truth) string {
	var b strings.Builder
	for _, name := range identifyingFields(t) {
		if v := truthField(t, name); v != "" {
			fmt.Fprintf(&b, " %s=%s", name, v)
		}
	}
	return b.String()
}

// MarshalJSON keeps the empty lists as [] so consumers need no null checks.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	p := plain(r)
	if p.Missed == nil {
		p.Missed = []Truth{}
	}
	if p.FalsePositives == nil {
		p.FalsePositives = []FalsePositive{}
	}
	return json.Marshal(p)
}
