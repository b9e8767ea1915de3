// Package db holds ingest's Postgres queries (a token's scope, the APIs of
// subscriptions), written in queries.sql, and the Go code sqlc generates
// from them: make sqlc regenerates it, make sqlc-check fails when it is
// stale. Only package ingesttoken calls it.
package db
