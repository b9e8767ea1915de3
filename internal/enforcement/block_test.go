package enforcement_test

import (
	"strconv"
	"testing"

	"github.com/veil-platform/veil/internal/enforcement"
)

func requests(n int64) *int64 { return &n }

func TestLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		planQuota   *int64
		adjustments int64
		want        int64
	}{
		{nil, 0, -1},
		{nil, 500, -1},
		{requests(0), 0, 0},
		{requests(1000), 0, 1000},
		{requests(1000), 250, 1250},
	}
	for _, tt := range tests {
		if got := enforcement.Limit(tt.planQuota, tt.adjustments); got != tt.want {
			t.Errorf("Limit(%v, %d) = %d; want %d", fmtQuota(tt.planQuota), tt.adjustments, got, tt.want)
		}
	}
}

func fmtQuota(q *int64) string {
	if q == nil {
		return "nil"
	}
	return strconv.FormatInt(*q, 10)
}

// TestThresholdAt holds the Go threshold rule to its Lua twin's
// ceil(limit*pct/100) where doubles are exact, and checks it does not
// overflow near the top of int64.
func TestThresholdAt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		limit int64
		pct   int
		want  int64
	}{
		{0, 80, 0}, {1, 80, 1}, {10, 80, 8}, {10, 90, 9}, {10, 100, 10}, {15, 80, 12}, {7, 90, 7},
		{1<<63 - 1, 100, 1<<63 - 1},
	} {
		if got := enforcement.ThresholdAt(tc.limit, tc.pct); got != tc.want {
			t.Errorf("ThresholdAt(%d, %d) = %d; want %d", tc.limit, tc.pct, got, tc.want)
		}
	}
	if got := enforcement.Crossed(10, 9); len(got) != 2 || got[0] != 80 || got[1] != 90 {
		t.Errorf("Crossed(10, 9) = %v; want [80 90]", got)
	}
	if got := enforcement.Crossed(-1, 9); len(got) != 0 {
		t.Errorf("Crossed(-1, 9) = %v; want none", got)
	}
}
