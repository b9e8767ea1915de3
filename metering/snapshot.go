package metering

// What a billing period's usage snapshot reads from ClickHouse: meter
// totals over many windows, several of them of one subscription (one per
// plan-version segment, or per period), and how far the rows it read
// reach in each Kafka partition.
//
// These read usage_events, not the usage roll-ups: a meter bills the
// events that reached the upstream (refusal = ''), filtered by path and
// status, over windows that start and end at any second (a plan change),
// and the usage roll-ups keep neither refusal nor path. Its sorting key
// (subject, time) makes the base table read only the subscriptions' rows
// of the windows. The billing roll-up, which keeps billable events only,
// serves the whole hours of a window (MeterTotalsRollupMany).

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
)

// snapshotChunk is how many windows one query of MeterTotalsMany or
// ThroughOffsets reads: large enough that 100,000 subscriptions take a few
// hundred queries, small enough that the bound query stays within a few
// hundred kilobytes.
const snapshotChunk = 5000

// MeterTotalsMany is MeterTotalsBatch for windows whose subjects may
// repeat (a subscription's segments, or its several periods): it groups
// them into queries in which each subject appears once, at most
// snapshotChunk windows each. A window without meters or with To not after
// From is all zeros and costs no query. The answer holds one map per
// window, in order.
func MeterTotalsMany(ctx context.Context, conn driver.Conn, windows []MeterWindow) ([]map[string]decimal.Decimal, error) {
	out := make([]map[string]decimal.Decimal, len(windows))
	var live []int
	for i, w := range windows {
		if len(w.Meters) == 0 || !w.To.After(w.From) {
			out[i] = make(map[string]decimal.Decimal, len(w.Meters))
			for _, m := range w.Meters {
				out[i][m.Slug] = decimal.Zero
			}
			continue
		}
		live = append(live, i)
	}
	for _, round := range distinctRounds(live, func(i int) string { return windows[i].Subject }) {
		batch := make([]MeterWindow, len(round))
		for j, i := range round {
			batch[j] = windows[i]
		}
		got, err := MeterTotalsBatch(ctx, conn, batch)
		if err != nil {
			return nil, err
		}
		for j, i := range round {
			out[i] = got[j]
		}
	}
	return out, nil
}

// OffsetWindow is one subscription's window whose rows ThroughOffsets
// reads.
type OffsetWindow struct {
	Subject  string
	From, To time.Time
}

// throughOffsetsSQL is the frame of ThroughOffsets' query; the WHERE is
// meterWindowSQL or meterWindowsSQL, as MeterTotalsBatch binds them.
const throughOffsetsSQL = `SELECT subject, kafka_partition, max(kafka_offset)
FROM usage_events
WHERE %s
GROUP BY subject, kafka_partition`

// ThroughOffsets returns, per window, the highest Kafka offset of each
// partition among the rows of its subject in its window, billable or not:
// how far a snapshot taken now reads, so that a later recount can tell the
// rows that arrived after it (offsets beyond). A window without rows maps
// to an empty map. Subjects may repeat, as in MeterTotalsMany.
func ThroughOffsets(ctx context.Context, conn driver.Conn, windows []OffsetWindow) ([]map[int32]int64, error) {
	out := make([]map[int32]int64, len(windows))
	var live []int
	for i, w := range windows {
		out[i] = map[int32]int64{}
		if w.To.After(w.From) {
			live = append(live, i)
		}
	}
	for _, round := range distinctRounds(live, func(i int) string { return windows[i].Subject }) {
		batch := make([]MeterWindow, len(round))
		at := make(map[string]int, len(round))
		for j, i := range round {
			batch[j] = MeterWindow{Subject: windows[i].Subject, From: windows[i].From, To: windows[i].To}
			at[windows[i].Subject] = i
		}
		q := &meterQuery{}
		text := fmt.Sprintf(throughOffsetsSQL, q.where(batch))
		qctx := ctx
		if q.size > defaultMaxQuerySize/2 {
			// The subjects travel bound into the text, as in
			// MeterTotalsBatch.
			qctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_query_size": 2 * q.size}))
		}
		if err := readOffsets(qctx, conn, text, q.args, at, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func readOffsets(ctx context.Context, conn driver.Conn, text string, args []any, at map[string]int, out []map[int32]int64) error {
	rows, err := conn.Query(ctx, text, args...)
	if err != nil {
		return fmt.Errorf("query through offsets: %w", err)
	}
	defer rows.Close()
	var (
		subject   string
		partition int32
		offset    int64
	)
	for rows.Next() {
		if err := rows.Scan(&subject, &partition, &offset); err != nil {
			return fmt.Errorf("read through offsets: %w", err)
		}
		if i, ok := at[subject]; ok {
			out[i][partition] = offset
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read through offsets: %w", err)
	}
	return nil
}

// distinctRounds splits the indexes into groups of at most snapshotChunk
// in which no key repeats, keeping their order within each group: the
// n-th window of a subject goes to the n-th group that holds that subject.
func distinctRounds(idx []int, key func(int) string) [][]int {
	var (
		rounds [][]int
		seen   []map[string]bool
		// first is the lowest round that may still have room.
		first int
	)
	for _, i := range idx {
		k := key(i)
		r := first
		for ; r < len(rounds); r++ {
			if len(rounds[r]) < snapshotChunk && !seen[r][k] {
				break
			}
		}
		if r == len(rounds) {
			rounds = append(rounds, nil)
			seen = append(seen, map[string]bool{})
		}
		rounds[r] = append(rounds[r], i)
		seen[r][k] = true
		for first < len(rounds) && len(rounds[first]) >= snapshotChunk {
			first++
		}
	}
	return rounds
}
