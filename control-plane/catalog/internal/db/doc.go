// Package db holds the catalog's Postgres queries (APIs, their versions and
// state changes, approval requests, signing secrets), written in
// queries.sql, and the Go code sqlc generates from them: make sqlc
// regenerates it, make sqlc-check fails when it is stale. Only package
// catalog calls it.
package db
