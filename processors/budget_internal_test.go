package processors

import (
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
)

// budgetSink is a subscription "sub" whose plan charges 1.00 per call
// (meter "calls") under a hard budget of 10.00, and a sink counting it.
type budgetSink struct {
	t          *testing.T
	client     rueidis.Client
	start, end time.Time
	at         time.Time
}

func newBudgetSink(t *testing.T) *budgetSink {
	t.Helper()
	client, _ := testenv.RedisDB(t)
	at := time.Now().UTC()
	b := &budgetSink{t: t, client: client, at: at, start: at.Add(-time.Hour).Truncate(time.Second)}
	b.end = b.start.AddDate(0, 1, 0)
	if _, err := enforcement.New(client).PutSubscription(t.Context(), enforcement.SubscriptionRecord{
		ID: "sub", APIID: "api_1", PlanID: "plan_1", Status: enforcement.SubscriptionActive,
		PeriodStart: b.start, PeriodEnd: b.end, QuotaRequests: -1,
		Meters: []enforcement.MeterSpec{{Slug: "calls", Aggregation: enforcement.MeterCount}},
		Budget: &enforcement.Budget{Amount: decimal.NewFromInt(10), Currency: "USD",
			Charges: []enforcement.BudgetCharge{{Meter: "calls", Model: "per_unit", UnitPrice: decimal.NewFromInt(1)}}},
		Version: 1,
	}); err != nil {
		t.Fatal(err)
	}
	return b
}

// items are admitted calls of "sub" at offsets [from, to).
func (b *budgetSink) items(from, to int64) []item {
	var out []item
	for off := from; off < to; off++ {
		it := meteredItem("sub", off, b.at, 1)
		it.apiID = "api_1"
		out = append(out, it)
	}
	return out
}

// state is the period's calls counted and whether "sub" is blocked (until
// the period's end).
func (b *budgetSink) state() (calls int64, blocked bool) {
	b.t.Helper()
	ctx := b.t.Context()
	calls, err := b.client.Do(ctx, b.client.B().Hget().Key(enforcement.PeriodCounterName("sub", b.start)).Field("m:calls").Build()).AsInt64()
	if err != nil && !rueidis.IsRedisNil(err) {
		b.t.Fatal(err)
	}
	v, err := b.client.Do(ctx, b.client.B().Get().Key(enforcement.BlockName("sub")).Build()).ToString()
	switch {
	case rueidis.IsRedisNil(err):
		return calls, false
	case err != nil:
		b.t.Fatal(err)
	case v != strconv.FormatInt(b.end.Unix(), 10):
		b.t.Fatalf("block = %q; want the period's end", v)
	}
	return calls, true
}

// TestBudgetReplaysDoNotDoubleCount: a batch replayed (by the same sink,
// or a restarted processor) adds nothing to the cost: 6 calls replayed
// twice stay 6.00 under a 10.00 budget, and the 10th call, not the 4th,
// blocks.
func TestBudgetReplaysDoNotDoubleCount(t *testing.T) {
	b := newBudgetSink(t)
	s := newRedisSink(b.client)
	first := b.items(0, 6)
	for i, sink := range []*redisSink{s, s, newRedisSink(b.client)} {
		if _, _, err := sink.apply(t.Context(), first); err != nil {
			t.Fatal(err)
		}
		if calls, blocked := b.state(); calls != 6 || blocked {
			t.Fatalf("after apply %d of the first batch: %d calls, blocked %v; want 6, not blocked", i+1, calls, blocked)
		}
	}
	if _, _, err := s.apply(t.Context(), b.items(6, 9)); err != nil {
		t.Fatal(err)
	}
	if calls, blocked := b.state(); calls != 9 || blocked {
		t.Fatalf("at 9.00: %d calls, blocked %v; want 9, not blocked", calls, blocked)
	}
	if _, _, err := s.apply(t.Context(), b.items(6, 10)); err != nil {
		t.Fatal(err)
	}
	if calls, blocked := b.state(); calls != 10 || !blocked {
		t.Fatalf("at 10.00: %d calls, blocked %v; want 10, blocked", calls, blocked)
	}
}

// TestBudgetCrashBeforeRatingHealsOnReplay: a processor that dies after the
// counting call that reaches the budget, before rating it, leaves the
// subscription unblocked; the replay of the batch, which counts nothing,
// rates and blocks.
func TestBudgetCrashBeforeRatingHealsOnReplay(t *testing.T) {
	b := newBudgetSink(t)
	items := b.items(0, 10)
	// The counting call of apply, alone: what Redis holds after the crash.
	dead := newRedisSink(b.client)
	k := subjectPartition{"sub", 0}
	periods, err := dead.periods(t.Context(), []subjectPartition{k})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := counterArgs(k, items, -1, periods["sub"], dead.meters.meters(periods["sub"]))
	if err != nil {
		t.Fatal(err)
	}
	if r := enforcement.ApplyCounts(t.Context(), b.client, *c)[0]; !r.Applied {
		t.Fatalf("ApplyCounts = %+v; want applied", r)
	}
	if calls, blocked := b.state(); calls != 10 || blocked {
		t.Fatalf("after the crash: %d calls, blocked %v; want 10, not blocked yet", calls, blocked)
	}
	if _, _, err := newRedisSink(b.client).apply(t.Context(), items); err != nil {
		t.Fatal(err)
	}
	if calls, blocked := b.state(); calls != 10 || !blocked {
		t.Fatalf("after the replay: %d calls, blocked %v; want 10, blocked", calls, blocked)
	}
}
