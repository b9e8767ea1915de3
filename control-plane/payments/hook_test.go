package payments

import (
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A finalized invoice is collected by the job billing queues in the
// finalizing transaction, without a payments cycle: one with an amount
// due is charged, one with nothing due is marked paid; both announce
// invoice.paid. A job of a transaction rolled back collects nothing.
func TestFinalizedInvoiceCollectedByJob(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	paid := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "12.50")
	zero := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "0")
	rolledBack := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "3.00")
	workers := river.NewWorkers()
	f.svc.RegisterJobs(workers, JobSchedule{})
	jobs := testenv.River(t, f.pool, workers)
	hook := f.svc.BillingHook(jobs)
	tx, err := f.pool.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := hook.InvoicesFinalized(f.ctx, tx, []uuid.UUID{rolledBack}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(f.ctx); err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(f.ctx, f.pool, func(tx pgx.Tx) error { return hook.InvoicesFinalized(f.ctx, tx, []uuid.UUID{paid, zero}) })
	if err != nil {
		t.Fatal(err)
	}
	testenv.StartRiver(t, jobs)
	waitFor(t, "both invoices paid", func() bool {
		return f.invoiceStatus(paid) == "paid" && f.invoiceStatus(zero) == "paid"
	})
	if n := f.hooks.count(EventInvoicePaid); n != 4 {
		t.Errorf("%d invoice.paid announced; want 4 (issuer and customer of each invoice)", n)
	}
	if n := f.count(`SELECT count(*) FROM payments WHERE invoice_id = $1`, rolledBack); n != 0 || f.fake.Creates("payment_intents") != 1 {
		t.Errorf("rolled back finalization: %d payments, %d PaymentIntents in all; want none of its own", n, f.fake.Creates("payment_intents"))
	}
}

// Voiding an invoice in billing while its payment is under way at the
// provider cancels the PaymentIntent there, through billing's hook; so
// does marking one paid by hand. A close billing could not tell (a crash
// after its commit) is found by the payments cycle.
func TestBillingCloseCancelsPayment(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	bill, err := billing.New(billing.Config{Pool: f.pool, Logger: testenv.Logger(t), Publisher: f.hooks, Payments: f.svc.BillingHook(nil)})
	if err != nil {
		t.Fatal(err)
	}
	processing := func() (uuid.UUID, string) {
		inv := f.invoice(f.customer("stripe", stripetest.PMProcessing), "21.00")
		if p, err := f.svc.Collect(f.ctx, inv); err != nil || p.Status != "processing" {
			t.Fatalf("Collect = %s, %v; want processing", p.Status, err)
		}
		return inv, f.stripe.lastResult().ProviderPaymentID
	}
	canceled := func(what string, inv uuid.UUID, pi string) {
		t.Helper()
		if st, err := f.stripe.PaymentStatus(f.ctx, pi); err != nil || st.Status != metering.PaymentCanceled {
			t.Errorf("%s: PaymentIntent = %s, %v; want canceled", what, st.Status, err)
		}
		if p := f.payment(inv); p.Status != "canceled" {
			t.Errorf("%s: payment %s; want canceled", what, p.Status)
		}
	}
	voided, pi := processing()
	if inv, err := bill.Void(f.ctx, f.provider, voided); err != nil || inv.Status != billing.StatusVoid {
		t.Fatalf("Void = %s, %v", inv.Status, err)
	}
	canceled("void", voided, pi)

	byHand, pi2 := processing()
	if _, err := bill.MarkPaid(f.ctx, identity.Actor{Subject: "root", Role: identity.RoleAdmin}, byHand); err != nil {
		t.Fatal(err)
	}
	canceled("marked paid", byHand, pi2)

	lost, pi3 := processing()
	if _, err := f.pool.Exec(f.ctx, `UPDATE invoices SET status = 'uncollectible' WHERE id = $1`, lost); err != nil {
		t.Fatal(err)
	}
	if rep, err := f.svc.RunCycle(f.ctx); rep.Closed != 1 {
		t.Errorf("cycle = %+v, %v; want the payment of the invoice written off closed", rep, err)
	}
	canceled("cycle", lost, pi3)
}

// Callers at once get one customer at the provider, the one recorded; a
// caller after a crash that lost the answer sends the same key and
// parameters (the request committed before the call), even with the
// billing profile changed meanwhile, and gets the same customer; once the
// key's lifetime passed, a new request carries the billing profile
// (billing's, through Profiles).
func TestEnsureCustomerOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	bill, err := billing.New(billing.Config{Pool: f.pool})
	if err != nil {
		t.Fatal(err)
	}
	f.svc.cfg.Profiles = bill
	org := testenvOrg(f)
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref, err := f.svc.EnsureCustomer(f.ctx, org, "stripe")
			if err != nil {
				t.Error(err)
			}
			ids[i] = ref.ID
		}()
	}
	wg.Wait()
	var recorded string
	f.scan(&recorded, `SELECT provider_customer_id FROM payment_customers WHERE customer_id = $1`, org)
	for _, id := range ids {
		if id != recorded {
			t.Errorf("EnsureCustomer = %s; want the recorded %s", id, recorded)
		}
	}
	if n := f.fake.Creates("customers"); n != 1 {
		t.Errorf("%d customers created at Stripe; want 1", n)
	}
	// The record lost, the profile changed: the same request again.
	if _, err := f.pool.Exec(f.ctx, `DELETE FROM payment_customers WHERE customer_id = $1`, org); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO billing_profiles (organization_id, legal_name, address_line1, city, postal_code, country, email)
		VALUES ($1, 'Renamed GmbH', 'Hauptstr. 1', 'Berlin', '10115', 'DE', 'ap@example.test')`, org); err != nil {
		t.Fatal(err)
	}
	ref, err := f.svc.EnsureCustomer(f.ctx, org, "stripe")
	if err != nil || ref.ID != recorded || f.fake.Creates("customers") != 1 {
		t.Errorf("EnsureCustomer after a lost record = %s, %v, %d created; want %s, one created", ref.ID, err, f.fake.Creates("customers"), recorded)
	}
	// A day later the provider has forgotten the key: a new request.
	if _, err := f.pool.Exec(f.ctx, `DELETE FROM payment_customers WHERE customer_id = $1`, org); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(keyLifetime + time.Minute)
	if _, err := f.svc.EnsureCustomer(f.ctx, org, "stripe"); err != nil {
		t.Fatal(err)
	}
	var keyNo int
	var name string
	f.scan(&keyNo, `SELECT key_no FROM payment_customer_requests WHERE customer_id = $1`, org)
	f.scan(&name, `SELECT params->>'name' FROM payment_customer_requests WHERE customer_id = $1`, org)
	if keyNo != 2 || name != "Renamed GmbH" {
		t.Errorf("request after the key's lifetime: key %d, name %q; want 2, the profile's", keyNo, name)
	}
}

// Payment-method events apply in the order Stripe made them: a late
// delivery of an older default changes nothing, an attached method makes
// no default, a detached default is forgotten unless set again since.
func TestPaymentMethodEventsOrdered(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	org := f.customer("stripe", stripetest.PMSucceeds)
	var cus string
	f.scan(&cus, `SELECT provider_customer_id FROM payment_customers WHERE customer_id = $1`, org)
	t0 := start.Add(time.Hour)
	ev := func(id string, typ metering.WebhookEventType, pm string, at time.Time) {
		t.Helper()
		err := f.svc.methodEvent(f.ctx, "stripe", metering.WebhookEvent{ID: id, Type: typ, ProviderCustomerID: cus,
			PaymentMethodID: pm, Created: at, Card: &metering.CardSummary{Brand: "visa", Last4: "4242", ExpMonth: 1, ExpYear: 2030}})
		if err != nil {
			t.Fatal(err)
		}
	}
	def := func() string {
		var pm *string
		f.scan(&pm, `SELECT default_pm_id FROM payment_customers WHERE customer_id = $1`, org)
		if pm == nil {
			return ""
		}
		return *pm
	}
	ev("evt_new", metering.WebhookPaymentMethodDefault, "pm_new", t0.Add(2*time.Second))
	ev("evt_old", metering.WebhookPaymentMethodDefault, "pm_old", t0)
	if got := def(); got != "pm_new" {
		t.Errorf("default after a late older event = %q; want pm_new", got)
	}
	ev("evt_attached", metering.WebhookPaymentMethodAttached, "pm_other", t0.Add(3*time.Second))
	if got := def(); got != "pm_new" {
		t.Errorf("default after another method was attached = %q; want pm_new", got)
	}
	ev("evt_detached_old", metering.WebhookPaymentMethodDetached, "pm_new", t0.Add(time.Second))
	if got := def(); got != "pm_new" {
		t.Errorf("default after an older detach = %q; want pm_new", got)
	}
	ev("evt_detached", metering.WebhookPaymentMethodDetached, "pm_new", t0.Add(4*time.Second))
	if got := def(); got != "" {
		t.Errorf("default after its detach = %q; want none", got)
	}
}

// Against stripe-mock (Stripe's own request validation): the customer
// made from the billing profile through the committed request, then a
// SetupIntent marked as Veil's for it.
func TestEnsureCustomerStripeMock(t *testing.T) {
	t.Parallel()
	mock := testenv.StripeMock(t)
	pool := testenv.Postgres(t)
	sp, err := stripepay.New(stripepay.Config{SecretKey: mock.Key, APIBase: mock.URL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	bill, err := billing.New(billing.Config{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Pool: pool, Logger: testenv.Logger(t), Profiles: bill, Providers: map[string]metering.PaymentProvider{"stripe": sp}})
	if err != nil {
		t.Fatal(err)
	}
	org := testenv.Org(t, pool, "cust-"+testenv.Suffix())
	if _, err := pool.Exec(t.Context(), `INSERT INTO billing_profiles (organization_id, legal_name, address_line1, city, postal_code, country, email, tax_id)
		VALUES ($1, 'Acme GmbH', 'Hauptstr. 1', 'Berlin', '10115', 'DE', 'billing@acme.test', 'DE123456789')`, org); err != nil {
		t.Fatal(err)
	}
	ref, err := svc.EnsureCustomer(t.Context(), org, "stripe")
	if err != nil || ref.ID == "" {
		t.Fatalf("EnsureCustomer = %+v, %v; want a customer", ref, err)
	}
	again, err := svc.EnsureCustomer(t.Context(), org, "stripe")
	if err != nil || again.ID != ref.ID {
		t.Errorf("EnsureCustomer again = %+v, %v; want %s", again, err, ref.ID)
	}
	member := identity.Actor{Subject: "ivy", Role: identity.RoleConsumer, OrgID: org}
	if s, err := svc.SetupPaymentMethod(t.Context(), member, "stripe"); err != nil || s.SetupID == "" || s.ClientSecret == "" {
		t.Errorf("SetupPaymentMethod = %s, %v; want a SetupIntent", s.SetupID, err)
	}
}

// The collection of an invoice whose issuer's provider this control plane
// does not have ends without an error (River would retry it for nothing),
// and collects nothing.
func TestCollectInvoiceProviderMissing(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	inv := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "5.00")
	svc, err := New(Config{Pool: f.pool, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.CollectInvoice(f.ctx, inv); err != nil {
		t.Errorf("CollectInvoice without the provider = %v; want nil", err)
	}
	if n := f.count(`SELECT count(*) FROM payments WHERE invoice_id = $1`, inv); n != 0 {
		t.Errorf("%d payments; want none", n)
	}
}
