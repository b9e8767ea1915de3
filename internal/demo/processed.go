package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/shopspring/decimal"
)

// processed waits until the processor has written this run's events to
// ClickHouse, then shows a roll-up query and one subscription's counters.
func (w *walk) processed(ctx context.Context, want int) error {
	w.step("waiting for the processor to write them to ClickHouse (exactly once)")
	bar := progressbar.NewOptions(want, progressbar.OptionSetWriter(w.out), progressbar.OptionSetDescription("rows"),
		progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w.out) }))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var n uint64
		if err := w.cfg.ClickHouse.QueryRow(ctx, "SELECT count() FROM usage_events WHERE source = ?", w.source).Scan(&n); err != nil {
			return fmt.Errorf("count rows: %w", err)
		}
		_ = bar.Set(int(n))
		if int(n) == want {
			break
		}
		if int(n) > want || time.Now().After(deadline) {
			return fmt.Errorf("usage_events holds %d rows of this run; want %d", n, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := w.rollup(ctx); err != nil {
		return err
	}
	return w.usage(ctx)
}

// rollup shows requests, units and latency per subscription from the
// minute roll-up.
func (w *walk) rollup(ctx context.Context) error {
	w.step("a roll-up query: requests, units and latency per subscription over the last hour (usage_rollup_minute)")
	const q = `SELECT subject, countMerge(requests) AS requests, sumMerge(units) AS units,
       quantilesMerge(0.5, 0.99)(latency_ms) AS p50_p99_ms
FROM usage_rollup_minute
WHERE api_id = 'api_weather' AND bucket >= now() - 3600
GROUP BY subject ORDER BY subject`
	fmt.Fprintln(w.out, q)
	rows, err := w.cfg.ClickHouse.Query(ctx, q)
	if err != nil {
		return fmt.Errorf("roll-up query: %w", err)
	}
	defer rows.Close()
	fmt.Fprintf(w.out, "%-14s %10s %12s %s\n", "subject", "requests", "units", "p50/p99 ms")
	for rows.Next() {
		var (
			subject  string
			requests uint64
			units    decimal.Decimal
			q        []float64
		)
		if err := rows.Scan(&subject, &requests, &units, &q); err != nil {
			return fmt.Errorf("scan roll-up: %w", err)
		}
		fmt.Fprintf(w.out, "%-14s %10d %12s %v\n", subject, requests, units, q)
	}
	return rows.Err()
}

// usage shows veil usage's report of Subject0 and checks that Redis
// counted what ClickHouse holds.
func (w *walk) usage(ctx context.Context) error {
	w.step("the same usage in Redis, where the gateway will read it: veil usage --subscription " + Subject0)
	var out bytes.Buffer
	if err := w.cfg.Usage(ctx, Subject0, &out); err != nil {
		return err
	}
	fmt.Fprint(w.out, out.String())
	var rep struct {
		ClickHouse struct {
			Events uint64 `json:"events"`
		} `json:"clickhouse"`
		Redis struct {
			Requests int64 `json:"requests"`
		} `json:"redis_current_period"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return err
	}
	if rep.ClickHouse.Events != uint64(rep.Redis.Requests) {
		return fmt.Errorf("ClickHouse holds %d events of %s this period, Redis %d", rep.ClickHouse.Events, Subject0, rep.Redis.Requests)
	}
	return nil
}
