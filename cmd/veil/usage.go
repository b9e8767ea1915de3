package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
)

// usageReport is what veil usage prints.
type usageReport struct {
	Subscription string          `json:"subscription"`
	From         time.Time       `json:"from"`
	To           time.Time       `json:"to"`
	ClickHouse   metering.Totals `json:"clickhouse"`
	Redis        redisPeriodView `json:"redis_current_period"`
}

type redisPeriodView struct {
	PeriodStart time.Time       `json:"period_start"`
	PeriodEnd   time.Time       `json:"period_end"`
	Requests    int64           `json:"requests"`
	Units       decimal.Decimal `json:"units"`
}

func runUsage(ctx context.Context, args []string, stdout, _ io.Writer) error {
	var (
		mig        migrateFlags
		redisAddr  string
		redisDB    int
		sub        string
		fromS, toS string
	)
	f := newFlags("usage", `Prints, as JSON, a subscription's usage in ClickHouse (events and units in the range; the current
billing period by default) and its Redis counter for the current period, so the two can be compared.`, stdout)
	mig.register(f)
	f.String(&redisAddr, "redis-addr", "VEIL_REDIS_ADDR", defaultRedisAddr, "Redis address")
	f.Int(&redisDB, "redis-db", "VEIL_REDIS_DB", 0, "Redis logical database of the counters")
	f.String(&sub, "subscription", "", "", "subscription id (the events' subject); required")
	f.String(&fromS, "from", "", "", "start of the range, RFC 3339 (default: start of the current period)")
	f.String(&toS, "to", "", "", "end of the range, exclusive, RFC 3339 (default: end of the current period)")
	if err := f.Parse(args); err != nil {
		return err
	}
	if sub == "" {
		return errors.New("--subscription is required")
	}
	st, err := openStores(ctx, mig, redisAddr, redisDB)
	if err != nil {
		return err
	}
	defer st.close()

	period, err := enforcement.CurrentPeriod(ctx, st.redis, sub, time.Now())
	if err != nil {
		return err
	}
	start, end := period.Start, period.End
	rep := usageReport{Subscription: sub, From: start, To: end}
	for _, r := range []struct {
		s   string
		dst *time.Time
	}{{fromS, &rep.From}, {toS, &rep.To}} {
		if r.s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, r.s)
		if err != nil {
			return fmt.Errorf("%q is not an RFC 3339 time", r.s)
		}
		*r.dst = t.UTC()
	}
	if rep.ClickHouse, err = metering.NewReader(st.ch).SubjectTotals(ctx, sub, rep.From, rep.To); err != nil {
		return err
	}
	requests, micro, err := enforcement.PeriodCount(ctx, st.redis, sub, start)
	if err != nil {
		return err
	}
	rep.Redis.PeriodStart, rep.Redis.PeriodEnd = start, end
	rep.Redis.Requests = requests
	rep.Redis.Units = decimal.New(micro, -6)
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
