// Package db holds the Postgres queries of the portal's sessions and
// pending sign-ins (portal_sessions, portal_logins), written in
// queries.sql, and the Go code sqlc generates from them: make sqlc
// regenerates it, make sqlc-check fails when it is stale. Only package
// portal calls it.
package db
