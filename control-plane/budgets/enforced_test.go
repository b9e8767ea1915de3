package budgets_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/budgets"
)

// movePlan moves the subscription to a new version of its plan priced in
// currency, as a plan change to another currency leaves it.
func (f *fixture) movePlan(sub uuid.UUID, currency string) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.ctx, `WITH v AS (
			INSERT INTO plan_versions (plan_id, version, type, currency, created_by)
			SELECT plan_id, (SELECT max(version) + 1 FROM plan_versions w WHERE w.plan_id = plan_versions.plan_id), type, $2, created_by
			FROM plan_versions WHERE id = (SELECT plan_version_id FROM subscriptions WHERE id = $1) RETURNING id)
		UPDATE subscriptions SET plan_version_id = (SELECT id FROM v) WHERE id = $1`, sub, currency); err != nil {
		f.t.Fatal(err)
	}
}

// TestHardBudgetEnforcedFlag: a hard subscription budget answers whether
// the gateway enforces it, false with the reason once the subscription's
// plan moved to another currency (the gateway then leaves it out of the
// record); a soft one answers nothing.
func TestHardBudgetEnforcedFlag(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	hard := f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("100"), Hard: true})
	if hard.Enforced == nil || !*hard.Enforced || hard.NotEnforcedReason != "" {
		t.Fatalf("created hard budget: enforced %v, reason %q; want true, none", hard.Enforced, hard.NotEnforcedReason)
	}
	f.movePlan(sub, "EUR")
	const why = "the budget is in USD, the plan version in EUR"
	got, err := f.svc.Get(f.ctx, c.actor, hard.ID)
	if err != nil || got.Enforced == nil || *got.Enforced || got.NotEnforcedReason != why {
		t.Fatalf("after the plan moved to EUR: Get = %+v, %v; want enforced false, reason %q", got, err, why)
	}
	list, _, err := f.svc.List(f.ctx, c.actor, c.orgID, "", 10)
	if err != nil || len(list) != 1 || list[0].Enforced == nil || *list[0].Enforced || list[0].NotEnforcedReason != why {
		t.Fatalf("List = %+v, %v; want the budget with enforced false, reason %q", list, err, why)
	}
	soft := f.budget(c, budgets.Input{Amount: amount("50"), Currency: "USD"})
	if soft.Enforced != nil || soft.NotEnforcedReason != "" {
		t.Errorf("an organization-wide soft budget: enforced %v, reason %q; want neither", soft.Enforced, soft.NotEnforcedReason)
	}
}

// TestUnenforceableHardBudgetRefused: no write leaves a hard budget the
// gateway could not enforce. A change that keeps a budget hard after its
// plan moved to another currency, one that makes it hard then, one that
// changes its currency and a hard budget under a plan priced in a currency
// Veil no longer prices in are ErrCurrencyMismatch and change nothing;
// making it soft is accepted, and answers no enforced flag.
func TestUnenforceableHardBudgetRefused(t *testing.T) {
	f := newFixture(t)
	c := f.consumer()
	sub := f.subscribe(c, "USD")
	b := f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("100"), Hard: true})
	f.movePlan(sub, "EUR")
	syncs := f.records.calls()
	for _, tc := range []struct {
		name string
		in   budgets.Update
	}{
		{"the amount of a hard budget", budgets.Update{Amount: amount("200")}},
		{"hard restated", budgets.Update{Amount: amount("100"), Hard: ptr(true)}},
		{"the currency", budgets.Update{Amount: amount("100"), Currency: "EUR", Hard: ptr(false)}},
	} {
		if _, err := f.svc.Change(f.ctx, c.actor, b.ID, tc.in); !errors.Is(err, budgets.ErrCurrencyMismatch) {
			t.Errorf("Change of %s after the plan moved to EUR = %v; want ErrCurrencyMismatch", tc.name, err)
		}
	}
	soft, err := f.svc.Change(f.ctx, c.actor, b.ID, budgets.Update{Amount: amount("100"), Hard: ptr(false), Currency: "USD"})
	if err != nil || soft.Hard || soft.Enforced != nil {
		t.Fatalf("made soft = %+v, %v; want soft, no enforced flag", soft, err)
	}
	if _, err := f.svc.Change(f.ctx, c.actor, b.ID, budgets.Update{Amount: amount("100"), Hard: ptr(true)}); !errors.Is(err, budgets.ErrCurrencyMismatch) {
		t.Errorf("made hard again = %v; want ErrCurrencyMismatch", err)
	}
	if got, err := f.svc.Get(f.ctx, c.actor, b.ID); err != nil || got.Hard || !got.Amount.Equal(*amount("100")) || got.Currency != "USD" {
		t.Errorf("after the refusals: %+v, %v; want soft, 100 USD", got, err)
	}
	if got := f.records.calls(); got != syncs+1 {
		t.Errorf("record syncs = %d; want %d (made soft only)", got, syncs+1)
	}

	unpriced := f.subscribe(c, "XTS")
	if _, err := f.svc.Create(f.ctx, c.actor, budgets.Input{SubscriptionID: &unpriced, Amount: amount("5"), Hard: true}); !errors.Is(err, budgets.ErrCurrencyMismatch) {
		t.Errorf("a hard budget under a plan in a currency not priced = %v; want ErrCurrencyMismatch", err)
	}
	if _, err := f.svc.Create(f.ctx, c.actor, budgets.Input{SubscriptionID: &unpriced, Amount: amount("5")}); err != nil {
		t.Errorf("a soft budget there = %v; want it created", err)
	}
}

// syncBuffer is a log destination tests read while the service writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// take returns what was written and empties the buffer.
func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

// TestUnenforcedGauge: each evaluation sets veil_controlplane_budgets_unenforced
// to the hard budgets of live subscriptions the gateway cannot enforce
// (the plan moved to another currency, or to one Veil no longer prices
// in) and logs each once at warn; enforced ones, soft ones and a canceled
// subscription's do not count, and one made soft drops out.
func TestUnenforcedGauge(t *testing.T) {
	f := newFixture(t)
	var logs syncBuffer
	svc, err := budgets.New(budgets.Config{
		Pool: f.pool, Publisher: f.hooks, Records: f.records, Metrics: f.metrics, Now: f.clock.Now,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	c := f.consumer()
	budget := func(currency string, hard bool) (uuid.UUID, budgets.Budget) {
		sub := f.subscribe(c, currency)
		return sub, f.budget(c, budgets.Input{SubscriptionID: &sub, Amount: amount("10"), Hard: hard})
	}
	moved, movedBudget := budget("USD", true)
	unpriced, _ := budget("USD", true)
	budget("USD", true) // enforced
	softSub, _ := budget("USD", false)
	canceled, _ := budget("USD", true)
	f.movePlan(moved, "EUR")
	f.movePlan(unpriced, "XTS")
	f.movePlan(softSub, "EUR")
	f.movePlan(canceled, "EUR")
	if _, err := f.pool.Exec(f.ctx, `UPDATE subscriptions SET status = 'canceled', canceled_at = now() WHERE id = $1`, canceled); err != nil {
		t.Fatal(err)
	}

	check := func(want int) {
		t.Helper()
		rep, err := svc.Evaluate(f.ctx)
		if err != nil || rep.Unenforced != want {
			t.Fatalf("Evaluate = %+v, %v; want %d unenforced", rep, err, want)
		}
		var prom bytes.Buffer
		f.metrics.WritePrometheus(&prom)
		if line := fmt.Sprintf("veil_controlplane_budgets_unenforced %d\n", want); !strings.Contains(prom.String(), line) {
			t.Errorf("metrics = %s; want %q", prom.String(), line)
		}
		if got := strings.Count(logs.take(), `"msg":"hard budget not enforced at the gateway"`); got != want {
			t.Errorf("warnings of the run = %d; want %d", got, want)
		}
	}
	check(2)
	check(2) // every run tells them again, once each
	if _, err := svc.Change(f.ctx, c.actor, movedBudget.ID, budgets.Update{Amount: amount("10"), Hard: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	check(1)
}
