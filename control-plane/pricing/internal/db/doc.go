// Package db holds the Postgres queries of meters and of plan versions'
// charges and tiers (queries.sql), and the Go code sqlc generates from
// them: make sqlc regenerates it, make sqlc-check fails when it is stale.
// Only package pricing calls it.
package db
