// Package db holds the Postgres queries of the audit log (the insert every
// change makes in its transaction, the filtered list), written in
// queries.sql, and the Go code sqlc generates from them: make sqlc
// regenerates it, make sqlc-check fails when it is stale. Only package
// audit calls it.
package db
