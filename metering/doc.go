// Package metering will hold meters, usage queries over ClickHouse, the
// rating engine, invoices and billing periods. The folder exists so the
// layout shows the architecture of DESIGN.md; nothing here runs yet.
package metering
