// Package metering answers what was used, from ClickHouse: a Reader reads
// a subscription's or a key's usage from the roll-up tables (reader.go and
// usage.go, behind the control plane's usage endpoints) and a
// subscription's billable totals from usage_events (totals.go, what veil
// usage prints); queries.go holds the analyst queries, documented with
// measured latencies in docs/analyst-sql.md. It is pure queries over a
// connection the caller opens, with no HTTP. rating.go is the rating
// engine: what a charge of a plan (per_unit, graduated, volume, package)
// costs for a metered quantity, exactly, rounded once per line to the
// currency's minor unit (currency.go); quote.go prices a plan's period and
// promotion.go applies promotions to that quote, in the order of
// application its comment fixes (exclusive or stackable; free units before
// rating; amounts, then percentages; never below zero). Invoices will join
// it; a billing period's bounds stay internal/enforcement's, the arithmetic
// the gateway counts quotas by, which billing will call.
//
// meter.go defines a meter: which billable events it selects and what each
// adds (Meter.Contribution, Meter.KeyValue), the fold the processors keep
// per period in Redis. meterquery.go computes the same values from
// usage_events for any window (MeterTotals; MeterTotalsUpTo for the rows
// below the processors' watermarks; MeterTotalsBatch for many
// subscriptions, grouped by subject), in one query:
//
//	SELECT subject,
//	    toDecimal128(countIf(has(@m0_methods, method)), 0),
//	    sumIf(units, (match(path, @m1_r0) OR match(path, @m1_r1))),
//	    toDecimal128(maxIf(latency_ms, has(@m2_classes, intDiv(status, 100))), 0),
//	    sumIf(toDecimal128(response_bytes, 0), 1),
//	    toDecimal128(uniqExactIf(key_id, key_id != '' AND 1), 0)
//	FROM usage_events
//	WHERE subject = @subject
//	  AND time >= toDateTime(@from)
//	  AND time < toDateTime(@to)
//	  AND refusal = ''
//	  AND status < 500
//	GROUP BY subject
//
// Every value is exact (decimals, uniqExact) and every filter value a
// bound parameter; a route pattern becomes an anchored RE2 regexp
// (RouteRegexp) that matches what enforcement.MatchRoute matches.
package metering
