// Package db holds the Postgres queries of plans (plans.sql) and
// subscriptions (subs.sql), and the Go code sqlc generates from them: make
// sqlc regenerates it, make sqlc-check fails when it is stale. Only
// package subscriptions calls it. The statements of API keys are
// control-plane/keys/internal/db.
package db
