// Package db holds the Postgres queries of ingest tokens (issue, list,
// revoke), written in queries.sql, and the Go code sqlc generates from
// them: make sqlc regenerates it, make sqlc-check fails when it is stale.
// Only package ingesttokens calls it; ingest looks tokens up through
// internal/ingesttoken.
package db
