package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/pipelinetest"
	"github.com/veil-platform/veil/internal/testenv"
)

// The two plans of the API billed: Basic (10.00 a month; calls at 0.10
// for the first 10, 0.05 after) and Pro (30.00; 0.08 for the first 100,
// 0.04 after). The calls of the test on Pro in the period of the change,
// with or without Basic's before them, stay in Pro's first tier: whether
// tiers go on across a change of plan is the pricing rules' to say (and
// metering's tests'); this test checks everything else end to end.
const (
	billedBasicPlan = `api: billed
plan: basic
name: Basic
status: active
type: hybrid
currency: USD
interval: month
base_fee: "10.00"
meters:
  - slug: calls
    name: Calls
    aggregation: count
charges:
  - meter: calls
    model: graduated
    tiers:
      - up_to: 10
        unit_price: "0.10"
      - up_to: unlimited
        unit_price: "0.05"
`
	billedProPlan = `api: billed
plan: pro
name: Pro
status: active
type: hybrid
currency: USD
interval: month
base_fee: "30.00"
meters:
  - slug: calls
    name: Calls
    aggregation: count
charges:
  - meter: calls
    model: graduated
    tiers:
      - up_to: 100
        unit_price: "0.08"
      - up_to: unlimited
        unit_price: "0.04"
`
)

// TestBillingEndToEnd bills a consumer with every real part: calls
// through the Caddy gateway to Kafka, a processor into ClickHouse, and the
// control plane's billing cycle (every second, a grace of a second). The
// consumer subscribes to Basic with a 20% promotion, calls 15 times,
// changes to Pro and calls 25 times; its period ends (the test moves the
// subscription's period end to now, as the period roll would see a month
// later), is closed and invoiced. A gateway event delivered late (a copy
// of one of Pro's calls under a new id, as a spool replays it) becomes
// late usage, the provider corrects the period by 5 calls, the consumer
// calls 110 times in the next period (past Pro's first tier), which ends
// too. Both invoices equal,
// to the cent, what the test computes from its own calls, the tier
// prices, the seconds of the change and the discount; veil billing explain
// reproduces both.
func TestBillingEndToEnd(t *testing.T) {
	ctx := t.Context()
	m := newMeteredPlane(t, 2, "/gateway/billing-e2e")
	m.opts.periodRollEvery = time.Second
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "basic.yaml"), billedBasicPlan)
	writeFile(t, filepath.Join(dir, "pro.yaml"), billedProPlan)
	addr := testenv.FreeLoopbackAddr(t)
	args := append(m.e.args(addr, m.opts), "--billing-interval", "1s", "--billing-grace", "1s")
	p := startVeil(t, []string{"VEIL_PRICING_DIR=" + dir}, args...)
	c := &controlPlane{proc: p, ClientWithResponses: newClient(t, "http://"+addr), URL: "http://" + addr}
	t.Cleanup(func() {
		if err := p.stop(); err != nil && !errors.Is(err, errStopped) {
			t.Errorf("control plane: %v", err)
		}
	})
	p.waitReady(t, c.URL+"/readyz", 60*time.Second)
	pipelinetest.StartProcessor(t, m.processorConfig(t, "billing-e2e", 100))
	pool, err := pgxpool.New(ctx, m.e.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	prov, admin, consumer := providerToken(t), adminToken(t), consumerToken(t)
	m.e.activeAPI(t, c, prov, admin, "billed")
	reload, err := c.ReloadPlanFilesWithResponse(ctx, nil, client.Bearer(admin))
	expect(t, http.StatusOK, reload, err)
	plans := map[string]uuid.UUID{}
	for _, r := range append(reload.JSON200.Applied, reload.JSON200.Unchanged...) {
		plans[r.Plan] = r.PlanId
	}
	if len(plans) != 2 {
		t.Fatalf("reload = %s; want basic and pro", reload.Body)
	}
	promo, err := c.CreatePromotionWithResponse(ctx, nil, client.PromotionInput{
		Code: "LAUNCH20", Kind: client.PercentOff, Value: "20", Duration: client.Ptr(client.Repeating), DurationPeriods: client.Ptr(3),
	}, client.Bearer(prov))
	expect(t, http.StatusCreated, promo, err)
	sub, err := c.SubscribeWithResponse(ctx, nil, client.SubscribeInput{PlanId: plans["basic"], PromotionCodes: &[]string{"LAUNCH20"}}, client.Bearer(consumer))
	expect(t, http.StatusCreated, sub, err)
	subID := sub.JSON201.Id
	key, err := c.CreateKeyWithResponse(ctx, subID, nil, client.KeySettings{Name: client.Ptr("billing")}, client.Bearer(consumer))
	expect(t, http.StatusCreated, key, err)
	waitKey(t, c, consumer, key.JSON201.Id, "active")
	t.Cleanup(func() { dumpBilling(t, pool, m) })
	b := &billedRun{t: t, m: m, c: c, pool: pool, sub: subID, key: key.JSON201.Key, url: m.e.gw.URL + "/billed/hello"}

	b.calls(15)
	nextSecond()
	changed, err := c.ChangeSubscriptionPlanWithResponse(ctx, subID, nil, client.ChangePlanInput{PlanId: plans["pro"]}, client.Bearer(consumer))
	expect(t, http.StatusOK, changed, err)
	nextSecond()
	b.calls(25)
	b.waitEvents(40)
	first := b.endPeriod(prov)

	// Period 1: Basic's fee in full; at the change, −10 and +30 times the
	// seconds left over the period's; Basic's 15 calls (10 at 0.10, 5 at
	// 0.05), Pro's 25 (at 0.08); 20% off all that.
	var start, change, end time.Time
	if err := pool.QueryRow(ctx, `SELECT b.period_start, b.period_end, h.effective_at FROM billing_periods b
		JOIN subscription_history h ON h.subscription_id = b.subscription_id AND h.plan_version_id = $2
		WHERE b.id = $1`, first.BillingPeriodId, changed.JSON200.PlanVersionId).Scan(&start, &end, &change); err != nil {
		t.Fatal(err)
	}
	left, period := big.NewRat(end.Sub(change).Microseconds(), 1), big.NewRat(end.Sub(start).Microseconds(), 1)
	share := new(big.Rat).Quo(left, period)
	credit := centsOf(new(big.Rat).Mul(big.NewRat(-1000, 1), share))
	charge := centsOf(new(big.Rat).Mul(big.NewRat(3000, 1), share))
	usage1 := int64(10*10 + 5*5 + 25*8)
	subtotal1 := 1000 + credit + charge + usage1
	discount1 := centsOf(big.NewRat(subtotal1*20, 100))
	b.check(first, map[string]int64{"base_fee": 1000, "proration_credit": credit, "proration_charge": charge,
		"usage": usage1, "discount": -discount1}, subtotal1-discount1)
	t.Logf("period 1: %s of %s s on Pro; proration %s and %s; total %s", new(big.Rat).Quo(left, big.NewRat(1e6, 1)).FloatString(6),
		new(big.Rat).Quo(period, big.NewRat(1e6, 1)).FloatString(6),
		money(credit), money(charge), first.Total)

	// A late Pro call, then the provider's correction of 5 calls.
	b.replayLate(change)
	var late client.Adjustment
	testenv.Deadline(t, 60*time.Second, func() error {
		got, err := c.ListAdjustmentsWithResponse(ctx, subID, nil, client.Bearer(prov))
		expect(t, http.StatusOK, got, err)
		for _, a := range got.JSON200.Data {
			if a.Kind == "late_usage" {
				late = a
				return nil
			}
		}
		return fmt.Errorf("no late usage adjustment yet: %s", got.Body)
	})
	if q, ok := new(big.Rat).SetString(deref(late.Quantity)); !ok || q.Cmp(big.NewRat(1, 1)) != 0 || late.Meter == nil || *late.Meter != "calls" {
		t.Fatalf("late usage = %+v; want 1 call", late)
	}
	corr, err := c.CreateAdjustmentWithResponse(ctx, subID, nil, client.AdjustmentInput{
		BillingPeriodId: first.BillingPeriodId, Meter: client.Ptr("calls"), Quantity: client.Ptr("5"), Reason: "calls of a batch job the gateway missed",
	}, client.Bearer(prov))
	expect(t, http.StatusCreated, corr, err)

	// Period 2 on Pro: its fee and 110 calls (100 at 0.08, 10 at 0.04),
	// 20% off; then, undiscounted, the late call and the 5 corrected ones,
	// in Pro's first tier still (0.08).
	b.waitRoll(end)
	b.calls(110)
	b.waitEvents(151)
	second := b.endPeriod(prov)
	usage2 := int64(100*8 + 10*4)
	subtotal2 := 3000 + usage2
	discount2 := centsOf(big.NewRat(subtotal2*20, 100))
	adjust := int64(8 + 5*8)
	b.check(second, map[string]int64{"base_fee": 3000, "usage": usage2, "discount": -discount2, "adjustment": adjust},
		subtotal2-discount2+adjust)
	t.Logf("period 2: total %s; invoices %s and %s", second.Total, *first.Number, *second.Number)

	// veil billing explain exits 1 on any difference.
	for _, inv := range []client.Invoice{first, second} {
		out, err := exec.CommandContext(ctx, testenv.VeilBinary(t), "billing", "explain", "--postgres-url", m.e.pgURL, *inv.Number).CombinedOutput()
		if err != nil {
			t.Fatalf("veil billing explain %s: %v\n%s", *inv.Number, err, out)
		}
	}
}

// billedRun is the consumer's side of TestBillingEndToEnd.
type billedRun struct {
	t        *testing.T
	m        *meteredPlane
	c        *controlPlane
	pool     *pgxpool.Pool
	sub      uuid.UUID
	key, url string
	invoices int
}

// calls calls the API n times through the gateway, each answered 200.
func (b *billedRun) calls(n int) {
	b.t.Helper()
	for i := range n {
		if status, typ := callGateway(b.t, b.url, b.key); status != http.StatusOK {
			b.t.Fatalf("call %d = %d %s; want 200", i+1, status, typ)
		}
	}
}

// waitEvents waits until ClickHouse holds n billable events of the
// subscription.
func (b *billedRun) waitEvents(n uint64) {
	b.t.Helper()
	testenv.Deadline(b.t, 60*time.Second, func() error {
		var got uint64
		if err := b.m.ch.QueryRow(b.t.Context(), `SELECT count() FROM usage_events WHERE subject = ? AND refusal = ''`,
			b.sub.String()).Scan(&got); err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("clickhouse holds %d events of the subscription; want %d", got, n)
		}
		return nil
	})
}

// endPeriod ends the subscription's current period now, as if its month
// had passed (the events are all in ClickHouse by then), and waits for the
// billing cycle to record, close, invoice and finalize it.
func (b *billedRun) endPeriod(prov string) client.Invoice {
	b.t.Helper()
	ctx := b.t.Context()
	nextSecond()
	if _, err := b.pool.Exec(ctx, `UPDATE subscriptions SET current_period_end = now() WHERE id = $1`, b.sub); err != nil {
		b.t.Fatal(err)
	}
	nextSecond()
	b.invoices++
	var inv client.Invoice
	testenv.Deadline(b.t, 60*time.Second, func() error {
		got, err := b.c.ListInvoicesWithResponse(ctx, &client.ListInvoicesParams{SubscriptionId: &b.sub}, client.Bearer(prov))
		expect(b.t, http.StatusOK, got, err)
		open := 0
		for _, i := range got.JSON200.Data {
			if i.Status == client.InvoiceStatusOpen {
				open++
				if inv.Id == uuid.Nil || i.PeriodStart.After(inv.PeriodStart) {
					inv = i
				}
			}
		}
		if open != b.invoices {
			inv = client.Invoice{}
			return fmt.Errorf("%d finalized invoices; want %d", open, b.invoices)
		}
		return nil
	})
	got, err := b.c.GetInvoiceWithResponse(ctx, inv.Id, nil, client.Bearer(prov))
	expect(b.t, http.StatusOK, got, err)
	return *got.JSON200
}

// nextSecond waits until the next whole second has begun. ClickHouse
// keeps an event's time to the second, so an event in the second of a
// plan change or a period end counts on one side of it by convention;
// the test keeps its calls out of those seconds, so that its own count of
// each side needs no convention.
func nextSecond() {
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
}

// waitRoll waits until the period roll has started the subscription's
// next period at end.
func (b *billedRun) waitRoll(end time.Time) {
	b.t.Helper()
	testenv.Deadline(b.t, 30*time.Second, func() error {
		var start time.Time
		if err := b.pool.QueryRow(b.t.Context(), `SELECT current_period_start FROM subscriptions WHERE id = $1`, b.sub).Scan(&start); err != nil {
			return err
		}
		if !start.Equal(end) {
			return fmt.Errorf("current period starts %s; want %s", start, end)
		}
		return nil
	})
}

// replayLate produces again, under a new id, the gateway's event of the
// first call after the change, as a gateway replaying its spool after an
// outage would deliver it: after the period was invoiced.
func (b *billedRun) replayLate(change time.Time) {
	b.t.Helper()
	for _, r := range b.m.kafka.ReadAll(b.t, b.m.raw) {
		var ev map[string]any
		if err := json.Unmarshal(r.Value, &ev); err != nil {
			b.t.Fatal(err)
		}
		at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(ev["time"]))
		if ev["subject"] != b.sub.String() || at.Before(change) {
			continue
		}
		ev["id"] = fmt.Sprint(ev["id"], "-late")
		value, err := json.Marshal(ev)
		if err != nil {
			b.t.Fatal(err)
		}
		cl := b.m.kafka.Client(b.t)
		if err := cl.ProduceSync(b.t.Context(), &kgo.Record{Topic: b.m.raw, Key: r.Key, Value: value}).FirstErr(); err != nil {
			b.t.Fatal(err)
		}
		b.waitEvents(41)
		return
	}
	b.t.Fatal("no event of the subscription after the change in the raw topic")
}

// check compares inv with the amounts in cents the test computed: the sum
// of its lines per kind (kinds not named sum to zero) and its total.
func (b *billedRun) check(inv client.Invoice, want map[string]int64, total int64) {
	b.t.Helper()
	got := map[string]int64{}
	for _, l := range inv.Lines {
		got[string(l.Kind)] += parseCents(b.t, l.Amount)
	}
	for kind, w := range want {
		if got[kind] != w {
			b.t.Errorf("invoice %v: %s lines sum to %s; want %s", inv.Number, kind, money(got[kind]), money(w))
		}
	}
	for kind, g := range got {
		if _, ok := want[kind]; !ok && g != 0 {
			b.t.Errorf("invoice %v: %s lines sum to %s; want none", inv.Number, kind, money(g))
		}
	}
	if parseCents(b.t, inv.Total) != total || parseCents(b.t, inv.AmountDue) != total || inv.Currency != "USD" {
		b.t.Errorf("invoice %v: total %s, due %s %s; want %s USD", inv.Number, inv.Total, inv.AmountDue, inv.Currency, money(total))
	}
	if b.t.Failed() {
		for _, l := range inv.Lines {
			b.t.Logf("line %d %s %q %s × %s = %s", l.Position, l.Kind, l.Description, l.Quantity, l.UnitPrice, l.Amount)
		}
		b.t.FailNow()
	}
}

// centsOf rounds an amount in cents to a whole cent, half away from zero.
func centsOf(r *big.Rat) int64 {
	abs := new(big.Rat).Abs(r)
	abs.Add(abs, big.NewRat(1, 2))
	n := new(big.Int).Quo(abs.Num(), abs.Denom()).Int64()
	if r.Sign() < 0 {
		return -n
	}
	return n
}

// parseCents reads an amount of the API with two decimals as cents.
func parseCents(t *testing.T, s string) int64 {
	t.Helper()
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		t.Fatalf("amount %q is not a number", s)
	}
	r.Mul(r, big.NewRat(100, 1))
	if !r.IsInt() {
		t.Fatalf("amount %q is not in whole cents", s)
	}
	return r.Num().Int64()
}

func money(cents int64) string {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	return fmt.Sprintf("%s%d.%02d", sign, cents/100, cents%100)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// dumpBilling logs the periods, the usage snapshot lines and the
// subscription's events in ClickHouse when the test failed, to explain it.
func dumpBilling(t *testing.T, pool *pgxpool.Pool, m *meteredPlane) {
	if !t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, sql := range []string{
		`SELECT concat_ws(' ', id, period_start, period_end, state) FROM billing_periods ORDER BY period_start`,
		`SELECT concat_ws(' ', s.billing_period_id, l.segment_start, l.plan_version_id, l.meter_slug, l.quantity)
			FROM usage_snapshot_lines l JOIN usage_snapshots s ON s.id = l.snapshot_id ORDER BY l.segment_start`,
		`SELECT concat_ws(' ', subscription_id, plan_version_id, status, effective_at) FROM subscription_history ORDER BY effective_at`,
	} {
		rows, err := pool.Query(ctx, sql)
		if err != nil {
			t.Logf("%s: %v", sql, err)
			continue
		}
		for rows.Next() {
			var line string
			_ = rows.Scan(&line)
			t.Log(line)
		}
		rows.Close()
	}
	rows, err := m.ch.Query(ctx, `SELECT concat(toString(time), ' ', subject, ' ', route, ' ', toString(status), ' ', refusal) FROM usage_events ORDER BY time`)
	if err != nil {
		t.Logf("clickhouse: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var line string
		_ = rows.Scan(&line)
		t.Log(line)
	}
}
