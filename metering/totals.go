package metering

import (
	"context"
	"fmt"
	"time"

	"github.com/shopspring/decimal"
)

// Totals are a subscription's billable usage in a range, read from
// usage_events.
type Totals struct {
	Events uint64          `json:"events"`
	Units  decimal.Decimal `json:"units"`
}

// subjectTotalsSQL counts a subject's events in [from, to) and sums their
// units, leaving out the gateway's refusals (a non-empty refusal), which are
// stored but never billed. It reads usage_events, not a roll-up: the
// roll-ups count refusals.
const subjectTotalsSQL = `SELECT count(), sum(units) FROM usage_events WHERE subject = ? AND time >= ? AND time < ? AND refusal = ''`

// SubjectTotals returns subject's billable events and units in [from, to):
// what `veil usage` compares with the Redis counter.
func (r *Reader) SubjectTotals(ctx context.Context, subject string, from, to time.Time) (Totals, error) {
	var t Totals
	if err := r.conn.QueryRow(ctx, subjectTotalsSQL, subject, from, to).Scan(&t.Events, &t.Units); err != nil {
		return Totals{}, fmt.Errorf("read clickhouse totals: %w", err)
	}
	return t, nil
}
