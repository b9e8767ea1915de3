// Package db holds the drift check's Postgres queries (the live
// subscriptions, the stored runs), written in queries.sql, and the Go code
// sqlc generates from them: make sqlc regenerates it, make sqlc-check
// fails when it is stale. Only package drift calls it.
package db
