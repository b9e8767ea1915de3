package drift

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/periodic"
)

// Args is the scheduled usage drift check.
type Args struct{}

// Kind implements river.JobArgs.
func (Args) Kind() string { return "usage_reconcile" }

// cursor is where the scheduled check stands. A run cut short by its
// deadline stores what it checked, and the cursor remembers the last
// subscription it checked: the next run in this process starts after it,
// goes on to the last, and wraps around to it, so that the check covers
// every subscription however many there are. The place is kept in memory:
// a restart, or a run in another process, starts from the first
// subscription, which costs a repeat, never a miss.
type cursor struct {
	s *Checker
	// chunk is chunkSize; tests make it small.
	chunk int

	mu sync.Mutex
	// after is the subscription the next run starts after (uuid.Nil:
	// from the first).
	after uuid.UUID
}

// Worker returns the worker of scheduled drift checks.
func (s *Checker) Worker() *periodic.Worker[Args] { return s.worker(chunkSize) }

// worker returns a worker whose runs check chunk subscriptions at a time.
func (s *Checker) worker(chunk int) *periodic.Worker[Args] {
	c := &cursor{s: s, chunk: chunk}
	return periodic.NewWorker[Args](c.run).WithTimeout(workerTimeout)
}

// workerTimeout bounds one scheduled run. River rescues a job
// still running after the control plane's --job-rescue-after (1 minute by
// default) and runs it again, so a longer run would be checked, and
// healed, twice at once. A run cut short loses nothing: it stops checking
// deadlineMargin before the timeout, its heals are compare-and-set,
// and the next run resumes after the last subscription it checked.
const workerTimeout = 50 * time.Second

// run checks, resuming where the previous run stopped, and logs the
// report.
func (c *cursor) run(ctx context.Context) error {
	c.mu.Lock()
	after := c.after
	c.mu.Unlock()
	rep, next, err := c.s.check(ctx, pass{after: after, chunk: c.chunk, settle: c.s.settle})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.after = next
	c.mu.Unlock()
	lvl := slog.LevelInfo
	if rep.Drifted > 0 || len(rep.Unhealed) > 0 {
		lvl = slog.LevelWarn
	}
	c.s.log.Log(ctx, lvl, "usage reconciliation", "checked", rep.Checked, "in_flight", rep.InFlight,
		"drifted", rep.Drifted, "healed", rep.Healed, "unhealed", len(rep.Unhealed), "complete", next == uuid.Nil)
	return nil
}
