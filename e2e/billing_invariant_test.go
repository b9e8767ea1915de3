package e2e

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestBilledUsageEqualsClickHouse is billing's invariant: over four
// months of subscriptions with random plan changes (at random
// microseconds, so that some fall in the second of an event), random
// events (refused, failed with a 5xx and other subscriptions' among
// them), late events for the month invoiced before and random
// corrections, the usage the invoices bill per subscription and meter
// (usage lines and late usage adjustment lines) equals what ClickHouse's
// usage_events holds as billable for it over the invoiced periods:
// nothing billed twice, nothing missed. Corrections are billed apart, each
// once, as made. The billing service runs in this process with a clock
// the test moves, against the real Postgres and ClickHouse.
// VEIL_TEST_SEED reruns a logged seed.
func TestBilledUsageEqualsClickHouse(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("VEIL_TEST_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("VEIL_TEST_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (VEIL_TEST_SEED=%d runs this case again)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 16))
	ctx := t.Context()
	f := newInvariantFixture(t)
	jan := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := testenv.NewClock(jan)
	svc, err := billing.New(billing.Config{Pool: f.pool, ClickHouse: f.ch, Logger: testenv.Logger(t), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	const subs, months = 4, 4
	var all []*invSub
	for i := range subs {
		all = append(all, f.subscribe(jan.AddDate(0, 0, i), months))
	}
	for m := range months {
		for _, s := range all {
			start, end := s.period(m)
			// An event in the very second of each change, on top.
			f.events(rng, s, start, end, 10+rng.IntN(60), f.changes(rng, s, start, end)...)
			if m > 0 {
				prevStart, prevEnd := s.period(m - 1)
				f.events(rng, s, prevStart, prevEnd, rng.IntN(4)) // late: that month is invoiced
				f.correct(rng, svc, s, m-1)
			}
		}
		_, end := all[subs-1].period(m)
		clock.Set(end.Add(2 * time.Hour))
		if _, err := svc.RunCycle(ctx); err != nil {
			t.Fatalf("billing cycle after month %d: %v", m+1, err)
		}
	}
	// Events of the open period are not billed yet, and not expected.
	for _, s := range all {
		start, end := s.period(months)
		f.events(rng, s, start, end, 5)
	}

	late, corrections, changes := 0, 0, 0
	for _, s := range all {
		got := f.invoiced(s)
		start, _ := s.period(0)
		_, end := s.period(months - 1)
		want := f.billable(s, start, end)
		for _, meter := range []string{"calls", "units"} {
			if !got.usage[meter].Equal(want[meter]) {
				t.Errorf("subscription %s: invoiced %s %s (usage %s + late %s); ClickHouse's billable %s",
					s.id, meter, got.usage[meter], got.lines[meter], got.late[meter], want[meter])
			}
			if !got.corrected[meter].Equal(s.corrected[meter]) {
				t.Errorf("subscription %s: corrections of %s billed %s; made %s", s.id, meter, got.corrected[meter], s.corrected[meter])
			}
		}
		if !got.amounts.Equal(s.amounts) {
			t.Errorf("subscription %s: amount corrections billed %s; made %s", s.id, got.amounts, s.amounts)
		}
		if got.invoices != months {
			t.Errorf("subscription %s: %d invoices; want %d", s.id, got.invoices, months)
		}
		late += got.lateLines
		corrections += s.corrections
		changes += s.changes
	}
	if n := f.count(`SELECT count(*) FROM billing_adjustments WHERE invoice_id IS NULL`); n != 0 {
		t.Errorf("%d adjustments left unbilled", n)
	}
	differ, err := svc.ExplainAll(ctx)
	if err != nil || len(differ) != 0 {
		t.Fatalf("explain: %d invoices differ, %v", len(differ), err)
	}
	t.Logf("%d subscriptions, %d months: %d plan changes, %d late usage lines, %d corrections", subs, months, changes, late, corrections)
}

// invariantFixture is an API with three versions of a plan: v1 (10.00;
// calls on graduated tiers, units at 0.5), v2 (30.00; calls on other
// tiers, units at 0.4), v3 (no fee; calls at 0.03, units at 0.3). No
// included units: the usage lines then bill every metered unit.
type invariantFixture struct {
	t        *testing.T
	pool     *pgxpool.Pool
	ch       driver.Conn
	issuer   uuid.UUID
	api      uuid.UUID
	versions []uuid.UUID
	offset   int64
}

// invSub is a subscription of the invariant test and what was corrected.
type invSub struct {
	id          uuid.UUID
	start       time.Time
	version     uuid.UUID
	corrected   map[string]decimal.Decimal
	amounts     decimal.Decimal
	corrections int
	changes     int
}

// period is the subscription's m-th period (from 0), a calendar month
// from its start's day.
func (s *invSub) period(m int) (start, end time.Time) {
	return s.start.AddDate(0, m, 0), s.start.AddDate(0, m+1, 0)
}

func newInvariantFixture(t *testing.T) *invariantFixture {
	f := &invariantFixture{t: t, pool: testenv.Postgres(t)}
	f.ch, _, _ = testenv.ClickHouseDB(t)
	f.issuer = testenv.Org(t, f.pool, "issuer-"+testenv.Suffix())
	f.api = f.id(`INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, 'Invariant', $2, 'http://upstream', 'v1', 'prov') RETURNING id`, f.issuer, "invariant-"+testenv.Suffix())
	plan := f.id(`INSERT INTO plans (api_id, name, slug, status) VALUES ($1, 'Pro', 'pro', 'active') RETURNING id`, f.api)
	calls := f.id(`INSERT INTO meters (api_id, slug, aggregation) VALUES ($1, 'calls', 'count') RETURNING id`, f.api)
	units := f.id(`INSERT INTO meters (api_id, slug, aggregation, field) VALUES ($1, 'units', 'sum', 'units') RETURNING id`, f.api)
	type tier struct{ upTo, price string }
	for i, v := range []struct {
		fee        string
		calls      []tier
		unitsPrice string
	}{
		{"10", []tier{{"100", "0.02"}, {"", "0.01"}}, "0.5"},
		{"30", []tier{{"50", "0.015"}, {"200", "0.007"}, {"", "0.005"}}, "0.4"},
		{"0", []tier{{"", "0.03"}}, "0.3"},
	} {
		version := f.id(`INSERT INTO plan_versions (plan_id, version, type, currency, interval, base_fee, created_by)
			VALUES ($1, $2, 'hybrid', 'USD', 'month', $3, 'prov') RETURNING id`, plan, i+1, v.fee)
		f.versions = append(f.versions, version)
		charge := f.id(`INSERT INTO plan_version_charges (plan_version_id, meter_id, model) VALUES ($1, $2, 'graduated') RETURNING id`, version, calls)
		for j, tr := range v.calls {
			var upTo *string
			if tr.upTo != "" {
				upTo = &tr.upTo
			}
			f.exec(`INSERT INTO charge_tiers (charge_id, position, up_to, unit_price) VALUES ($1, $2, $3, $4)`, charge, j+1, upTo, tr.price)
		}
		f.exec(`INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price) VALUES ($1, $2, 'per_unit', $3)`,
			version, units, v.unitsPrice)
	}
	return f
}

func (f *invariantFixture) id(sql string, args ...any) uuid.UUID {
	f.t.Helper()
	var id uuid.UUID
	if err := f.pool.QueryRow(f.t.Context(), sql, args...).Scan(&id); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return id
}

func (f *invariantFixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.t.Context(), sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

func (f *invariantFixture) count(sql string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.pool.QueryRow(f.t.Context(), sql, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// subscribe subscribes a new customer on v1 at start, its current period
// the one after months periods, as the period roll leaves it then.
func (f *invariantFixture) subscribe(start time.Time, months int) *invSub {
	org := testenv.Org(f.t, f.pool, "customer-"+testenv.Suffix())
	s := &invSub{start: start, version: f.versions[0], corrected: map[string]decimal.Decimal{}}
	cur, end := s.period(months)
	s.id = f.id(`INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status, current_period_start, current_period_end)
		VALUES ($1, 'cust', $2, $3, 'active', $4, $5) RETURNING id`, org, f.api, s.version, cur, end)
	f.exec(`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor) VALUES ($1, $2, 'active', $3, 'cust')`,
		s.id, s.version, start)
	return s
}

// changes records 0 to 2 plan changes at random microseconds of [start,
// end), in order, each to another version, as ChangePlan records them, and
// returns their times.
func (f *invariantFixture) changes(rng *rand.Rand, s *invSub, start, end time.Time) []time.Time {
	var at []time.Time
	for range rng.IntN(3) {
		at = append(at, start.Add(time.Duration(rng.Int64N(int64(end.Sub(start)/time.Microsecond)))*time.Microsecond))
	}
	if len(at) == 2 && at[1].Before(at[0]) {
		at[0], at[1] = at[1], at[0]
	}
	for _, a := range at {
		next := f.versions[rng.IntN(len(f.versions))]
		for next == s.version {
			next = f.versions[rng.IntN(len(f.versions))]
		}
		s.version = next
		f.exec(`UPDATE subscriptions SET plan_version_id = $2 WHERE id = $1`, s.id, next)
		f.exec(`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor) VALUES ($1, $2, 'active', $3, 'cust')`,
			s.id, next, a)
	}
	s.changes += len(at)
	return at
}

// events writes n random events of s in [start, end) to usage_events, and
// as many of another subject: about one in ten refused by the gateway,
// one in ten answered 5xx (neither billable); then one of s at each of
// at.
func (f *invariantFixture) events(rng *rand.Rand, s *invSub, start, end time.Time, n int, at ...time.Time) {
	f.t.Helper()
	batch, err := f.ch.PrepareBatch(context.Background(), `INSERT INTO usage_events (id, source, type, subject, time, api_id,
		key_id, method, route, path, status, latency_ms, request_bytes, response_bytes, units, refusal, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		f.t.Fatal(err)
	}
	other := uuid.NewSHA1(s.id, []byte("other")).String()
	for i := range 2*n + len(at) {
		subject := s.id.String()
		if i >= n && i < 2*n {
			subject = other
		}
		when := start.Add(time.Duration(rng.Int64N(int64(end.Sub(start)/time.Second))) * time.Second)
		if i >= 2*n {
			when = at[i-2*n].Truncate(time.Second)
		}
		status, refusal := uint16(200), ""
		switch r := rng.IntN(10); r {
		case 0:
			status, refusal = 429, "rate_limited"
		case 1:
			status = 503
		}
		f.offset++
		if err := batch.Append(uuid.NewString(), "/gw", "veil.api.request", subject, when, f.api.String(), "key_1", "GET", "/v1/*", "/v1/x",
			status, uint32(5), uint64(10), uint64(20), decimal.New(rng.Int64N(500), -2), refusal, when, int32(0), f.offset); err != nil {
			f.t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		f.t.Fatalf("insert usage_events: %v", err)
	}
}

// correct makes, half of the time, a provider's correction of s's period
// m: a quantity of calls or units (negative ones too, refused when they
// would take the period below zero) or an amount.
func (f *invariantFixture) correct(rng *rand.Rand, svc *billing.Service, s *invSub, m int) {
	f.t.Helper()
	if rng.IntN(2) == 0 {
		return
	}
	start, _ := s.period(m)
	period := f.id(`SELECT id FROM billing_periods WHERE subscription_id = $1 AND period_start = $2`, s.id, start)
	in := billing.AdjustmentInput{BillingPeriodID: &period, Reason: "provider's correction"}
	meter := []string{"calls", "units"}[rng.IntN(2)]
	switch r := rng.IntN(3); r {
	case 0:
		amount, usd := decimal.New(rng.Int64N(2000)-1000, -2), "USD"
		if amount.IsZero() {
			amount = decimal.New(1, -2)
		}
		in.Amount, in.Currency = &amount, &usd
	default:
		q := decimal.New(rng.Int64N(40)-10, 0)
		if q.IsZero() {
			q = decimal.New(1, 0)
		}
		in.Meter, in.Quantity = &meter, &q
	}
	_, err := svc.CreateAdjustment(f.t.Context(), identity.Actor{Subject: "prov", Role: identity.RoleProvider, OrgID: f.issuer}, s.id, in)
	switch {
	case errors.Is(err, billing.ErrBelowZero):
		return
	case err != nil:
		f.t.Fatalf("correction %+v: %v", in, err)
	case in.Amount != nil:
		s.amounts = s.amounts.Add(*in.Amount)
	default:
		s.corrected[meter] = s.corrected[meter].Add(*in.Quantity)
	}
	s.corrections++
}

// invoicedUsage is what s's finalized invoices bill, per meter: usage
// lines, late usage adjustment lines and their sum; corrections apart.
type invoicedUsage struct {
	lines, late, usage, corrected map[string]decimal.Decimal
	amounts                       decimal.Decimal
	invoices, lateLines           int
}

// invoiced reads s's finalized invoices' lines from Postgres.
func (f *invariantFixture) invoiced(s *invSub) invoicedUsage {
	f.t.Helper()
	out := invoicedUsage{lines: map[string]decimal.Decimal{}, late: map[string]decimal.Decimal{}, usage: map[string]decimal.Decimal{},
		corrected: map[string]decimal.Decimal{}}
	out.invoices = f.count(`SELECT count(*) FROM invoices WHERE subscription_id = $1 AND status = 'open'`, s.id)
	rows, err := f.pool.Query(f.t.Context(), `SELECT l.kind::text, coalesce(l.meter_slug, ''), l.quantity, l.amount, coalesce(a.kind::text, '')
		FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
		LEFT JOIN billing_adjustments a ON l.kind = 'adjustment' AND a.id::text = l.reference
		WHERE i.subscription_id = $1 AND i.status = 'open' AND l.kind IN ('usage', 'adjustment')`, s.id)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var kind, meter, adjustment string
		var q, amount decimal.Decimal
		if err := rows.Scan(&kind, &meter, &q, &amount, &adjustment); err != nil {
			f.t.Fatal(err)
		}
		switch {
		case kind == "usage":
			out.lines[meter] = out.lines[meter].Add(q)
		case adjustment == "late_usage":
			out.late[meter] = out.late[meter].Add(q)
			out.lateLines++
		case adjustment == "correction" && meter == "":
			out.amounts = out.amounts.Add(amount)
		case adjustment == "correction":
			out.corrected[meter] = out.corrected[meter].Add(q)
		default:
			f.t.Fatalf("an adjustment line of no adjustment (reference of kind %q)", adjustment)
		}
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	for _, m := range []string{"calls", "units"} {
		out.usage[m] = out.lines[m].Add(out.late[m])
	}
	return out
}

// billable is ClickHouse's billable usage of s in [start, end): events
// neither refused nor answered 5xx, counted and their units summed.
func (f *invariantFixture) billable(s *invSub, start, end time.Time) map[string]decimal.Decimal {
	f.t.Helper()
	var calls uint64
	var units decimal.Decimal
	if err := f.ch.QueryRow(f.t.Context(), `SELECT count(), sum(units) FROM usage_events
		WHERE subject = ? AND refusal = '' AND status < 500 AND time >= toDateTime(?) AND time < toDateTime(?)`,
		s.id.String(), start.Unix(), end.Unix()).Scan(&calls, &units); err != nil {
		f.t.Fatal(err)
	}
	return map[string]decimal.Decimal{"calls": decimal.NewFromUint64(calls), "units": units}
}
