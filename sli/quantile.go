package sli

import (
	"math"
	"slices"
)

// Percentile returns the p-th percentile (0 < p ≤ 100) of values by the
// nearest-rank method: the value at rank ceil(p/100 × n) of the sorted
// values. It sorts values in place. ok is false when values is empty.
//
// Nearest rank is used rather than interpolation because it always returns a
// value that was observed, which is what a responder expects when they look
// for "the p95 request".
func Percentile(values []float64, p float64) (v float64, ok bool) {
	if len(values) == 0 {
		return 0, false
	}
	if !slices.IsSorted(values) {
		slices.Sort(values)
	}
	return percentileSorted(values, p), true
}

// percentileSorted is Percentile on values already sorted ascending.
func percentileSorted(sorted []float64, p float64) float64 {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}
