// Package webhookstest builds the webhook service that other packages'
// tests publish their events through.
package webhookstest

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/internal/testenv"
)

// New returns a webhook service on pool (testenv.Postgres) that queues its
// deliveries with jobs (testenv.River), logs to the test and, since test
// receivers listen on loopback, allows private networks.
func New(t testing.TB, pool *pgxpool.Pool, jobs webhooks.Inserter) *webhooks.Service {
	t.Helper()
	hooks, err := webhooks.New(webhooks.Config{Pool: pool, Jobs: jobs, Logger: testenv.Logger(t), AllowPrivateNetworks: true})
	if err != nil {
		t.Fatalf("new webhooks: %v", err)
	}
	return hooks
}
