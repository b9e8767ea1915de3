// Package keys is the life of an API key. Its rules that need no
// transaction: the state machine every key moves through, the actions a
// caller may ask for and the webhook event of each state, a key's settings
// and their validation, rotation's grace, and the sealing of successors
// issued by automatic rotation. And its Service: issuing, changing,
// suspending, resuming, revoking, rotating, revealing and deleting keys,
// each change in one transaction that locks the key's subscription
// through Subscriptions (control-plane/subscriptions, which imports this
// package, never the reverse, and revokes a canceled subscription's keys
// with RevokeAll in its own transaction); the outbox jobs that write each
// change to the gateway's Redis records (internal/enforcement); the key
// steps of maintenance (expiry and renewal, the end of rotation grace,
// automatic rotation, notices by webhook and email), one per
// maintenance_*.go file; and the key half of the reconciliation with the
// gateway (FindDrift, HealDrift). The subscriptions service schedules
// maintenance and reconciliation and reports them with its own. The key
// format is internal/apikey; the statements are internal/db (sqlc).
package keys
