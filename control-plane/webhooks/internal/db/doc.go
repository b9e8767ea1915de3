// Package db holds the Postgres queries of webhooks: endpoints
// (endpoints.sql) and deliveries with their attempts (deliveries.sql), and
// the Go code sqlc generates from them: make sqlc regenerates it, make
// sqlc-check fails when it is stale. Only package webhooks calls it.
package db
