package metering_test

import (
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
)

// providerBenchEvents fills usage_events (and so the roll-ups by API)
// server-side: 2,700,000 calls of one API over the 30 days from
// benchStart, about the busiest API of the 10M dataset in
// docs/analyst-sql.md, from 400 subscriptions, on 20 routes, with the
// statuses and latencies of benchEvents.
const providerBenchEvents = `INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
    status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)
SELECT
    toString(number), '/gw', 'veil.api.request', concat('sub_', toString(cityHash64(number, 7) % 400)),
    toDateTime(@start) + intDiv(number * 2592000, 2700000), 'api_0', 'key',
    ['GET', 'GET', 'GET', 'POST', 'PUT'][cityHash64(number, 1) % 5 + 1],
    concat('/v1/r', toString(cityHash64(number, 2) % 20)), '/v1/x',
    toUInt16([200, 200, 200, 200, 200, 200, 200, 200, 201, 204, 200, 200, 400, 404, 429, 200, 200, 200, 200, 500][cityHash64(number, 3) % 20 + 1]),
    toUInt32(5 + (-60 * log(1 - (cityHash64(number, 4) % 10000) / 10000.0))),
    toUInt64(100), toUInt64(1000), toDecimal64(1, 6),
    now(), toInt32(0), toInt64(number)
FROM numbers(2700000)`

// BenchmarkProviderUsage reads 30 days of the busiest API in UTC from
// midnight to midnight (the day roll-up), with ragged ends (hours and
// minutes), in Europe/London at UTC+0 (the day roll-up), in New York
// (hours) and in Kolkata (hours, and minutes for the half hour on each
// side of every midnight), and Kolkata over 400 days. It reports the
// median and 99th percentile of its runs.
//
//	go test -run '^$' -bench ProviderUsage -benchtime 100x ./metering/
func BenchmarkProviderUsage(b *testing.B) {
	conn, _, _ := testenv.ClickHouseDB(b)
	if err := conn.Exec(b.Context(), providerBenchEvents, clickhouse.Named("start", benchStart)); err != nil {
		b.Fatal(err)
	}
	end := benchStart.AddDate(0, 0, 30)
	for _, bc := range []struct {
		name, zone string
		from, to   time.Time
	}{
		{"utc", "UTC", benchStart, end},
		{"utc_ragged", "UTC", benchStart.Add(21 * time.Minute), end.Add(-73 * time.Minute)},
		{"london", "Europe/London", benchStart, end},
		{"new_york", "America/New_York", benchStart.Add(4 * time.Hour), end.Add(5 * time.Hour)},
		{"kolkata", "Asia/Kolkata", benchStart.Add(-330 * time.Minute), end.Add(-330 * time.Minute)},
		// The longest window: 400 days of Kolkata's pieces, about 800
		// ranges (ClickHouse's analysis of them, more than the rows).
		{"kolkata_400d", "Asia/Kolkata", end.Add(-330*time.Minute).AddDate(0, 0, -400), end.Add(-330 * time.Minute)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			q := metering.ProviderQuery{APIs: []string{"api_0"}, From: bc.from, To: bc.to, Zone: bc.zone, Top: 10}
			var took []time.Duration
			for b.Loop() {
				start := time.Now()
				rep, err := metering.ProviderUsage(b.Context(), conn, q)
				if err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
				if rep.Total.Calls == 0 {
					b.Fatal("no calls")
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
