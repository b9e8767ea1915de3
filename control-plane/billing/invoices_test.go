package billing

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// invoiceFixture is a billing service on a fresh database with an issuer
// whose API has a plan version of a 10.00 EUR base fee.
type invoiceFixture struct {
	t        *testing.T
	ctx      context.Context
	pool     *pgxpool.Pool
	svc      *Service
	clock    *testenv.Clock
	issuer   uuid.UUID
	api      uuid.UUID
	version  uuid.UUID
	provider identity.Actor
	hooks    *failingPublisher
}

// failingPublisher records what is announced, and fails while fail is set.
type failingPublisher struct {
	mu     sync.Mutex
	fail   bool
	events []string
}

func (p *failingPublisher) Publish(_ context.Context, _ pgx.Tx, _ uuid.UUID, event string, _ any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return errors.New("publisher down")
	}
	p.events = append(p.events, event)
	return nil
}

var periodStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func invoiceSetup(t *testing.T) *invoiceFixture {
	t.Helper()
	pool := testenv.Postgres(t)
	clock := testenv.NewClock(periodStart.AddDate(0, 1, 1))
	hooks := &failingPublisher{}
	svc, err := New(Config{Pool: pool, Logger: testenv.Logger(t), Now: clock.Now, Publisher: hooks})
	if err != nil {
		t.Fatal(err)
	}
	f := &invoiceFixture{t: t, ctx: t.Context(), pool: pool, svc: svc, clock: clock, hooks: hooks}
	// Every invoice a test leaves is explained when it ends: none may
	// differ from what its cites compute.
	t.Cleanup(func() {
		differ, err := svc.ExplainAll(context.WithoutCancel(t.Context()))
		if err != nil || len(differ) > 0 {
			t.Errorf("ExplainAll = %d differing, %v; want none", len(differ), err)
		}
	})
	f.issuer = testenv.Org(t, pool, "issuer-"+testenv.Suffix())
	f.provider = identity.Actor{Subject: "prov", Role: identity.RoleProvider, OrgID: f.issuer}
	slug := "api-" + testenv.Suffix()
	f.exec(`INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, $2, $2, 'https://upstream.example', 'v1', 'prov')`, f.issuer, slug)
	f.scan(&f.api, `SELECT id FROM apis WHERE slug = $1`, slug)
	var plan uuid.UUID
	f.scan(&plan, `INSERT INTO plans (api_id, name, slug) VALUES ($1, 'Pro', 'pro') RETURNING id`, f.api)
	f.scan(&f.version, `INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, net_days, created_by)
		VALUES ($1, 1, 'subscription', 'EUR', 10, 30, 'prov') RETURNING id`, plan)
	return f
}

func (f *invoiceFixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.pool.Exec(f.ctx, sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

func (f *invoiceFixture) scan(dst any, sql string, args ...any) {
	f.t.Helper()
	if err := f.pool.QueryRow(f.ctx, sql, args...).Scan(dst); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

// closedPeriod makes a customer with a subscription since periodStart and
// its first month closed with an empty usage snapshot, as the close
// leaves it; it returns the customer and the subscription.
func (f *invoiceFixture) closedPeriod() (customer, sub uuid.UUID) {
	f.t.Helper()
	customer = testenv.Org(f.t, f.pool, "cust-"+testenv.Suffix())
	end := periodStart.AddDate(0, 1, 0)
	f.scan(&sub, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		VALUES ($1, 'cust', $2, $3, $4, $5) RETURNING id`, customer, f.api, f.version, end, end.AddDate(0, 1, 0))
	f.exec(`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
		VALUES ($1, $2, 'active', $3, 'cust')`, sub, f.version, periodStart)
	var period uuid.UUID
	f.scan(&period, `INSERT INTO billing_periods (subscription_id, period_start, period_end, state, closed_at)
		VALUES ($1, $2, $3, 'closed', $3) RETURNING id`, sub, periodStart, end)
	f.exec(`INSERT INTO usage_snapshots (billing_period_id) VALUES ($1)`, period)
	return customer, sub
}

func (f *invoiceFixture) invoiceOf(sub uuid.UUID) uuid.UUID {
	f.t.Helper()
	var id uuid.UUID
	f.scan(&id, `SELECT id FROM invoices WHERE subscription_id = $1`, sub)
	return id
}

// explainZero checks that explain rebuilds the invoice exactly: every
// invoice a test builds goes through it.
func explainZero(t *testing.T, svc *Service, id uuid.UUID) {
	t.Helper()
	ex, err := svc.Explain(t.Context(), id)
	if err != nil {
		t.Fatalf("Explain(%s): %v", id, err)
	}
	if len(ex.Diffs) != 0 {
		t.Fatalf("Explain(%s) differs: %+v", id, ex.Diffs)
	}
}

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// Twenty finalizations of one issuer at once take the numbers 1 to 20 of
// the year, without a gap or a duplicate; one that fails after taking its
// number gives it back, so the next takes 21.
func TestFinalizeNumbersGaplessUnderConcurrency(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	const n = 20
	subs := make([]uuid.UUID, n+1)
	for i := range subs {
		_, subs[i] = f.closedPeriod()
	}
	if built, err := f.svc.BuildDrafts(f.ctx, 100); err != nil || built != n+1 {
		t.Fatalf("BuildDrafts = %d, %v; want %d", built, err, n+1)
	}
	if built, err := f.svc.BuildDrafts(f.ctx, 100); err != nil || built != 0 {
		t.Fatalf("BuildDrafts again = %d, %v; want 0", built, err)
	}
	var wg sync.WaitGroup
	numbers := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inv, err := f.svc.Finalize(f.ctx, f.provider, f.invoiceOf(subs[i]))
			errs[i] = err
			if err == nil {
				numbers[i] = *inv.Number
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Finalize %d: %v", i, err)
		}
	}
	sort.Strings(numbers)
	for i, got := range numbers {
		if want := fmt.Sprintf("INV-2026-%06d", i+1); got != want {
			t.Fatalf("numbers[%d] = %s; want %s (all: %v)", i, got, want, numbers)
		}
	}
	last := f.invoiceOf(subs[n])
	f.hooks.fail = true
	if _, err := f.svc.Finalize(f.ctx, f.provider, last); err == nil {
		t.Fatal("Finalize with the publisher down = nil; want its error")
	}
	f.hooks.fail = false
	inv, err := f.svc.Finalize(f.ctx, f.provider, last)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("INV-2026-%06d", n+1); *inv.Number != want {
		t.Fatalf("number after a rolled back finalization = %s; want %s", *inv.Number, want)
	}
	if !inv.Total.Equal(dec("10")) || inv.Status != StatusOpen || !inv.DueAt.Equal(inv.FinalizedAt.Add(30*24*time.Hour)) {
		t.Fatalf("finalized = total %s, status %s, due %v after %v; want 10 open due 30 days later", inv.Total, inv.Status, inv.DueAt, inv.FinalizedAt)
	}
	if _, err := f.svc.Finalize(f.ctx, f.provider, last); !errors.Is(err, ErrInvoiceState) {
		t.Fatalf("Finalize twice = %v; want ErrInvoiceState", err)
	}
	for _, s := range subs {
		explainZero(t, f.svc, f.invoiceOf(s))
	}
}

// Goodwill credit pays an invoice up to its total, the rest stays; voiding
// the invoice refunds what it used. Every movement is in the ledger with
// the balance it left, and a balance never goes below zero.
func TestCreditAppliedAndRefunded(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer, sub := f.closedPeriod()
	if _, err := f.svc.GrantCredit(f.ctx, f.provider, GrantInput{CustomerID: customer, Currency: "EUR", Amount: dec("15"), Reason: "sorry"}); err != nil {
		t.Fatal(err)
	}
	other := testenv.Org(t, f.pool, "other-"+testenv.Suffix())
	if _, err := f.svc.GrantCredit(f.ctx, f.provider, GrantInput{CustomerID: other, Currency: "EUR", Amount: dec("1"), Reason: "x"}); !errors.Is(err, ErrCustomerNotFound) {
		t.Fatalf("GrantCredit to a stranger = %v; want ErrCustomerNotFound", err)
	}
	if _, err := f.svc.BuildDrafts(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	id := f.invoiceOf(sub)
	draft, err := f.svc.Invoice(f.ctx, f.provider, id)
	if err != nil {
		t.Fatal(err)
	}
	if draft.Status != StatusDraft || !draft.CreditApplied.Equal(dec("10")) || !draft.AmountDue.IsZero() {
		t.Fatalf("draft = %s, credit %s, due %s; want draft, 10, 0", draft.Status, draft.CreditApplied, draft.AmountDue)
	}
	explainZero(t, f.svc, id)
	inv, err := f.svc.Finalize(f.ctx, identity.System, id)
	if err != nil {
		t.Fatal(err)
	}
	explainZero(t, f.svc, id)
	if _, err := f.svc.Void(f.ctx, identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: customer}, id); !errors.Is(err, identity.ErrForbidden) {
		t.Fatalf("Void by the customer = %v; want ErrForbidden", err)
	}
	if _, err := f.svc.Void(f.ctx, f.provider, inv.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Void(f.ctx, f.provider, inv.ID); !errors.Is(err, ErrInvoiceState) {
		t.Fatalf("Void twice = %v; want ErrInvoiceState", err)
	}
	ledger, err := f.svc.CreditLedger(f.ctx, f.provider, f.issuer, customer, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ledger {
		got = append(got, fmt.Sprintf("%s %s -> %s", e.Kind, e.Amount.StringFixed(2), e.BalanceAfter.StringFixed(2)))
	}
	want := []string{"goodwill 15.00 -> 15.00", "applied -10.00 -> 5.00", "refund 10.00 -> 15.00"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ledger = %v; want %v", got, want)
	}
	if f.hooks.events[0] != EventInvoiceFinalized || f.hooks.events[len(f.hooks.events)-1] != EventInvoiceVoided {
		t.Fatalf("events = %v; want invoice.finalized first, invoice.voided last", f.hooks.events)
	}
}

// A correction of an amount is pending until the next invoice bills it,
// once; a job cycle run twice builds one invoice per period and
// finalizes it once.
func TestAdjustmentBilledOnceByTheCycle(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer, sub := f.closedPeriod()
	consumer := identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: customer}
	in := AdjustmentInput{Amount: new(dec("2.50")), Currency: new("EUR"), Reason: "missed calls"}
	if _, err := f.svc.CreateAdjustment(f.ctx, consumer, sub, in); !errors.Is(err, identity.ErrForbidden) {
		t.Fatalf("CreateAdjustment by the subscriber = %v; want ErrForbidden", err)
	}
	if _, err := f.svc.CreateAdjustment(f.ctx, f.provider, sub, AdjustmentInput{Amount: new(dec("2.50")), Currency: new("USD"), Reason: "x"}); err == nil {
		t.Fatal("CreateAdjustment in another currency = nil; want a validation error")
	}
	adj, err := f.svc.CreateAdjustment(f.ctx, f.provider, sub, in)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := f.svc.RunCycle(f.ctx); err != nil {
			t.Fatal(err)
		}
	}
	var count int
	f.scan(&count, `SELECT count(*) FROM invoices WHERE subscription_id = $1`, sub)
	if count != 1 {
		t.Fatalf("invoices of the period = %d; want 1", count)
	}
	inv, err := f.svc.Invoice(f.ctx, consumer, f.invoiceOf(sub))
	if err != nil {
		t.Fatal(err)
	}
	if inv.Status != StatusOpen || !inv.Total.Equal(dec("12.50")) {
		t.Fatalf("invoice = %s, total %s; want open 12.50", inv.Status, inv.Total)
	}
	adjs, err := f.svc.Adjustments(f.ctx, consumer, sub)
	if err != nil {
		t.Fatal(err)
	}
	if len(adjs) != 1 || adjs[0].ID != adj.ID || adjs[0].InvoiceID == nil || *adjs[0].InvoiceID != inv.ID {
		t.Fatalf("adjustments = %+v; want %s billed on %s", adjs, adj.ID, inv.ID)
	}
	explainZero(t, f.svc, inv.ID)
	if _, err := f.svc.Invoice(f.ctx, identity.Actor{Subject: "x", Role: identity.RoleConsumer, OrgID: uuid.New()}, inv.ID); !errors.Is(err, ErrInvoiceNotFound) {
		t.Fatalf("Invoice by a stranger = %v; want ErrInvoiceNotFound", err)
	}
	f.clock.Advance(31 * 24 * time.Hour)
	if n, err := f.svc.MarkOverdue(f.ctx, 10); err != nil || n != 1 {
		t.Fatalf("MarkOverdue = %d, %v; want 1", n, err)
	}
	if n, err := f.svc.MarkOverdue(f.ctx, 10); err != nil || n != 0 {
		t.Fatalf("MarkOverdue again = %d, %v; want 0", n, err)
	}
}

// Explain finds a draft line changed behind the service's back, names it
// and prints it beside the recomputed one; the recomputation puts it right.
func TestExplainShowsADifference(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	_, sub := f.closedPeriod()
	if _, err := f.svc.BuildDrafts(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	id := f.invoiceOf(sub)
	f.exec(`UPDATE invoice_lines SET amount = 9.99 WHERE invoice_id = $1 AND position = 1`, id)
	ex, err := f.svc.Explain(f.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Diffs) == 0 || ex.Diffs[0].Position != 1 {
		t.Fatalf("Explain of a changed line = %+v; want a difference at line 1", ex.Diffs)
	}
	var out strings.Builder
	if err := ex.Write(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "9.99") || !strings.Contains(out.String(), "10.00") || !strings.Contains(out.String(), "differences: ") {
		t.Fatalf("Write = %s; want the stored 9.99 beside the recomputed 10.00 and the differences", out.String())
	}
	if err := f.svc.RecomputeDraft(f.ctx, id); err != nil {
		t.Fatal(err)
	}
	explainZero(t, f.svc, id)
}

// period closes another period of sub, with an empty usage snapshot.
func (f *invoiceFixture) period(sub uuid.UUID, start, end time.Time, trial bool) uuid.UUID {
	f.t.Helper()
	var id uuid.UUID
	f.scan(&id, `INSERT INTO billing_periods (subscription_id, period_start, period_end, trial, state, closed_at)
		VALUES ($1, $2, $3, $4, 'closed', $3) RETURNING id`, sub, start, end, trial)
	f.exec(`INSERT INTO usage_snapshots (billing_period_id) VALUES ($1)`, id)
	return id
}

func (f *invoiceFixture) invoiceOfPeriod(period uuid.UUID) uuid.UUID {
	f.t.Helper()
	var id uuid.UUID
	f.scan(&id, `SELECT id FROM invoices WHERE billing_period_id = $1`, period)
	return id
}

// A promotion redeemed once discounts the first invoice finalized and no
// other, though both drafts showed it: finalizing recomputes, and counts
// the period applied. Periods are finalized in order.
func TestPromotionOnceCountedAtFinalize(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer, sub := f.closedPeriod()
	second := f.period(sub, periodStart.AddDate(0, 1, 0), periodStart.AddDate(0, 2, 0), false)
	f.clock.Set(periodStart.AddDate(0, 2, 1))
	var promo uuid.UUID
	f.scan(&promo, `INSERT INTO promotions (organization_id, code, kind, value, duration, created_by)
		VALUES ($1, 'WELCOME20', 'percent_off', 20, 'once', 'prov') RETURNING id`, f.issuer)
	f.exec(`INSERT INTO promotion_redemptions (promotion_id, subscription_id, organization_id, redeemed_by, redeemed_at)
		VALUES ($1, $2, $3, 'cust', $4)`, promo, sub, customer, periodStart)
	if n, err := f.svc.BuildDrafts(f.ctx, 10); err != nil || n != 2 {
		t.Fatalf("BuildDrafts = %d, %v; want 2", n, err)
	}
	firstID, secondID := f.invoiceOf(sub), f.invoiceOfPeriod(second)
	if firstID == secondID {
		f.scan(&firstID, `SELECT id FROM invoices WHERE subscription_id = $1 AND id <> $2`, sub, secondID)
	}
	d, err := f.svc.Invoice(f.ctx, f.provider, secondID)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Total.Equal(dec("8")) {
		t.Fatalf("second draft total = %s; want 8 (the promotion is still unused)", d.Total)
	}
	if _, err := f.svc.Finalize(f.ctx, f.provider, secondID); !errors.Is(err, ErrEarlierDraft) {
		t.Fatalf("Finalize of the later period first = %v; want ErrEarlierDraft", err)
	}
	first, err := f.svc.Finalize(f.ctx, f.provider, firstID)
	if err != nil {
		t.Fatal(err)
	}
	later, err := f.svc.Finalize(f.ctx, f.provider, secondID)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Total.Equal(dec("8")) || !first.Discount.Equal(dec("2")) || !later.Total.Equal(dec("10")) || !later.Discount.IsZero() {
		t.Fatalf("totals = %s (discount %s), %s (discount %s); want 8 (2), 10 (0)", first.Total, first.Discount, later.Total, later.Discount)
	}
	var applied int
	f.scan(&applied, `SELECT periods_applied FROM promotion_redemptions WHERE promotion_id = $1`, promo)
	if applied != 1 {
		t.Fatalf("periods_applied = %d; want 1", applied)
	}
	explainZero(t, f.svc, firstID)
	explainZero(t, f.svc, secondID)
}

// A trial period's invoice charges nothing, uses no credit and leaves the
// pending adjustments for the first charged invoice.
func TestTrialInvoiceChargesNothing(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer := testenv.Org(t, f.pool, "cust-"+testenv.Suffix())
	var sub uuid.UUID
	end := periodStart.AddDate(0, 1, 0)
	f.scan(&sub, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status, trial_ends_at,
			current_period_start, current_period_end)
		VALUES ($1, 'cust', $2, $3, 'active', $4, $4, $5) RETURNING id`, customer, f.api, f.version, end, end.AddDate(0, 1, 0))
	f.exec(`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
		VALUES ($1, $2, 'trialing', $3, 'cust')`, sub, f.version, periodStart)
	period := f.period(sub, periodStart, end, true)
	if _, err := f.svc.GrantCredit(f.ctx, f.provider, GrantInput{CustomerID: customer, Currency: "EUR", Amount: dec("5"), Reason: "welcome"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.CreateAdjustment(f.ctx, f.provider, sub, AdjustmentInput{Amount: new(dec("3")), Currency: new("EUR"), Reason: "setup"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	inv, err := f.svc.Invoice(f.ctx, f.provider, f.invoiceOfPeriod(period))
	if err != nil {
		t.Fatal(err)
	}
	if inv.Status != StatusOpen || !inv.Total.IsZero() || !inv.CreditApplied.IsZero() {
		t.Fatalf("trial invoice = %s, total %s, credit %s; want open, 0, 0", inv.Status, inv.Total, inv.CreditApplied)
	}
	adjs, err := f.svc.Adjustments(f.ctx, f.provider, sub)
	if err != nil {
		t.Fatal(err)
	}
	if len(adjs) != 1 || adjs[0].InvoiceID != nil {
		t.Fatalf("adjustments after the trial invoice = %+v; want one, pending", adjs)
	}
	explainZero(t, f.svc, inv.ID)
}

// A trial that ends inside a period bills the base fee from its end only,
// prorated by the second: 10 EUR × 21 of January's 31 days = 6.77.
func TestTrialEndingMidPeriodProratesBaseFee(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer := testenv.Org(t, f.pool, "cust-"+testenv.Suffix())
	var sub uuid.UUID
	end, trialEnd := periodStart.AddDate(0, 1, 0), periodStart.AddDate(0, 0, 10)
	f.scan(&sub, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status, trial_ends_at,
			current_period_start, current_period_end)
		VALUES ($1, 'cust', $2, $3, 'active', $4, $5, $6) RETURNING id`, customer, f.api, f.version, trialEnd, end, end.AddDate(0, 1, 0))
	f.exec(`INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
		VALUES ($1, $2, 'trialing', $3, 'cust'), ($1, $2, 'active', $4, 'system')`, sub, f.version, periodStart, trialEnd)
	period := f.period(sub, periodStart, end, false)
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	inv, err := f.svc.Invoice(f.ctx, f.provider, f.invoiceOfPeriod(period))
	if err != nil {
		t.Fatal(err)
	}
	if !inv.Total.Equal(dec("6.77")) || len(inv.Lines) != 1 || inv.Lines[0].Kind != "base_fee" {
		t.Fatalf("invoice = total %s, lines %+v; want one base fee line of 6.77", inv.Total, inv.Lines)
	}
	explainZero(t, f.svc, inv.ID)
}

// Hostile input to a goodwill grant is refused field by field, and only
// the issuer's providers may grant.
func TestGrantCreditRefused(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer, _ := f.closedPeriod()
	ok := GrantInput{CustomerID: customer, Currency: "EUR", Amount: dec("1"), Reason: "r"}
	for name, c := range map[string]func(*GrantInput){
		"negative":         func(in *GrantInput) { in.Amount = dec("-1") },
		"zero":             func(in *GrantInput) { in.Amount = decimal.Zero },
		"below minor unit": func(in *GrantInput) { in.Amount = dec("0.001") },
		"huge":             func(in *GrantInput) { in.Amount = dec("1e15") },
		"currency":         func(in *GrantInput) { in.Currency = "eur" },
		"no reason":        func(in *GrantInput) { in.Reason = "" },
		"long reason":      func(in *GrantInput) { in.Reason = strings.Repeat("x", 1001) },
		"no customer":      func(in *GrantInput) { in.CustomerID = uuid.Nil },
	} {
		in := ok
		c(&in)
		if _, err := f.svc.GrantCredit(f.ctx, f.provider, in); err == nil {
			t.Errorf("GrantCredit %s = nil; want a validation error", name)
		}
	}
	other := identity.Actor{Subject: "p2", Role: identity.RoleProvider, OrgID: uuid.New()}
	if _, err := f.svc.GrantCredit(f.ctx, other, ok); !errors.Is(err, ErrCustomerNotFound) {
		t.Fatalf("GrantCredit by another provider = %v; want ErrCustomerNotFound", err)
	}
	bal, err := f.svc.CreditBalances(f.ctx, identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: customer}, uuid.Nil, uuid.Nil)
	if err != nil || len(bal) != 0 {
		t.Fatalf("balances after refusals = %v, %v; want none", bal, err)
	}
}

// A correction of a meter's quantity for an invoiced period is priced on
// top of what the period billed, its tiers continuing (80 calls billed at
// 0.01, 50 more: 20 at 0.01 and 30 at 0.005 = 0.35), on the next invoice;
// one that would take the period below zero is refused.
func TestQuantityCorrectionContinuesTiers(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	var meter, charge uuid.UUID
	f.scan(&meter, `INSERT INTO meters (api_id, slug, aggregation) VALUES ($1, 'calls', 'count') RETURNING id`, f.api)
	f.scan(&charge, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model) VALUES ($1, $2, 'graduated') RETURNING id`, f.version, meter)
	f.exec(`INSERT INTO charge_tiers (charge_id, position, up_to, unit_price) VALUES ($1, 1, 100, 0.01), ($1, 2, NULL, 0.005)`, charge)
	_, sub := f.closedPeriod()
	var first uuid.UUID
	f.scan(&first, `SELECT id FROM billing_periods WHERE subscription_id = $1`, sub)
	f.exec(`INSERT INTO usage_snapshot_lines (snapshot_id, plan_version_id, segment_start, segment_end, meter_slug, quantity)
		SELECT id, $2, $3, $4, 'calls', 80 FROM usage_snapshots WHERE billing_period_id = $1`, first, f.version, periodStart, periodStart.AddDate(0, 1, 0))
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	inv, err := f.svc.Invoice(f.ctx, f.provider, f.invoiceOfPeriod(first))
	if err != nil {
		t.Fatal(err)
	}
	if !inv.Total.Equal(dec("10.80")) {
		t.Fatalf("first invoice total = %s; want 10.80", inv.Total)
	}
	if _, err := f.svc.CreateAdjustment(f.ctx, f.provider, sub, AdjustmentInput{
		BillingPeriodID: &first, Meter: new("calls"), Quantity: new(dec("-81")), Reason: "too many",
	}); !errors.Is(err, ErrBelowZero) {
		t.Fatalf("a correction below zero = %v; want ErrBelowZero", err)
	}
	if _, err := f.svc.CreateAdjustment(f.ctx, f.provider, sub, AdjustmentInput{
		BillingPeriodID: &first, Meter: new("nope"), Quantity: new(dec("1")), Reason: "x",
	}); err == nil {
		t.Fatal("a correction of an unknown meter = nil; want a validation error")
	}
	if _, err := f.svc.CreateAdjustment(f.ctx, f.provider, sub, AdjustmentInput{
		BillingPeriodID: &first, Meter: new("calls"), Quantity: new(dec("50")), Reason: "missed calls",
	}); err != nil {
		t.Fatal(err)
	}
	second := f.period(sub, periodStart.AddDate(0, 1, 0), periodStart.AddDate(0, 2, 0), false)
	f.clock.Set(periodStart.AddDate(0, 2, 1))
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	next, err := f.svc.Invoice(f.ctx, f.provider, f.invoiceOfPeriod(second))
	if err != nil {
		t.Fatal(err)
	}
	var adj *Line
	for i, l := range next.Lines {
		if l.Kind == "adjustment" {
			adj = &next.Lines[i]
		}
	}
	if adj == nil || !adj.Amount.Equal(dec("0.35")) || !next.Total.Equal(dec("10.35")) {
		t.Fatalf("next invoice = total %s, adjustment line %+v; want 10.35 with an adjustment of 0.35", next.Total, adj)
	}
	explainZero(t, f.svc, inv.ID)
	explainZero(t, f.svc, next.ID)
}

// Two issuers' first invoices of a year are both INV-2026-000001: a
// provider finds its own by number, an admin is told it is ambiguous.
func TestInvoiceByNumberPerIssuer(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	_, sub := f.closedPeriod()
	first := *f
	first.issuer = testenv.Org(t, f.pool, "issuer2-"+testenv.Suffix())
	first.provider = identity.Actor{Subject: "prov2", Role: identity.RoleProvider, OrgID: first.issuer}
	slug := "api2-" + testenv.Suffix()
	f.scan(&first.api, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, $2, $2, 'https://upstream.example', 'v1', 'prov') RETURNING id`, first.issuer, slug)
	var plan uuid.UUID
	f.scan(&plan, `INSERT INTO plans (api_id, name, slug) VALUES ($1, 'Pro', 'pro') RETURNING id`, first.api)
	f.scan(&first.version, `INSERT INTO plan_versions (plan_id, version, type, currency, base_fee, created_by)
		VALUES ($1, 1, 'subscription', 'EUR', 5, 'prov') RETURNING id`, plan)
	_, sub2 := first.closedPeriod()
	if _, err := f.svc.RunCycle(f.ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		actor identity.Actor
		sub   uuid.UUID
	}{{f.provider, sub}, {first.provider, sub2}} {
		inv, err := f.svc.InvoiceByNumber(f.ctx, c.actor, "INV-2026-000001")
		if err != nil || inv.SubscriptionID != c.sub {
			t.Fatalf("InvoiceByNumber by %s = %v, %v; want the invoice of %s", c.actor.Subject, inv.SubscriptionID, err, c.sub)
		}
		explainZero(t, f.svc, inv.ID)
	}
	if _, err := f.svc.InvoiceByNumber(f.ctx, identity.Actor{Subject: "root", Role: identity.RoleAdmin}, "INV-2026-000001"); !errors.Is(err, ErrAmbiguousNumber) {
		t.Fatalf("InvoiceByNumber by an admin = %v; want ErrAmbiguousNumber", err)
	}
}

// Concurrent movements of one balance (grants, and a finalization that
// uses credit) are ordered by the balance's row lock: the ledger's
// balances follow its amounts one by one and end at the balance.
func TestCreditLedgerUnderConcurrency(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer, sub := f.closedPeriod()
	if _, err := f.svc.BuildDrafts(f.ctx, 10); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 21)
	for range 20 {
		wg.Go(func() {
			_, err := f.svc.GrantCredit(f.ctx, f.provider, GrantInput{CustomerID: customer, Currency: "EUR", Amount: dec("1.00"), Reason: "r"})
			errs <- err
		})
	}
	wg.Go(func() {
		_, err := f.svc.Finalize(f.ctx, f.provider, f.invoiceOf(sub))
		errs <- err
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ledger, err := f.svc.CreditLedger(f.ctx, f.provider, f.issuer, customer, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	run := decimal.Zero
	for _, e := range ledger {
		run = run.Add(e.Amount)
		if !e.BalanceAfter.Equal(run) || run.IsNegative() {
			t.Fatalf("ledger entry %d: %s leaves %s; the entries before sum to %s", e.ID, e.Amount, e.BalanceAfter, run)
		}
	}
	bal, err := f.svc.CreditBalances(f.ctx, f.provider, uuid.Nil, customer)
	if err != nil || len(bal) != 1 || !bal[0].Balance.Equal(run) {
		t.Fatalf("balances = %v, %v; want one of %s", bal, err, run)
	}
	explainZero(t, f.svc, f.invoiceOf(sub))
}

// An admin grants credit in the name of an issuer it names.
func TestGrantCreditByAdminNamesTheIssuer(t *testing.T) {
	t.Parallel()
	f := invoiceSetup(t)
	customer, _ := f.closedPeriod()
	admin := identity.Actor{Subject: "root", Role: identity.RoleAdmin}
	in := GrantInput{CustomerID: customer, Currency: "EUR", Amount: dec("2.00"), Reason: "outage"}
	if _, err := f.svc.GrantCredit(f.ctx, admin, in); err == nil {
		t.Fatal("GrantCredit by an admin without issuer_id = nil; want a validation error")
	}
	in.IssuerID = f.issuer
	e, err := f.svc.GrantCredit(f.ctx, admin, in)
	if err != nil || !e.BalanceAfter.Equal(dec("2")) || e.Actor != "root" || e.Kind != CreditGoodwill {
		t.Fatalf("GrantCredit by an admin = %+v, %v; want goodwill 2.00 by root", e, err)
	}
}
