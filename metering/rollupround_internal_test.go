package metering

import (
	"fmt"
	"testing"
	"time"
)

// TestRollupRoundsKeepWideEdgesApart: a window whose edges span more than
// maxEdgeHours (a yearly period that began before the roll-up) is counted
// in a round without the month windows, whose round keeps its PREWHERE on
// their few edge hours instead of reading the whole span.
func TestRollupRoundsKeepWideEdgesApart(t *testing.T) {
	since := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	meters := []Meter{{Slug: "calls", Aggregation: AggCount}}
	var rolled []rollupWindow
	for i := range 5 {
		from := since.Add(time.Duration(i)*time.Hour + 17*time.Minute)
		w := MeterWindow{Subject: fmt.Sprintf("s%d", i), Meters: meters, From: from, To: from.AddDate(0, 1, 0)}
		if i == 2 {
			w.From = w.To.AddDate(-1, 0, 0)
		}
		rw, ok := splitWindow(w, since)
		if !ok {
			t.Fatalf("window %d not served", i)
		}
		rolled = append(rolled, rw)
	}
	if rolled[2].edgeHours() <= maxEdgeHours || rolled[0].edgeHours() != 2 {
		t.Fatalf("edge hours %d and %d; want the yearly window's over %d, a month's 2", rolled[2].edgeHours(), rolled[0].edgeHours(), maxEdgeHours)
	}
	rounds := rollupRounds(rolled)
	if len(rounds) != 2 || len(rounds[0]) != 4 || len(rounds[1]) != 1 || rounds[1][0].subject != "s2" {
		t.Fatalf("rounds %v; want the four month windows, then the yearly one alone", rounds)
	}
	q := &rollupQuery{columns: map[string]int{}}
	if prewhere := q.bind(rounds[0]); prewhere == "1" {
		t.Errorf("the month windows' round reads every hour of its span: PREWHERE %s", prewhere)
	}
}
