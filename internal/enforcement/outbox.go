package enforcement

import (
	"context"
	"fmt"

	"github.com/redis/rueidis"
)

// The quota outboxes (QuotaOutboxName): lists of [OutboxLine]s that the
// counting scripts push and the processors drain to veil.quota.events.

// OutboxEntry is one line of a subscription's quota outbox.
type OutboxEntry struct {
	Subject, Line string
}

// ReadOutboxes returns, for each subject, the first limit lines of its
// quota outbox, in one round trip; errs[i] is the failure of subjects[i].
func ReadOutboxes(ctx context.Context, client rueidis.Client, subjects []string, limit int64) (lines [][]string, errs []error) {
	cmds := make(rueidis.Commands, len(subjects))
	for i, s := range subjects {
		cmds[i] = client.B().Lrange().Key(QuotaOutboxName(s)).Start(0).Stop(limit - 1).Build()
	}
	lines, errs = make([][]string, len(subjects)), make([]error, len(subjects))
	for i, r := range client.DoMulti(ctx, cmds...) {
		got, err := r.AsStrSlice()
		if err != nil {
			errs[i] = fmt.Errorf("read quota outbox of %s: %w", subjects[i], err)
			continue
		}
		lines[i] = got
	}
	return lines, errs
}

// RemoveOutboxEntries removes each entry from its outbox once, by value
// (LREM), never by position: another drainer running at once, or a writer
// pushing more, must not lose a line that was not produced. It returns the
// failures, each naming its subscription.
func RemoveOutboxEntries(ctx context.Context, client rueidis.Client, entries []OutboxEntry) []error {
	if len(entries) == 0 {
		return nil
	}
	cmds := make(rueidis.Commands, len(entries))
	for i, e := range entries {
		cmds[i] = client.B().Lrem().Key(QuotaOutboxName(e.Subject)).Count(1).Element(e.Line).Build()
	}
	var errs []error
	for i, r := range client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			errs = append(errs, fmt.Errorf("remove quota outbox line of %s: %w", entries[i].Subject, err))
		}
	}
	return errs
}

// ScanOutboxes walks every quota outbox in Redis (on every primary of a
// cluster), calling fn with the subscriptions of each SCAN page; count is
// the SCAN COUNT hint. A subscription may come twice (SCAN's guarantees).
func ScanOutboxes(ctx context.Context, client rueidis.Client, count int64, fn func(subjects []string)) error {
	nodes, err := Primaries(ctx, client)
	if err != nil {
		return fmt.Errorf("scan quota outboxes: %w", err)
	}
	for _, node := range nodes {
		var cursor uint64
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(QuotaOutboxPattern).
				Count(count).Type("list").Build()).AsScanEntry()
			if err != nil {
				return fmt.Errorf("scan quota outboxes: %w", err)
			}
			subjects := make([]string, 0, len(e.Elements))
			for _, name := range e.Elements {
				if s, ok := outboxSubject(name); ok {
					subjects = append(subjects, s)
				}
			}
			fn(subjects)
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
	return nil
}
