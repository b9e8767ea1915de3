package metering_test

import (
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
)

// benchEvents fills usage_events (and so the roll-ups) server-side:
// 1,000,000 events over the 30 days from benchStart, five subscriptions
// (sub_0 … sub_4) of 200,000 each, about the largest subscription of the
// 10M dataset in docs/analyst-sql.md; 3 keys each, 20 endpoints, 8% of
// statuses at 400 or above (1% 5xx), latency 5 ms plus an exponential of
// 60 ms mean, 10% of units fractional.
const benchEvents = `INSERT INTO usage_events (id, source, type, subject, time, api_id, key_id, method, route, path,
    status, latency_ms, request_bytes, response_bytes, units, ingested_at, kafka_partition, kafka_offset)
SELECT
    toString(number), '/gw', 'veil.api.request', concat('sub_', toString(number % 5)),
    toDateTime(@start) + intDiv(number * 2592000, 1000000), 'api_0', concat('key_', toString(number % 5), '_', toString(cityHash64(number, 0) % 3)),
    ['GET', 'GET', 'GET', 'POST', 'PUT'][cityHash64(number, 1) % 5 + 1],
    concat('/v1/r', toString(cityHash64(number, 2) % 20)), '/v1/x',
    toUInt16([200, 200, 200, 200, 200, 200, 200, 200, 201, 204, 200, 200, 400, 404, 429, 200, 200, 200, 200, 500][cityHash64(number, 3) % 20 + 1]),
    toUInt32(5 + (-60 * log(1 - (cityHash64(number, 4) % 10000) / 10000.0))),
    toUInt64(100), toUInt64(1000),
    if(cityHash64(number, 5) % 10 = 0, toDecimal64((cityHash64(number, 6) % 5000000) / 1000000.0, 6), toDecimal64(1, 6)),
    now(), toInt32(0), toInt64(number)
FROM numbers(1000000)`

var benchStart = time.Date(2026, 10, 27, 0, 0, 0, 0, time.UTC)

// BenchmarkAnalytics reads 30 days of one subscription's analytics in
// UTC, New York and Kolkata, with a key filter and with ragged window
// ends, as usage_events answers a window up to a month; and the UTC and
// Kolkata windows again from the roll-ups' pieces (the day roll-up;
// hours and the minutes around Kolkata's half-hour midnights), as a
// longer window is read; and 400 Kolkata days (the longest window, its
// roll-ups read through one range and a set of hours each). It reports
// the median and 99th percentile of its runs.
//
//	go test -run '^$' -bench Analytics -benchtime 200x ./metering/
func BenchmarkAnalytics(b *testing.B) {
	conn, _, _ := testenv.ClickHouseDB(b)
	if err := conn.Exec(b.Context(), benchEvents, clickhouse.Named("start", benchStart)); err != nil {
		b.Fatal(err)
	}
	r := metering.NewReader(conn)
	for _, bc := range []struct {
		name, zone, key string
		from, to        time.Time
		rollups         bool
	}{
		{"utc", "UTC", "", benchStart, benchStart.AddDate(0, 0, 30), false},
		{"new_york", "America/New_York", "", benchStart.Add(4 * time.Hour), benchStart.AddDate(0, 0, 30).Add(5 * time.Hour), false},
		{"kolkata", "Asia/Kolkata", "", benchStart.Add(-330 * time.Minute), benchStart.AddDate(0, 0, 30).Add(-330 * time.Minute), false},
		{"kolkata_key", "Asia/Kolkata", "key_0_1", benchStart.Add(-330 * time.Minute), benchStart.AddDate(0, 0, 30).Add(-330 * time.Minute), false},
		{"ragged", "Asia/Kathmandu", "", benchStart.Add(1234 * time.Second), benchStart.AddDate(0, 0, 30).Add(-4321 * time.Second), false},
		// The same windows read as a longer one would be: from the
		// roll-ups' pieces.
		{"utc_rollups", "UTC", "", benchStart, benchStart.AddDate(0, 0, 30), true},
		{"kolkata_rollups", "Asia/Kolkata", "", benchStart.Add(-330 * time.Minute), benchStart.AddDate(0, 0, 30).Add(-330 * time.Minute), true},
		// The longest window in a half-hour zone: a roll-up range and a
		// set of hours per table, not hundreds of ranges.
		{"kolkata_400_days", "Asia/Kolkata", "", benchStart.AddDate(0, 0, 30).Add(-330*time.Minute).AddDate(0, 0, -400), benchStart.AddDate(0, 0, 30).Add(-330 * time.Minute), false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.rollups {
				defer metering.SetRawAnalyticsWindow(time.Hour)()
			}
			loc, err := time.LoadLocation(bc.zone)
			if err != nil {
				b.Fatal(err)
			}
			q := metering.AnalyticsQuery{Subject: "sub_0", KeyID: bc.key, From: bc.from, To: bc.to, DayStarts: metering.DayStarts(bc.from, bc.to, loc)}
			var took []time.Duration
			for b.Loop() {
				start := time.Now()
				a, err := r.Analytics(b.Context(), q)
				if err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
				if a.Total.Calls == 0 {
					b.Fatal("no calls")
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
