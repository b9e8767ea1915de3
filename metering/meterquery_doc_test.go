package metering

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestDocShowsTheMeterQuery: the query in the package doc (doc.go) is the
// one MeterTotals sends for its five meters, to the character.
func TestDocShowsTheMeterQuery(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	q, err := planMeterQuery([]MeterWindow{{Subject: "sub_1", From: at, To: at.AddDate(0, 1, 0), Meters: []Meter{
		{Slug: "calls", Aggregation: AggCount, Filter: Filter{Methods: []string{"GET"}}},
		{Slug: "units", Aggregation: AggSum, Field: FieldUnits, Filter: Filter{Routes: []string{"/users/{id}", "/files/*"}}},
		{Slug: "slowest", Aggregation: AggMax, Field: FieldLatencyMS, Filter: Filter{StatusClasses: []string{"2xx"}}},
		{Slug: "egress", Aggregation: AggSum, Field: FieldResponseBytes},
		{Slug: "keys", Aggregation: AggUniqueCount, Field: FieldKeyID},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var shown []string
	for _, line := range strings.Split(string(doc), "\n") {
		if code, ok := strings.CutPrefix(line, "//\t"); ok {
			shown = append(shown, code)
		}
	}
	if got := strings.Join(shown, "\n"); got != q.text {
		t.Errorf("doc.go shows\n%s\n\nMeterTotals sends\n%s", got, q.text)
	}
}
