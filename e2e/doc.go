// Package e2e holds the end-to-end tests of Veil: they start the real veil
// binary (the gateway, the control plane, processors) as processes against
// the real Postgres, Redis, ClickHouse and Kafka, speak to the control
// plane through package client, and check what reaches the gateway, the
// stores and the notices. The package has no code outside its tests.
//
// make test runs them with the rest; the tests that restart the shared
// ClickHouse and Redis need -tags disrupt and run alone.
package e2e
