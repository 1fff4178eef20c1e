package alerts

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/tokenwatch/tokenwatch/sli"
	"github.com/tokenwatch/tokenwatch/slo"
)

// DefaultBuckets are the histogram bucket boundaries (seconds) that sli
// exports, per threshold SLI, taken from sli so the two cannot disagree. A
// threshold SLO is computed from the bucket at its threshold, so the
// threshold must be one of them.
func DefaultBuckets() map[string][]float64 {
	return map[string][]float64{
		slo.SLIValidationLatency:     slices.Clone(sli.LatencyBucketsSeconds),
		slo.SLIRevocationPropagation: slices.Clone(sli.PropagationBucketsSeconds),
	}
}

// checkThreshold refuses a threshold that is not a bucket boundary: the
// error ratio would silently be computed at a different threshold.
func checkThreshold(o *slo.SLO, buckets map[string][]float64) error {
	bs := buckets[o.SLI]
	for _, b := range bs {
		if b == o.ThresholdSeconds {
			return nil
		}
	}
	names := make([]string, len(bs))
	for i, b := range bs {
		names[i] = strconv.FormatFloat(b, 'g', -1, 64)
	}
	return fmt.Errorf("slo %s: threshold_seconds %v is not a bucket boundary of the %s histogram (want one of %s)",
		o.Name, o.ThresholdSeconds, o.SLI, strings.Join(names, ", "))
}

// leMatcher selects the bucket at threshold t. The `le` label's text
// depends on who wrote it: client_golang's text format writes 60 as "60",
// OpenMetrics and Prometheus 3 (which normalises le) write "60.0". Matching
// both keeps the rules right on either, and a target only ever exposes one.
func leMatcher(t float64) string {
	plain := strconv.FormatFloat(t, 'g', -1, 64)
	forms := []string{plain}
	if t == math.Trunc(t) && !strings.ContainsAny(plain, "e.") {
		forms = append(forms, plain+".0")
	}
	if len(forms) == 1 {
		return fmt.Sprintf(`le=%q`, plain)
	}
	quoted := make([]string, len(forms))
	for i, f := range forms {
		quoted[i] = regexp.QuoteMeta(f)
	}
	return fmt.Sprintf(`le=~%q`, strings.Join(quoted, "|"))
}
