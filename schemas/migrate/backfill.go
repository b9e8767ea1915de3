package migrate

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// BackfillCutoff is the placeholder a ClickHouse migration writes where a
// new roll-up's backfill cutoff goes: in its materialized view (which takes
// rows with ingested_at at or after the cutoff) and in the INSERT … SELECT
// that copies the older rows. As written it is a valid time long before any
// row, so a plain run of the file (the check on current ClickHouse) makes
// the view take every row and the INSERT copy none.
const BackfillCutoff = "toDateTime('1970-01-02 00:00:00', 'UTC') /* backfill cutoff */"

// DefaultBackfillGrace is how long a backfill waits after its cutoff when
// usage is flowing: processors stamp ingested_at before they send a batch,
// so a batch stamped just before the cutoff can land after the view exists
// (the view skips it) and must land before the backfill reads.
const DefaultBackfillGrace = 30 * time.Second

// DefaultBackfillSliceRows is how many rows of usage_events one INSERT of a
// backfill copies at most. The copy is cut into slices of whole UTC hours
// of event time holding about that many rows, so that its GROUP BY stays
// small whatever the history: one INSERT over 10 million rows grouped by
// minute ran out of ClickHouse's per-query memory (about 2 GiB here).
const DefaultBackfillSliceRows = 1_000_000

var (
	createTable  = regexp.MustCompile(`(?is)^CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+([A-Za-z_][A-Za-z0-9_]*)\s`)
	createViewTo = regexp.MustCompile(`(?is)^CREATE\s+MATERIALIZED\s+VIEW\s+IF\s+NOT\s+EXISTS\s+([A-Za-z_][A-Za-z0-9_]*)\s+TO\s+([A-Za-z_][A-Za-z0-9_]*)\s`)
	insertInto   = regexp.MustCompile(`(?is)^INSERT\s+INTO\s+([A-Za-z_][A-Za-z0-9_]*)\s`)
	// backfillWhere is how a backfill's INSERT must use the placeholder: as
	// the last condition of its WHERE, so that the time range of a slice
	// can be ANDed after it.
	backfillWhere = regexp.MustCompile(`(?is)\sWHERE\s+(.*\sAND\s+)?ingested_at\s*<\s*` + regexp.QuoteMeta(BackfillCutoff) + `\s+GROUP\s+BY\s`)
	// orWord in what precedes the placeholder would bind the slice's range
	// to one side of an OR only.
	orWord = regexp.MustCompile(`(?i)\bOR\b`)
	// viewCutoff finds the cutoff in a view's query as system.tables shows it.
	viewCutoff = regexp.MustCompile(`ingested_at >= toDateTime\('(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)', 'UTC'\)`)
)

// backfiller runs the statements of one migration that name BackfillCutoff.
type backfiller struct {
	conn      driver.Conn
	grace     time.Duration
	sliceRows uint64
	cutoffs   map[string]time.Time // roll-up table → its view's cutoff
	tables    map[string]string    // table → its CREATE TABLE in this migration
	done      map[string]bool      // tables whose view's backfill is recorded
}

func newBackfiller(conn driver.Conn, grace time.Duration, sliceRows int) *backfiller {
	if grace == 0 {
		grace = DefaultBackfillGrace
	}
	if sliceRows <= 0 {
		sliceRows = DefaultBackfillSliceRows
	}
	return &backfiller{conn: conn, grace: max(grace, 0), sliceRows: uint64(sliceRows),
		cutoffs: map[string]time.Time{}, tables: map[string]string{}, done: map[string]bool{}}
}

func cutoffSQL(t time.Time) string {
	return "toDateTime('" + t.UTC().Format(time.DateTime) + "', 'UTC')"
}

// exec runs stmt, handling the placeholder when it holds one.
func (b *backfiller) exec(ctx context.Context, stmt string) error {
	if !strings.Contains(stmt, BackfillCutoff) {
		if m := createTable.FindStringSubmatch(stmt); m != nil {
			b.tables[m[1]] = stmt
		}
		return execStatement(ctx, b.conn, stmt)
	}
	if m := createViewTo.FindStringSubmatch(stmt); m != nil {
		return b.createView(ctx, stmt, m[1], m[2])
	}
	if m := insertInto.FindStringSubmatch(stmt); m != nil {
		if w := backfillWhere.FindStringSubmatch(stmt); w == nil || orWord.MatchString(w[1]) {
			return fmt.Errorf("backfill of %s: the cutoff placeholder must end its WHERE as ingested_at < %s, just before GROUP BY, with no OR before it", m[1], BackfillCutoff)
		}
		return b.backfill(ctx, stmt, m[1])
	}
	return fmt.Errorf("backfill cutoff placeholder outside CREATE MATERIALIZED VIEW IF NOT EXISTS … TO and INSERT INTO")
}

// viewLead is how far ahead of the server's clock a new view's cutoff is:
// a row stamped at or after the cutoff must find the view in place, so the
// view must exist before its cutoff comes.
const viewLead = 2 * time.Second

// createView creates the view with a cutoff just ahead of the server's
// clock and checks that it was in place before the cutoff came. A view an
// earlier run made is kept when its backfill finished (it is recorded with
// its cutoff); otherwise nothing the earlier run did can be trusted (its
// view may have come after its cutoff, which failed that run), so the view
// and its table are dropped and made again, the table by the CREATE TABLE
// statement of this migration that preceded the view.
func (b *backfiller) createView(ctx context.Context, stmt, view, table string) error {
	var existing uint64
	if err := b.conn.QueryRow(ctx,
		"SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", view).Scan(&existing); err != nil {
		return fmt.Errorf("look up view %s: %w", view, err)
	}
	if existing > 0 {
		at, err := b.viewCutoff(ctx, view)
		if err != nil {
			return err
		}
		done, err := b.finished(ctx, table, at)
		if err != nil {
			return err
		}
		if done {
			b.cutoffs[table], b.done[table] = at, true
			return nil
		}
		if err := b.dropBoth(ctx, view, table); err != nil {
			return err
		}
	}
	var now time.Time
	if err := b.conn.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return fmt.Errorf("read clickhouse time: %w", err)
	}
	cutoff := now.UTC().Truncate(time.Second).Add(viewLead)
	var rows uint64
	if err := b.conn.QueryRow(ctx, "SELECT count() FROM usage_events").Scan(&rows); err != nil {
		return fmt.Errorf("count usage events: %w", err)
	}
	if afterCount != nil {
		afterCount(table)
	}
	if rows == 0 {
		// A new installation (migrations run before the processors
		// start): nothing to copy, so the view takes every row, stamped
		// at any time, as the placeholder says.
		cutoff = time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC)
	}
	if err := b.conn.Exec(ctx, strings.ReplaceAll(stmt, BackfillCutoff, cutoffSQL(cutoff))); err != nil {
		return err
	}
	if err := b.conn.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return fmt.Errorf("read clickhouse time: %w", err)
	}
	at, err := b.viewCutoff(ctx, view)
	if err != nil {
		return err
	}
	if !at.Equal(cutoff) {
		return fmt.Errorf("view %s has cutoff %s, not the %s it was made with: is another veil migrate running?", view, at.Format(time.RFC3339), cutoff.Format(time.RFC3339))
	}
	if rows == 0 {
		// A row that came between the count and the view is in neither
		// the view nor a copy: make both again with a cutoff ahead of
		// the clock, whose backfill copies it.
		var after uint64
		if err := b.conn.QueryRow(ctx, "SELECT count() FROM usage_events").Scan(&after); err != nil {
			return fmt.Errorf("count usage events: %w", err)
		}
		if after > 0 {
			if err := b.dropBoth(ctx, view, table); err != nil {
				return err
			}
			return b.createView(ctx, stmt, view, table)
		}
	}
	if rows > 0 && !now.Before(cutoff) {
		return fmt.Errorf("view %s was created after its cutoff %s (ClickHouse is slow to create it): rows stamped in between may be missing from %s; migrate again, which makes both again",
			view, cutoff.Format(time.RFC3339), table)
	}
	b.cutoffs[table] = at
	return nil
}

// viewCutoff reads the cutoff a view was made with.
func (b *backfiller) viewCutoff(ctx context.Context, view string) (time.Time, error) {
	var query string
	if err := b.conn.QueryRow(ctx,
		"SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = ?", view).Scan(&query); err != nil {
		return time.Time{}, fmt.Errorf("read view %s: %w", view, err)
	}
	m := viewCutoff.FindStringSubmatch(query)
	if m == nil {
		return time.Time{}, fmt.Errorf("view %s has no backfill cutoff in %q", view, query)
	}
	at, err := time.ParseInLocation(time.DateTime, m[1], time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse cutoff of view %s: %w", view, err)
	}
	return at, nil
}

// finished says whether table's backfill with cutoff is recorded. A record
// with another cutoff is of a table of that name a later migration dropped
// and made again.
func (b *backfiller) finished(ctx context.Context, table string, cutoff time.Time) (bool, error) {
	var done uint64
	// A run of 0006 that died before it made rollup_backfills finished
	// nothing.
	if err := b.conn.QueryRow(ctx,
		"SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'rollup_backfills'").Scan(&done); err != nil {
		return false, fmt.Errorf("look up rollup_backfills: %w", err)
	}
	if done == 0 {
		return false, nil
	}
	if err := b.conn.QueryRow(ctx, "SELECT count() FROM rollup_backfills WHERE rollup = ? AND cutoff = ?", table, cutoff).Scan(&done); err != nil {
		return false, fmt.Errorf("read rollup_backfills: %w", err)
	}
	return done > 0, nil
}

// afterCount, when set (by tests), runs after createView counted the rows
// to copy and before it makes the view.
var afterCount func(table string)

// dropBoth drops view and table and makes table again, empty, by the
// CREATE TABLE statement of this migration that preceded the view.
func (b *backfiller) dropBoth(ctx context.Context, view, table string) error {
	create, ok := b.tables[table]
	if !ok {
		return fmt.Errorf("view %s of an unfinished backfill: no CREATE TABLE of %s precedes it in this migration to make it again", view, table)
	}
	for _, stmt := range []string{"DROP TABLE IF EXISTS " + view, "DROP TABLE IF EXISTS " + table, create} {
		if err := b.conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("make %s and %s again: %w", view, table, err)
		}
	}
	return nil
}

// backfill copies the rows before the cutoff into table once: a finished
// backfill is recorded in rollup_backfills with its cutoff, and rows an
// unfinished one left (marked backfilled = 1) are deleted before copying
// again.
func (b *backfiller) backfill(ctx context.Context, stmt, table string) error {
	cutoff, ok := b.cutoffs[table]
	if !ok {
		return fmt.Errorf("backfill of %s: no materialized view into it precedes the INSERT", table)
	}
	if b.done[table] {
		// createView found its view's backfill recorded; a view it
		// made has a new cutoff, which nothing has recorded yet.
		return nil
	}
	if err := b.waitGrace(ctx, cutoff); err != nil {
		return err
	}
	if err := b.dropPartial(ctx, table); err != nil {
		return err
	}
	slices, err := b.slices(ctx, cutoff)
	if err != nil {
		return fmt.Errorf("backfill %s: %w", table, err)
	}
	for _, sl := range slices {
		where := cutoffSQL(cutoff) + " AND time >= " + cutoffSQL(sl[0]) + " AND time < " + cutoffSQL(sl[1])
		if err := b.conn.Exec(ctx, strings.ReplaceAll(stmt, BackfillCutoff, where)); err != nil {
			return fmt.Errorf("backfill %s, events from %s to %s: %w", table, sl[0].Format(time.RFC3339), sl[1].Format(time.RFC3339), err)
		}
	}
	batch, err := b.conn.PrepareBatch(ctx, "INSERT INTO rollup_backfills (rollup, cutoff, finished_at)")
	if err != nil {
		return fmt.Errorf("record backfill of %s: %w", table, err)
	}
	if err := batch.Append(table, cutoff, time.Now().UTC().Truncate(time.Second)); err != nil {
		return fmt.Errorf("record backfill of %s: %w", table, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("record backfill of %s: %w", table, err)
	}
	return nil
}

// slices cuts the event times of the rows to copy (ingested before cutoff)
// into [from, to) ranges of whole UTC hours, in order, each holding at most
// sliceRows rows unless one hour alone holds more; together they hold every
// row to copy.
func (b *backfiller) slices(ctx context.Context, cutoff time.Time) ([][2]time.Time, error) {
	rows, err := b.conn.Query(ctx, `SELECT toStartOfHour(time, 'UTC') AS hour, count() FROM usage_events
WHERE ingested_at < `+cutoffSQL(cutoff)+` GROUP BY hour ORDER BY hour`)
	if err != nil {
		return nil, fmt.Errorf("count the rows to copy by hour: %w", err)
	}
	defer rows.Close()
	var (
		out []([2]time.Time)
		n   uint64 // rows in the last slice
	)
	for rows.Next() {
		var (
			hour  time.Time
			count uint64
		)
		if err := rows.Scan(&hour, &count); err != nil {
			return nil, fmt.Errorf("count the rows to copy by hour: %w", err)
		}
		hour = hour.UTC()
		last := len(out) - 1
		if last >= 0 && n+count <= b.sliceRows {
			out[last][1] = hour.Add(time.Hour)
			n += count
			continue
		}
		out = append(out, [2]time.Time{hour, hour.Add(time.Hour)})
		n = count
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count the rows to copy by hour: %w", err)
	}
	return out, nil
}

// waitGrace waits until the server's clock is past cutoff (rows stamped
// before it may still be on their way until then), and grace further when
// usage was ingested around the cutoff (batches stamped before it may be
// in flight).
func (b *backfiller) waitGrace(ctx context.Context, cutoff time.Time) error {
	var recent uint64
	if err := b.conn.QueryRow(ctx, "SELECT count() FROM usage_events WHERE ingested_at >= ?",
		cutoff.Add(-10*b.grace-time.Minute)).Scan(&recent); err != nil {
		return fmt.Errorf("read recent usage: %w", err)
	}
	until := cutoff.Add(time.Second)
	if recent > 0 {
		until = until.Add(b.grace)
	}
	for {
		var now time.Time
		if err := b.conn.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
			return fmt.Errorf("read clickhouse time: %w", err)
		}
		wait := until.Sub(now)
		if wait <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for batches stamped before the backfill cutoff: %w", ctx.Err())
		case <-time.After(min(wait, time.Second)):
		}
	}
}

// dropPartial deletes the rows an unfinished backfill of table left, and
// waits for the deletion (a mutation) to finish.
func (b *backfiller) dropPartial(ctx context.Context, table string) error {
	var n uint64
	if err := b.conn.QueryRow(ctx, "SELECT count() FROM "+table+" WHERE backfilled = 1").Scan(&n); err != nil {
		return fmt.Errorf("look for an unfinished backfill of %s: %w", table, err)
	}
	if n == 0 {
		return nil
	}
	if err := b.conn.Exec(ctx, "ALTER TABLE "+table+" DELETE WHERE backfilled = 1"); err != nil {
		return fmt.Errorf("delete the unfinished backfill of %s: %w", table, err)
	}
	for {
		var pending uint64
		if err := b.conn.QueryRow(ctx,
			"SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = ? AND is_done = 0",
			table).Scan(&pending); err != nil {
			return fmt.Errorf("read mutations of %s: %w", table, err)
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the deletion of the unfinished backfill of %s: %w", table, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
