package processors

import (
	"context"
	"time"

	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/enforcement"
)

// The names below forward to internal/enforcement, which owns the Redis
// layout and the period arithmetic; they stay for the callers that read
// the processors' counters (benchmarks, the usage command).

// PeriodKey is the Redis key of a subject's counter for the period
// starting at start: enforcement.PeriodCounterName.
func PeriodKey(subject string, start time.Time) string {
	return enforcement.PeriodCounterName(subject, start)
}

// SubscriptionKey is the Redis key of the subscription record:
// enforcement.SubscriptionName.
func SubscriptionKey(subject string) string { return enforcement.SubscriptionName(subject) }

// WatermarkKey is the Redis hash of a subject's per-partition offset
// watermarks: enforcement.WatermarkName.
func WatermarkKey(subject string) string { return enforcement.WatermarkName(subject) }

// Period returns the billing period that holds t for the subject, the one
// the processors count into (enforcement.CurrentPeriod).
func Period(ctx context.Context, client rueidis.Client, subject string, t time.Time) (start, end time.Time, err error) {
	p, err := enforcement.CurrentPeriod(ctx, client, subject, t)
	return p.Start, p.End, err
}
