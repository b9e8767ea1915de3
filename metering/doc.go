// Package metering answers what was used, from ClickHouse: a Reader reads
// a subscription's or a key's usage from the roll-up tables (reader.go and
// usage.go, behind the control plane's usage endpoints) and a
// subscription's billable totals from usage_events (totals.go, what veil
// usage prints); queries.go holds the analyst queries, documented with
// measured latencies in docs/analyst-sql.md. analytics_consumer.go answers
// a subscription's analytics by day of any time zone, by route and status
// class in one query (Analytics; DayStarts cuts the days), and export.go
// streams raw usage rows (Export). It is pure queries over a
// connection the caller opens, with no HTTP. rating.go is the rating
// engine: what a charge of a plan (per_unit, graduated, volume, package)
// costs for a metered quantity, exactly, rounded once per line to the
// currency's minor unit (currency.go); quote.go prices a plan's period and
// promotion.go applies promotions to that quote, in the order of
// application its comment fixes (exclusive or stackable; free units before
// rating; amounts, then percentages; never below zero).
//
// Billing: invoice.go computes a billing period's invoice from what it
// cites alone (BuildInvoice), with no I/O, and Explain recomputes a stored
// invoice line by line. The base fee of the period's first plan version in
// full; at each change of version a proration credit of the old fee and a
// charge of the new one for the time left, by the exact fraction of the
// period (never rounded itself); each plan-version segment's usage rated
// by its own version on top of what the period used before it,
// rate(before + q) − rate(before), so that included units and tiers are
// the period's and changing plans back and forth grants nothing;
// promotions applied as a quote's, by one applier (free units are the
// period's first units); adjustments priced on top of what their period
// billed; tax
// exclusive, inclusive (stated, not added) or reverse-charged (the legal
// mention); then the customer's credit applied up to the total, or a
// negative total turned into credit issued, so that the amount due, the
// sum of the lines, is never below zero. A trial period charges nothing;
// a trial that ends inside a period charges its base fee from its end,
// prorated.
// Every line is rounded once to the currency's minor unit, half away from
// zero. The file's comment gives each rule in full. A billing period's
// bounds stay internal/enforcement's, the arithmetic the gateway counts
// quotas by.
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
//	    toDecimal128(least(uniqExactIf(key_id, key_id != '' AND 1), 100000), 0)
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
//
// Projections: forecast.go projects a meter to its period's end (Project,
// no I/O) from its daily usage over up to the last 28 days, which
// forecastseries.go reads (MeterSeries; MeterTotalsAt, a window's totals
// at many instants in one query, for costs by day). The method is robust
// to bursts: weekday factors once two weeks are known, a Theil–Sen line
// (medians of pairwise slopes and of intercepts) through the
// deseasonalized days, an 80 % range from a day's noise about the line
// and the errors of its level, slope and weekday factors, added up over
// the days ahead; with less than a day of history, the pace so far. A max or unique_count meter projects what it
// has so far. forecast.go's comment gives the rules in full.
//
// Payments: payment.go declares PaymentProvider, what billing collects
// finalized invoices through: a provider's customer with the billing
// profile, a payment method set up for off-session use (its client secret
// goes to the portal only), Collect of an invoice's amount due in integer
// minor units (MinorUnits refuses an amount that is not whole in them),
// PaymentStatus for reconciliation, CancelPayment, full or partial
// Refund, and ParseWebhook, which verifies a delivery and normalizes it
// (WebhookEvent; a type of no use is WebhookIgnored). Every create takes
// an idempotency key the caller derives from the invoice and attempt and
// commits first, so that a retry never charges twice; a declined card is
// a failed attempt, not an error, and errors.Is(err, ErrPaymentRetryable)
// says the same call may be repeated. metering/stripepay implements it on
// Stripe (PaymentIntents confirmed off-session; webhooks signed with the
// endpoint secret, 300 s tolerance, events of stripepay.APIVersion's
// release), metering/manualpay for invoices paid by bank transfer with the
// invoice number as the reference, pending until marked paid.
package metering
