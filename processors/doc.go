// Package processors will hold the franz-go consumers that decode, validate,
// deduplicate and aggregate usage events into ClickHouse and Redis, with a
// dead-letter queue. The folder exists so the layout shows the architecture
// of DESIGN.md; nothing here runs yet.
package processors
