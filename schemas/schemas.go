// Package schemas holds Veil's contracts as data, embedded into the binary:
// the usage-event JSON Schema, the Postgres and ClickHouse migrations and the
// OpenAPI document of the control plane's REST API. Package usage (the event
// in Go) and package migrate (which applies the migrations) are below it.
package schemas

import "embed"

// UsageEventJSONSchema is the JSON Schema (draft 2020-12) of one usage event.
// It is the single definition of the event; package usage follows it.
//
//go:embed usage-event.schema.json
var UsageEventJSONSchema []byte

// Postgres holds the numbered Postgres migrations under postgres/.
//
//go:embed postgres/*.sql
var Postgres embed.FS

// ClickHouse holds the numbered ClickHouse migrations under clickhouse/.
//
//go:embed clickhouse/*.sql
var ClickHouse embed.FS

// OpenAPI is the OpenAPI 3.1 document of the control plane's REST API,
// served at /openapi.json. A test keeps it and the router in agreement.
//
//go:embed openapi.json
var OpenAPI []byte
