// Package subscriptions holds what consumers buy and hold: an API's plans
// and their versioned terms, and subscriptions to a plan, each change in
// one transaction with its subscription locked. The API keys of a
// subscription live in control-plane/keys, whose service this one builds:
// a key change locks its subscription through LockSubscription, and a
// cancellation revokes the subscription's keys in its own transaction;
// quota credits and resets are control-plane/quota. It keeps the gateway's
// subscription records (internal/enforcement) in step with Postgres
// through outbox jobs and a reconciliation that reports on keys and
// subscriptions together, and runs the maintenance that rolls billing
// periods and calls the key steps (expiry, rotation grace, automatic
// rotation, notices).
package subscriptions
