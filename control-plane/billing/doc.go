// Package billing turns ended subscription periods into invoices: it
// records billing periods and freezes each one's usage in a snapshot
// (periods.go, snapshot.go), builds a draft invoice per closed period with
// metering.BuildInvoice and recomputes it until it is finalized
// (invoices.go), finalizes it under a gapless number per issuer and year
// (finalize.go), keeps the consumers' credit balances and their ledger
// (credits.go), takes corrections and late usage as adjustments billed on
// the next invoice (adjustments.go), finds the tax treatment of a customer
// (tax.go), renders and sends invoices (render.go, notify.go), and runs it
// all as River jobs (jobs.go); the cycle invoices by sets (batch.go, which
// says what order the numbers follow). explain.go rebuilds a stored
// invoice from what it cites and lists any difference. preview.go prices
// the current period so far as its invoice would; outlook.go adds where
// it is heading (metering.Project, rated by the same engine) and
// outlookjob.go keeps every live subscription's outlook in
// subscription_outlooks for budgets and analytics; costbyday.go gives a
// subscription's usage charge per local day, at the margin, so that a
// period's days sum to its usage lines.
package billing
