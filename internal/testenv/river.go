package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// River returns a River client on pool (a database from Postgres, whose
// migrations include River's tables) logging to the test.
//
// With workers nil the client only inserts jobs: tests that drive workers
// by hand, or that only look at what was enqueued, use it. With workers it
// can also work them, polling every 20 ms with up to 20 jobs at once, as a
// test wants; StartRiver runs it. mod, when given, changes the config
// before the client is built (fewer workers, other queues).
func River(t testing.TB, pool *pgxpool.Pool, workers *river.Workers, mod ...func(*river.Config)) *river.Client[pgx.Tx] {
	t.Helper()
	cfg := &river.Config{Logger: Logger(t)}
	if workers != nil {
		cfg.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 20}}
		cfg.Workers = workers
		cfg.FetchCooldown = 5 * time.Millisecond
		cfg.FetchPollInterval = 20 * time.Millisecond
		cfg.TestOnly = true
	}
	for _, m := range mod {
		m(cfg)
	}
	jobs, err := river.NewClient(riverpgxv5.New(pool), cfg)
	if err != nil {
		t.Fatalf("new river client: %v", err)
	}
	return jobs
}

// StartRiver runs jobs until the test ends, then stops it, waiting up to
// 10 s for running jobs.
func StartRiver(t testing.TB, jobs *river.Client[pgx.Tx]) {
	t.Helper()
	if err := jobs.Start(t.Context()); err != nil {
		t.Fatalf("start river client: %v", err)
	}
	t.Cleanup(func() {
		// t.Context() has ended by the time cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = jobs.Stop(ctx)
	})
}
