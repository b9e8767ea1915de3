package enforcement_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
)

// budgetFixture is a subscription whose plan charges a base fee of 0.20
// and 0.01 per call (meter "calls"), with a hard budget of amount.
type budgetFixture struct {
	fixture
	id         string
	start, end time.Time
	counter    string
	version    int64
}

func newBudgetFixture(t *testing.T, name string) *budgetFixture {
	f := setup(t)
	b := &budgetFixture{fixture: f, id: name + "_" + f.suffix}
	b.start = time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	b.end = b.start.Add(30 * 24 * time.Hour)
	b.counter = enforcement.PeriodCounterName(b.id, b.start)
	t.Cleanup(func() {
		f.client.Do(context.Background(), f.client.B().Del().
			Key(enforcement.SubscriptionName(b.id), enforcement.BlockName(b.id), b.counter, enforcement.QuotaOutboxName(b.id)).Build())
	})
	return b
}

func usd(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func callsBudget(amount string) *enforcement.Budget {
	return &enforcement.Budget{Amount: usd(amount), Currency: "USD", BaseFee: usd("0.20"),
		Charges: []enforcement.BudgetCharge{{Meter: "calls", Model: "per_unit", UnitPrice: usd("0.01")}}}
}

// put writes the record with budget (nil: none) and a quota.
func (b *budgetFixture) put(t *testing.T, budget *enforcement.Budget, quota int64, hard bool) {
	t.Helper()
	b.version++
	if _, err := b.store.PutSubscription(t.Context(), enforcement.SubscriptionRecord{
		ID: b.id, APIID: "api_1", PlanID: "plan_1", Status: enforcement.SubscriptionActive,
		PeriodStart: b.start, PeriodEnd: b.end, QuotaRequests: quota, QuotaHard: hard,
		Meters:  []enforcement.MeterSpec{{Slug: "calls", Aggregation: enforcement.MeterCount}},
		Budget:  budget,
		Version: b.version,
	}); err != nil {
		t.Fatal(err)
	}
}

func (b *budgetFixture) blocked(t *testing.T) bool {
	t.Helper()
	v, err := b.client.Do(t.Context(), b.client.B().Get().Key(enforcement.BlockName(b.id)).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.FormatInt(b.end.Unix(), 10); v != want {
		t.Fatalf("block = %q; want the period's end %s", v, want)
	}
	return true
}

func TestBudgetRecordRoundTrip(t *testing.T) {
	b := newBudgetFixture(t, "sub_budget_rt")
	budget := callsBudget("12.5")
	budget.Charges = append(budget.Charges, enforcement.BudgetCharge{Meter: "mb", Model: "graduated",
		Tiers: []enforcement.BudgetTier{{UpTo: usd("100"), UnitPrice: usd("0.1")}, {Unbounded: true, UnitPrice: usd("0.05"), Flat: usd("1")}}})
	b.put(t, budget, -1, false)
	got, err := b.store.GetSubscription(t.Context(), b.id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Budget == nil || !got.Budget.Amount.Equal(budget.Amount) || got.Budget.Currency != "USD" || len(got.Budget.Charges) != 2 ||
		!got.Budget.Charges[1].Tiers[1].Flat.Equal(usd("1")) || !got.Budget.Charges[1].Tiers[1].Unbounded {
		t.Fatalf("Budget = %+v; want %+v", got.Budget, budget)
	}
	want := enforcement.SubscriptionRecord{Budget: budget}
	if got.BudgetKey() == "" || got.BudgetKey() != want.BudgetKey() {
		t.Errorf("BudgetKey = %q; want %q, the written budget's", got.BudgetKey(), want.BudgetKey())
	}
	if other := (enforcement.SubscriptionRecord{Budget: callsBudget("13")}); other.BudgetKey() == want.BudgetKey() {
		t.Error("another amount has the same budget key")
	}

	// A removed budget leaves nothing behind.
	b.put(t, nil, -1, false)
	if got, err = b.store.GetSubscription(t.Context(), b.id); err != nil || got.Budget != nil || got.BudgetKey() != "" {
		t.Errorf("after removal: Budget = %+v, key %q, err %v; want none", got.Budget, got.BudgetKey(), err)
	}

	// Strict both ways.
	for name, bad := range map[string]*enforcement.Budget{
		"zero amount":       callsBudget("0"),
		"lower-case code":   {Amount: usd("1"), Currency: "usd"},
		"negative price":    {Amount: usd("1"), Currency: "USD", Charges: []enforcement.BudgetCharge{{Meter: "calls", Model: "per_unit", UnitPrice: usd("-1")}}},
		"meter twice":       {Amount: usd("1"), Currency: "USD", Charges: []enforcement.BudgetCharge{{Meter: "calls"}, {Meter: "calls"}}},
		"negative base fee": {Amount: usd("1"), Currency: "USD", BaseFee: usd("-0.01")},
	} {
		r := enforcement.SubscriptionRecord{ID: b.id, APIID: "a", PlanID: "p", Status: enforcement.SubscriptionActive,
			PeriodStart: b.start, PeriodEnd: b.end, QuotaRequests: -1, Budget: bad, Version: 99}
		if _, err := b.store.PutSubscription(t.Context(), r); !errors.Is(err, enforcement.ErrInvalidRecord) {
			t.Errorf("PutSubscription(%s) = %v; want ErrInvalidRecord", name, err)
		}
	}
	b.hset(t, enforcement.SubscriptionName(b.id), "budget", `{"amount":"1","currency":"USD","oops":1}`)
	if _, err := b.store.GetSubscription(t.Context(), b.id); !errors.Is(err, enforcement.ErrCorruptRecord) || !strings.Contains(err.Error(), "field budget:") {
		t.Errorf("GetSubscription(garbled budget) = %v; want ErrCorruptRecord naming budget", err)
	}
}

// TestEnforceBudget: the cost so far (base fee + usage lines) reaching the
// amount blocks until the period's end; a record write with the same
// budget keeps the block, one with another budget lifts it unless a hard
// quota holds it.
func TestEnforceBudget(t *testing.T) {
	b := newBudgetFixture(t, "sub_budget")
	ctx := t.Context()
	b.put(t, callsBudget("1.00"), -1, false)

	// 0.20 + 79 × 0.01 = 0.99: under.
	b.hset(t, b.counter, "m:calls", "79")
	st, err := b.store.EnforceBudget(ctx, b.id, metering.BudgetCost)
	if err != nil || st.Blocked || !st.Cost.Equal(usd("0.99")) || b.blocked(t) {
		t.Fatalf("at 0.99: EnforceBudget = %+v, %v, blocked %v; want cost 0.99, not blocked", st, err, b.blocked(t))
	}
	// 80 calls: 1.00, the amount.
	b.hset(t, b.counter, "m:calls", "80")
	st, err = b.store.EnforceBudget(ctx, b.id, metering.BudgetCost)
	if err != nil || !st.Blocked || !st.Cost.Equal(usd("1")) || !b.blocked(t) {
		t.Fatalf("at 1.00: EnforceBudget = %+v, %v; want blocked", st, err)
	}
	rec, err := b.store.GetSubscription(ctx, b.id)
	if err != nil {
		t.Fatal(err)
	}
	if over, err := b.store.BudgetOverCached(ctx, b.id, b.start, rec.BudgetKey(), time.Second); err != nil || !over {
		t.Errorf("BudgetOverCached = %v, %v; want true", over, err)
	}

	steps := []struct {
		name        string
		budget      *enforcement.Budget
		quota       int64
		hard        bool
		wantBlocked bool
	}{
		{"rewritten with the same budget", callsBudget("1.00"), -1, false, true},
		{"raised", callsBudget("2.00"), -1, false, false},
		{"back to the budget found exceeded: its mark stands", callsBudget("1.00"), -1, false, true},
		{"removed", nil, 5, true, false},
	}
	for _, s := range steps {
		b.put(t, s.budget, s.quota, s.hard)
		if got := b.blocked(t); got != s.wantBlocked {
			t.Errorf("%s: blocked = %v; want %v", s.name, got, s.wantBlocked)
		}
	}

	// A hard quota's block outlives a raised budget.
	b.put(t, callsBudget("1.00"), 5, true)
	if _, err := b.store.EnforceBudget(ctx, b.id, metering.BudgetCost); err != nil {
		t.Fatal(err)
	}
	b.hset(t, b.counter, "requests", "5")
	b.put(t, callsBudget("50"), 5, true)
	if !b.blocked(t) {
		t.Error("a raised budget lifted a hard quota's block")
	}
	if over, err := b.store.BudgetOverCached(ctx, b.id, b.start, (enforcement.SubscriptionRecord{Budget: callsBudget("50")}).BudgetKey(), time.Second); err != nil || over {
		t.Errorf("BudgetOverCached(raised) = %v, %v; want false: the quota blocks", over, err)
	}
}

// TestEnforceBudgetRacesARecordWrite: a record written while the cost is
// being rated (a raised budget) wins: the block is not set from the old
// amount, the cost is rated again against the new one.
func TestEnforceBudgetRacesARecordWrite(t *testing.T) {
	b := newBudgetFixture(t, "sub_budget_race")
	b.put(t, callsBudget("1.00"), -1, false)
	b.hset(t, b.counter, "m:calls", "500")
	rated := 0
	rate := func(bd enforcement.Budget, ms []enforcement.MeterSpec, c map[string]int64) (decimal.Decimal, error) {
		rated++
		if rated == 1 {
			b.put(t, callsBudget("100"), -1, false)
		}
		return metering.BudgetCost(bd, ms, c)
	}
	st, err := b.store.EnforceBudget(t.Context(), b.id, rate)
	if err != nil || st.Blocked || rated != 2 || !st.Budget.Amount.Equal(usd("100")) {
		t.Fatalf("EnforceBudget = %+v, %v after %d ratings; want rated twice, against 100, not blocked", st, err, rated)
	}
	if b.blocked(t) {
		t.Error("blocked from the budget the record no longer holds")
	}

	// No budget: nothing rated.
	b.put(t, nil, -1, false)
	if st, err := b.store.EnforceBudget(t.Context(), b.id, rate); err != nil || st.Budget != nil || rated != 2 {
		t.Errorf("without a budget: EnforceBudget = %+v, %v; want nothing rated", st, err)
	}
	// A budget the engine cannot rate blocks nothing.
	b.put(t, &enforcement.Budget{Amount: usd("1"), Currency: "XXX"}, -1, false)
	if _, err := b.store.EnforceBudget(t.Context(), b.id, metering.BudgetCost); !errors.Is(err, enforcement.ErrBudgetUnrated) || b.blocked(t) {
		t.Errorf("unknown currency: EnforceBudget = %v; want ErrBudgetUnrated, no block", err)
	}
}

// TestHealsKeepABudgetBlock: the drift check's heals recompute the block
// from the counter; a budget block the counter's mark names survives them,
// as it survives record writes.
func TestHealsKeepABudgetBlock(t *testing.T) {
	b := newBudgetFixture(t, "sub_budget_heal")
	ctx := t.Context()
	b.put(t, callsBudget("1.00"), -1, false)
	b.hset(t, b.counter, "m:calls", "80", "requests", "80", "units_micro", "80")
	if st, err := b.store.EnforceBudget(ctx, b.id, metering.BudgetCost); err != nil || !st.Blocked {
		t.Fatalf("EnforceBudget = %+v, %v; want blocked", st, err)
	}
	t.Cleanup(func() {
		b.client.Do(context.Background(), b.client.B().Del().Key(enforcement.WatermarkName(b.id)).Build())
	})
	read, err := enforcement.ReadUsage(ctx, b.client, []enforcement.UsageOf{{ID: b.id, Start: b.start}})
	if err != nil {
		t.Fatal(err)
	}
	res := enforcement.HealUsage(ctx, b.client, []enforcement.UsageHeal{{ID: b.id, Period: enforcement.Period{Start: b.start, End: b.end},
		Read: read[0], Requests: 81, UnitsMicro: 81, Watermarks: map[int32]int64{0: 80}, Quota: -1}})
	if res[0].Err != nil || res[0].Outcome != enforcement.Healed || !res[0].Blocked || !b.blocked(t) {
		t.Fatalf("HealUsage = %+v, blocked %v; want healed and still blocked", res[0], b.blocked(t))
	}
	ms, err := enforcement.ReadMeterCounters(ctx, b.client, []enforcement.MetersOf{{ID: b.id, Start: b.start,
		Meters: []enforcement.MeterSpec{{Slug: "calls", Aggregation: enforcement.MeterCount}}}})
	if err != nil {
		t.Fatal(err)
	}
	mres := enforcement.HealMeters(ctx, b.client, []enforcement.MeterHeal{{ID: b.id, Period: enforcement.Period{Start: b.start, End: b.end},
		Read: ms[0], Values: map[string]int64{"calls": 81}}})
	if mres[0].Err != nil || mres[0].Outcome != enforcement.Healed || !b.blocked(t) {
		t.Fatalf("HealMeters = %+v, blocked %v; want healed and still blocked", mres[0], b.blocked(t))
	}
}

// TestPlanChangeKeepsAnExceededBudget: a record rewritten after a
// downgrade carries the earlier version's terms too, so the period's
// counters, already over the budget under them, stay blocked.
func TestPlanChangeKeepsAnExceededBudget(t *testing.T) {
	b := newBudgetFixture(t, "sub_budget_downgrade")
	dear := []enforcement.BudgetCharge{{Meter: "calls", Model: "per_unit", UnitPrice: usd("0.10")}}
	b.put(t, &enforcement.Budget{Amount: usd("10"), Currency: "USD", Charges: dear}, -1, false)
	b.hset(t, b.counter, "m:calls", "150")
	if st, err := b.store.EnforceBudget(t.Context(), b.id, metering.BudgetCost); err != nil || !st.Blocked {
		t.Fatalf("under the dear version: %+v, %v; want blocked", st, err)
	}
	b.put(t, &enforcement.Budget{Amount: usd("10"), Currency: "USD",
		Charges: []enforcement.BudgetCharge{{Meter: "calls", Model: "per_unit", UnitPrice: usd("0.001")}},
		Earlier: []enforcement.BudgetTerms{{Charges: dear}}}, -1, false)
	st, err := b.store.EnforceBudget(t.Context(), b.id, metering.BudgetCost)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Cost.Equal(usd("15")) || !b.blocked(t) {
		t.Errorf("after the downgrade: rated %s, blocked %v; want 15.00 (150 calls at the earlier 0.10), blocked", st.Cost, b.blocked(t))
	}
}

// TestTrialUsageLeftOutOfTheBudget: the counters at a trial's end
// (MarkTrialEnd, once) are left out of a hard budget's rating, so the
// trial's usage, which is not billed, never blocks.
func TestTrialUsageLeftOutOfTheBudget(t *testing.T) {
	b := newBudgetFixture(t, "sub_budget_trial")
	meters := []enforcement.MeterSpec{{Slug: "calls", Aggregation: enforcement.MeterCount}}
	b.hset(t, b.counter, "m:calls", "500") // 5.20 if the trial counted
	if err := b.store.MarkTrialEnd(t.Context(), b.id, b.start, meters); err != nil {
		t.Fatal(err)
	}
	b.hset(t, b.counter, "m:calls", "530")
	if err := b.store.MarkTrialEnd(t.Context(), b.id, b.start, meters); err != nil {
		t.Fatal(err)
	}
	b.put(t, callsBudget("1"), -1, false)
	st, err := b.store.EnforceBudget(t.Context(), b.id, metering.BudgetCost)
	if err != nil {
		t.Fatal(err)
	}
	// 0.20 + 30 calls since the trial's end × 0.01.
	if !st.Cost.Equal(usd("0.5")) || st.Blocked || b.blocked(t) {
		t.Errorf("rated %s, blocked %v; want 0.50 (the 500 trial calls left out), not blocked", st.Cost, st.Blocked)
	}
	b.hset(t, b.counter, "m:calls", "580")
	if st, err = b.store.EnforceBudget(t.Context(), b.id, metering.BudgetCost); err != nil || !st.Cost.Equal(usd("1")) || !b.blocked(t) {
		t.Errorf("80 billed calls: rated %s, %v, blocked %v; want 1.00, blocked", st.Cost, err, b.blocked(t))
	}
}
