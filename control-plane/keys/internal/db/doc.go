// Package db holds the Postgres queries of API keys (keys.sql) and the Go
// code sqlc generates from them: make sqlc regenerates it, make sqlc-check
// fails when it is stale. Only package keys calls it.
package db
