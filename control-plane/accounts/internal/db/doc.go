// Package db holds the Postgres queries of accounts (organizations, users
// and memberships, upserted as tokens name them), written in queries.sql,
// and the Go code sqlc generates from them: make sqlc regenerates it, make
// sqlc-check fails when it is stale. Only package accounts calls it.
package db
