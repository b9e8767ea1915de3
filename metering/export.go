package metering

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"
)

// MaxExportWindow is the longest window an export may cover.
const MaxExportWindow = 31 * 24 * time.Hour

// DefaultExportTimeout bounds an export whose context has no deadline of
// its own. The driver passes a context's deadline to ClickHouse as
// max_execution_time, so neither a slow reader nor a slow query holds a
// connection past it.
const DefaultExportTimeout = 5 * time.Minute

// ExportQuery selects raw usage rows of one subscription or one API.
type ExportQuery struct {
	// Subject (a subscription id) or APIID, or both; at least one.
	Subject, APIID string
	// From and To bound the rows' time, [From, To), at most
	// MaxExportWindow apart.
	From, To time.Time
	// Filters; empty (0) for any.
	KeyID, Method, Route string
	StatusClass          uint8
}

// ExportRow is one usage event, the columns an export carries.
type ExportRow struct {
	Time          time.Time       `json:"time"`
	ID            string          `json:"id"`
	Source        string          `json:"source"`
	Subject       string          `json:"subject"`
	APIID         string          `json:"api_id"`
	KeyID         string          `json:"key_id"`
	Method        string          `json:"method"`
	Route         string          `json:"route"`
	Path          string          `json:"path"`
	Status        uint16          `json:"status"`
	LatencyMS     uint32          `json:"latency_ms"`
	RequestBytes  uint64          `json:"request_bytes"`
	ResponseBytes uint64          `json:"response_bytes"`
	Units         decimal.Decimal `json:"units"`
}

// Export reads the rows q selects from usage_events, ordered by time (then
// source and id, the dedupe key, so that the order is total), and calls
// fn with each as it arrives. An error of fn stops the read and is
// returned.
//
// ClickHouse 18.16 sorts a query's whole answer in memory before it sends
// its first row, so the window is read as consecutive slices, one query
// each, one after another: the hour roll-up's counts choose where to cut
// so that a slice holds about exportSliceRows rows (an hour busier than
// that is a slice of its own). The counts only place the cuts; the slices
// always cover the whole window, so a roll-up behind usage_events costs a
// bigger slice, never a row. Each slice's query also carries a memory
// ceiling and spills its sort to disk beyond exportSortBytes.
func (r *Reader) Export(ctx context.Context, q ExportQuery, fn func(ExportRow) error) error {
	if err := q.validate(); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultExportTimeout)
		defer cancel()
	}
	cuts, err := r.exportCuts(ctx, q)
	if err != nil {
		return err
	}
	from := q.From
	for _, to := range append(cuts, q.To) {
		s := q
		s.From, s.To = from, to
		if err := r.exportSlice(ctx, s, fn); err != nil {
			return err
		}
		from = to
	}
	return nil
}

// exportSliceRows is about the most rows one slice of an export sorts
// (at about 320 bytes a row in ClickHouse's sort, 64 MB); tests lower it.
var exportSliceRows uint64 = 200_000

// exportSortBytes is where a slice's sort spills to disk, and
// exportMemoryBytes the most memory one slice's query may take.
const (
	exportSortBytes   = 256 << 20
	exportMemoryBytes = 1 << 30
)

// exportCuts are the instants, ascending and strictly inside q's window,
// where Export starts a new slice.
func (r *Reader) exportCuts(ctx context.Context, q ExportQuery) ([]time.Time, error) {
	sql := `SELECT toUInt32(bucket) AS h, countMerge(requests) AS n FROM usage_rollup_hour
WHERE subject = @subject AND bucket >= @from_hour AND bucket < @to GROUP BY h ORDER BY h`
	args := []any{clickhouse.Named("subject", q.Subject), clickhouse.Named("api_id", q.APIID),
		clickhouse.Named("from_hour", ceilSecond(q.From).Truncate(time.Hour)), clickhouse.Named("to", ceilSecond(q.To))}
	if q.Subject == "" {
		sql = strings.NewReplacer("usage_rollup_hour", "usage_api_hour", "subject = @subject", "api_id = @api_id").Replace(sql)
	}
	rows, err := r.conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read usage export sizes: %w", err)
	}
	defer rows.Close()
	var (
		cuts []time.Time
		acc  uint64
	)
	for rows.Next() {
		var (
			h uint32
			n uint64
		)
		if err := rows.Scan(&h, &n); err != nil {
			return nil, fmt.Errorf("scan usage export sizes: %w", err)
		}
		at := time.Unix(int64(h), 0).UTC()
		if acc > 0 && acc+n > exportSliceRows && at.After(q.From) && at.Before(q.To) {
			cuts, acc = append(cuts, at), 0
		}
		acc += n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read usage export sizes: %w", err)
	}
	return cuts, nil
}

// exportSlice reads one slice of an export in order.
func (r *Reader) exportSlice(ctx context.Context, q ExportQuery, fn func(ExportRow) error) error {
	sql, args := exportSQL(q)
	rows, err := r.conn.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("read usage export: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var x ExportRow
		if err := rows.Scan(&x.Time, &x.ID, &x.Source, &x.Subject, &x.APIID, &x.KeyID, &x.Method, &x.Route, &x.Path,
			&x.Status, &x.LatencyMS, &x.RequestBytes, &x.ResponseBytes, &x.Units); err != nil {
			return fmt.Errorf("scan usage export: %w", err)
		}
		x.Time = x.Time.UTC()
		if err := fn(x); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read usage export: %w", err)
	}
	return nil
}

func (q ExportQuery) validate() error {
	switch {
	case q.Subject == "" && q.APIID == "":
		return fmt.Errorf("%w: a subscription or an API is required", ErrBadQuery)
	case q.From.IsZero() || q.To.IsZero() || !q.From.Before(q.To):
		return fmt.Errorf("%w: from must be before to", ErrBadQuery)
	case q.To.Sub(q.From) > MaxExportWindow:
		return fmt.Errorf("%w: the window is over %s", ErrBadQuery, MaxExportWindow)
	}
	return nil
}

// exportSQL selects q's rows; every value is a bound parameter. A
// subscription's rows are read by the sorting key's prefix; an API's
// through the subjects its consumer roll-up lists for the window.
func exportSQL(q ExportQuery) (string, []any) {
	conds := []string{"time >= @from", "time < @to"}
	args := []any{clickhouse.Named("from", ceilSecond(q.From)), clickhouse.Named("to", ceilSecond(q.To))}
	for _, f := range []struct{ col, name, val string }{
		{"subject", "subject", q.Subject}, {"api_id", "api_id", q.APIID}, {"key_id", "key_id", q.KeyID},
		{"method", "method", q.Method}, {"route", "route", q.Route},
	} {
		if f.val != "" {
			conds = append(conds, f.col+" = @"+f.name)
			args = append(args, clickhouse.Named(f.name, f.val))
		}
	}
	if q.Subject == "" {
		// usage_events is sorted by subject: the API's subjects of the
		// window, from its consumer roll-up, let the primary key skip
		// every other organization's rows instead of reading them all.
		conds = append(conds, `subject IN (SELECT subject FROM usage_api_consumer_hour
    WHERE api_id = @api_id AND bucket >= toStartOfHour(@from, 'UTC') AND bucket < @to)`)
	}
	if q.StatusClass != 0 {
		conds = append(conds, "intDiv(status, 100) = @status_class")
		args = append(args, clickhouse.Named("status_class", q.StatusClass))
	}
	return `SELECT time, id, source, subject, api_id, key_id, method, route, path,
    status, latency_ms, request_bytes, response_bytes, units
FROM usage_events
WHERE ` + strings.Join(conds, "\n  AND ") + `
ORDER BY time, source, id
SETTINGS max_bytes_before_external_sort = ` + strconv.Itoa(exportSortBytes) + `, max_memory_usage = ` + strconv.Itoa(exportMemoryBytes), args
}
