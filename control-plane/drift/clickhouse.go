package drift

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"
)

// part is what ClickHouse holds of one subject's partition since the
// lookback.
type part struct {
	// maxOffset is the highest offset (refused rows too: the watermarks
	// count every row), newest the latest ingested_at.
	maxOffset int64
	newest    time.Time
	// requests and units sum the admitted rows of the subject's period up
	// to the partition's watermark (all of them without one). units stays
	// a decimal: rows written before the units cap may sum past what a
	// counter of micro-units holds.
	requests int64
	units    decimal.Decimal
}

// clickhouseFigures asks ClickHouse, in one query, for each subject of the chunk
// and each partition, what part says. bounds are the subscriptions'
// readable watermarks, in the order of subs.
func (s *Checker) clickhouseFigures(ctx context.Context, subs []subscription, bounds []map[int32]int64) (map[string]map[int32]part, error) {
	query, args := usageQuery(subs, bounds)
	rows, err := s.cfg.ClickHouse.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read clickhouse usage: %w", err)
	}
	defer rows.Close()
	out := map[string]map[int32]part{}
	for rows.Next() {
		var (
			subject   string
			partition int32
			p         part
			n         uint64
			units     decimal.Decimal
		)
		if err := rows.Scan(&subject, &partition, &p.maxOffset, &p.newest, &n, &units); err != nil {
			return nil, fmt.Errorf("read clickhouse usage: %w", err)
		}
		p.requests, p.units = int64(n), units
		if out[subject] == nil {
			out[subject] = map[int32]part{}
		}
		out[subject][partition] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read clickhouse usage: %w", err)
	}
	return out, nil
}

// partitionKey names a subject's partition in the queries' lookup arrays.
func partitionKey(subject string, partition int32) string {
	return subject + "/" + strconv.Itoa(int(partition))
}

// usageQuery reads a chunk's figures in one pass over its subjects'
// recent rows, grouped by subject and partition. Each subject's period
// bounds, and each partition's watermark, are looked up per row with
// transform() from constant arrays (a hash lookup, and portable down to
// ClickHouse 18.16); a partition without a watermark falls back to the
// largest offset, so all its rows count, consistent with the maximum the
// same query reports. The scan is bounded by time so that it reads the
// recent part of each subject, not its whole history: the table is
// ordered by (subject, time). One bound serves the chunk (the earliest
// start's); a later subscription is scanned a little further back than
// it needs, which changes none of its figures that matter (see
// lookback).
func usageQuery(subs []subscription, bounds []map[int32]int64) (string, []any) {
	ids := make([]string, len(subs))
	set := make([]any, len(subs))
	starts, ends := make([]uint32, len(subs)), make([]uint32, len(subs))
	var (
		keys []string
		// offsets travel as strings: bound as integers, an array holding
		// one at or past 2^32 becomes UInt64, for which 18.16's
		// transform() finds no common type with its Int64 default.
		offsets []string
	)
	since := subs[0].start
	for i, sub := range subs {
		ids[i] = sub.id.String()
		set[i] = ids[i]
		starts[i], ends[i] = uint32(sub.start.Unix()), uint32(sub.end.Unix())
		if sub.start.Before(since) {
			since = sub.start
		}
		for _, p := range slices.Sorted(maps.Keys(bounds[i])) {
			keys = append(keys, partitionKey(ids[i], p))
			offsets = append(offsets, strconv.FormatInt(bounds[i][p], 10))
		}
	}
	query := `SELECT subject, kafka_partition, max(kafka_offset), max(ingested_at),
		countIf(refusal = '' AND toUInt32(time) >= transform(subject, ?, ?, toUInt32(0))
			AND toUInt32(time) < transform(subject, ?, ?, toUInt32(0))`
	args := []any{ids, starts, ids, ends}
	if len(keys) > 0 {
		// transform() refuses empty arrays.
		query += `
			AND kafka_offset <= toInt64(transform(concat(subject, '/', toString(kafka_partition)), ?, ?, '9223372036854775807'))`
		args = append(args, keys, offsets)
	}
	query += ` AS admitted),
		sumIf(units, admitted)
		FROM usage_events WHERE subject IN ? AND time >= ? GROUP BY subject, kafka_partition`
	return query, append(args, clickhouse.GroupSet{Value: set}, since.Add(-lookback))
}

// resolveIdle settles, for the drifted cases with idle watermarks,
// whether those are ahead of ClickHouse: a partition ClickHouse has no
// rows of since the lookback is idle when its whole history reaches the
// watermark (rows that old are not in flight), and ahead, so the case in
// flight, when it does not (Redis applied a batch ClickHouse has yet to
// get: a new subject's first, say). One query serves them all; it reads
// those subjects' whole history, hence only when needed.
func (s *Checker) resolveIdle(ctx context.Context, cases []assessment) error {
	var subjects, keys []any
	for _, c := range cases {
		if (c.f.verdict != verdictDiffers && c.f.verdict != verdictLost) || len(c.f.idle) == 0 {
			continue
		}
		id := c.sub.id.String()
		subjects = append(subjects, id)
		for _, p := range slices.Sorted(maps.Keys(c.f.idle)) {
			keys = append(keys, partitionKey(id, p))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	query, args := historyQuery(subjects, keys)
	rows, err := s.cfg.ClickHouse.Query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("read clickhouse offsets: %w", err)
	}
	defer rows.Close()
	highest := map[string]int64{}
	for rows.Next() {
		var (
			subject   string
			partition int32
			offset    int64
		)
		if err := rows.Scan(&subject, &partition, &offset); err != nil {
			return fmt.Errorf("read clickhouse offsets: %w", err)
		}
		highest[partitionKey(subject, partition)] = offset
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read clickhouse offsets: %w", err)
	}
	for i, c := range cases {
		if c.f.verdict != verdictDiffers && c.f.verdict != verdictLost {
			continue
		}
		for p, off := range c.f.idle {
			if ch, ok := highest[partitionKey(c.sub.id.String(), p)]; !ok || off > ch {
				cases[i].f.verdict = verdictInFlight
				break
			}
		}
	}
	return nil
}

// historyQuery returns the highest offset of each subject's
// partition named by keys (see partitionKey), over all time.
func historyQuery(subjects, keys []any) (string, []any) {
	return `SELECT subject, kafka_partition, max(kafka_offset) FROM usage_events
		WHERE subject IN ? AND concat(subject, '/', toString(kafka_partition)) IN ? GROUP BY subject, kafka_partition`,
		[]any{clickhouse.GroupSet{Value: subjects}, clickhouse.GroupSet{Value: keys}}
}
