// Package db holds quota's Postgres queries (crossing notices, a
// subscription's quota status, adjustments), written in queries.sql, and
// the Go code sqlc generates from them: make sqlc regenerates it, make
// sqlc-check fails when it is stale. Only package quota calls it.
package db
