package metering

import (
	"context"
	"fmt"
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
// fn with each as it arrives: the driver decodes the answer block by
// block, so only one block is ever held, never the whole answer. An error
// of fn stops the read and is returned.
func (r *Reader) Export(ctx context.Context, q ExportQuery, fn func(ExportRow) error) error {
	if err := q.validate(); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultExportTimeout)
		defer cancel()
	}
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
// subscription's rows are read by the sorting key's prefix; an API's by
// the time range's partitions.
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
	if q.StatusClass != 0 {
		conds = append(conds, "intDiv(status, 100) = @status_class")
		args = append(args, clickhouse.Named("status_class", q.StatusClass))
	}
	return `SELECT time, id, source, subject, api_id, key_id, method, route, path,
    status, latency_ms, request_bytes, response_bytes, units
FROM usage_events
WHERE ` + strings.Join(conds, "\n  AND ") + `
ORDER BY time, source, id`, args
}
