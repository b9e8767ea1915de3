package processors

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/usage"
)

// benchMeters are three meters, one of them a set: calls of GET with a
// 2xx, units under /v1/, distinct keys.
const benchMeters = `[` +
	`{"slug":"calls","aggregation":"count","field":"","filter":{"methods":["GET"],"routes":[],"status_classes":["2xx"]},"quota":"1000000000","quota_hard":false},` +
	`{"slug":"units","aggregation":"sum","field":"units","filter":{"methods":[],"routes":["/v1/*"],"status_classes":[]},"quota_hard":false},` +
	`{"slug":"keys","aggregation":"unique_count","field":"key_id","filter":{"methods":[],"routes":[],"status_classes":[]},"quota_hard":false}]`

// BenchmarkApplyMeters measures the Redis sink on the hot path: one batch
// of 1,000 events for 10 subscriptions (10 keys each), counted with no
// meter and with three. Each iteration is a new batch (later offsets), so
// every one is counted.
func BenchmarkApplyMeters(b *testing.B) {
	for _, bc := range []struct{ name, meters string }{{"none", "[]"}, {"3-meters", benchMeters}} {
		b.Run(bc.name, func(b *testing.B) {
			client, _ := testenv.RedisDB(b)
			at := time.Now().UTC()
			start := at.Add(-time.Hour).Truncate(time.Second)
			const subjects, perBatch = 10, 1000
			for s := range subjects {
				putRecord(b, client, "sub"+strconv.Itoa(s), start, start.AddDate(0, 1, 0), "meters", bc.meters)
			}
			events := make([]usage.Event, perBatch)
			for i := range events {
				events[i] = usage.Event{Time: at, Data: usage.Data{APIID: "api_1", KeyID: "key_" + strconv.Itoa(i%100), Method: "GET",
					Path: "/v1/forecast", Status: 200, Units: decimal.New(int64(i%7+1), -1)}}
			}
			sink := newRedisSink(client)
			items := make([]item, perBatch)
			b.ReportAllocs()
			b.ResetTimer()
			for n := range b.N {
				for i := range items {
					ev := &events[i]
					items[i] = item{subject: "sub" + strconv.Itoa(i%subjects), keyID: ev.Data.KeyID, partition: 0,
						offset: int64(n*perBatch + i), time: at, unitsMicro: ev.Data.Units.Shift(6).IntPart(), event: ev}
				}
				if _, _, err := sink.apply(b.Context(), items); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perBatch), "ns/event")
		})
	}
}

// BenchmarkMatchWorstCase measures the most one record's meters cost an
// event: enforcement.MaxMeters meters whose routes hold together the
// bytes an API's meters may (enforcement.MaxAPIMeterRoutesBytes), every
// pattern sharing all but its last segment with the event's path, so that
// each is walked to its end and fails. Two spreads of those bytes: in
// patterns as long as they may be (512 bytes, over the first meters; the
// others select another method), and one pattern in every meter, so that
// each meter checks the path too. The record is decoded once, as the
// processors' cache does.
func BenchmarkMatchWorstCase(b *testing.B) {
	prefix := strings.Repeat("/a", 250)
	long := enforcement.MaxAPIMeterRoutesBytes / enforcement.MaxMeterRouteBytes
	for _, c := range []struct {
		name string
		// size is the bytes of meter i's pattern; 0 for none.
		size func(i int) int
	}{
		{"long patterns", func(i int) int { return min(1, max(0, long-i)) * enforcement.MaxMeterRouteBytes }},
		{"one pattern a meter", func(int) int { return enforcement.MaxAPIMeterRoutesBytes / enforcement.MaxMeters }},
	} {
		b.Run(c.name, func(b *testing.B) {
			var specs []string
			for i := range enforcement.MaxMeters {
				filter := `"methods":["POST"],"routes":[]`
				if n := c.size(i); n > 0 {
					r := fmt.Sprintf("%s/m%02d", prefix[:2*min(250, (n-8)/2)], i)
					filter = `"methods":[],"routes":[` + strconv.Quote(r+strings.Repeat("x", n-len(r))) + `]`
				}
				specs = append(specs, fmt.Sprintf(`{"slug":"m%02d","aggregation":"count","field":"","filter":{%s,"status_classes":[]},"quota_hard":false}`, i, filter))
			}
			cache := meterCache{}
			meters := cache.meters(&enforcement.RecordedPeriod{Meters: "[" + strings.Join(specs, ",") + "]"})
			if len(meters) != enforcement.MaxMeters {
				b.Fatalf("decoded %d meters; want %d", len(meters), enforcement.MaxMeters)
			}
			e := &usage.Event{Data: usage.Data{Method: "GET", Path: prefix + "/zz", Status: 200}}
			b.ReportAllocs()
			for b.Loop() {
				for _, m := range meters {
					if _, ok := m.Contribution(e); ok {
						b.Fatal("a meter counted the event")
					}
				}
			}
		})
	}
}
