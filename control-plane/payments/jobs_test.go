package payments

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// The cycle marks an invoice with nothing due paid, collects an open
// invoice without a payment once (a second run charges nothing more),
// creates the provider's customer of a customer that has none, and makes
// a retry once it is due.
func TestRunCycle(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	zero := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "0")
	paid := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "12.50")
	declined := f.invoice(f.customer("stripe", stripetest.PMDeclined), "7.00")
	fresh := testenvOrg(f)
	unknown := f.invoice(fresh, "3.00")

	rep, err := f.svc.RunCycle(f.ctx)
	if rep.Zero != 1 {
		t.Errorf("first cycle = %+v, %v; want one invoice with nothing due paid", rep, err)
	}
	for inv, want := range map[string]string{zero.String(): "paid", paid.String(): "paid", declined.String(): "open"} {
		var st string
		f.scan(&st, `SELECT status::text FROM invoices WHERE id = $1`, inv)
		if st != want {
			t.Errorf("invoice %s after the cycle = %s; want %s", inv, st, want)
		}
	}
	if n := f.count(`SELECT count(*) FROM audit_log WHERE action = 'invoice.mark_paid' AND target_id = $1`, zero.String()); n != 1 {
		t.Errorf("%d audit entries of the zero invoice paid; want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM payment_customers WHERE customer_id = $1 AND provider = 'stripe'`, fresh); n != 1 {
		t.Errorf("customer without a Stripe customer: %d recorded after the cycle; want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM payments WHERE invoice_id = $1`, unknown); n != 1 {
		t.Errorf("invoice of a customer new to Stripe: %d payments; want 1", n)
	}
	intents := f.fake.Creates("payment_intents")

	if rep, err := f.svc.RunCycle(f.ctx); rep.Zero != 0 || rep.Collected != 0 || rep.Retried != 0 {
		t.Errorf("second cycle = %+v, %v; want nothing to do", rep, err)
	}
	if n := f.fake.Creates("payment_intents"); n != intents {
		t.Errorf("second cycle created %d PaymentIntents; want none", n-intents)
	}

	f.clock.Advance(24*time.Hour + time.Minute)
	rep, _ = f.svc.RunCycle(f.ctx)
	if rep.Retried < 1 {
		t.Errorf("cycle a day later = %+v; want the declined payment retried", rep)
	}
	if p := f.payment(declined); p.Attempts != 2 {
		t.Errorf("declined payment after its retry: %d attempts; want 2", p.Attempts)
	}
}

// testenvOrg makes a consumer organization with a subscription (the
// fixture's sub from then on) and no customer at any provider.
func testenvOrg(f *fixture) uuid.UUID {
	f.t.Helper()
	c := testenv.Org(f.t, f.pool, "cust-"+testenv.Suffix())
	f.scan(&f.sub, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		VALUES ($1, 'cust', $2, $3, $4, $5) RETURNING id`, c, f.api, f.version, start, start.AddDate(0, 1, 0))
	return c
}
