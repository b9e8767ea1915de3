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
// rating; amounts, then percentages; never below zero). Meters and
// invoices will join it; a billing period's bounds stay internal/enforcement's, the
// arithmetic the gateway counts quotas by, which billing will call.
package metering
