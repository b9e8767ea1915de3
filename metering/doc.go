// Package metering will hold meters, usage queries over ClickHouse, the
// rating engine, invoices and billing periods. So far it holds the analyst
// queries over the usage tables (queries.go, documented with measured
// latencies in docs/analyst-sql.md); the rest of DESIGN.md's metering is
// still to come.
package metering
