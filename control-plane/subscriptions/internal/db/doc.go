// Package db holds the Postgres queries of plans (plans.sql),
// subscriptions (subs.sql) and API keys (keys.sql), and the Go code sqlc
// generates from them: make sqlc regenerates it, make sqlc-check fails
// when it is stale. Only package subscriptions calls it.
package db
