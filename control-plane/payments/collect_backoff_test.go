package payments

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// refusing is a provider that refuses for good to make a customer of the
// organization bad, or one with an email ending in badEmail, as Stripe
// does an invalid email.
type refusing struct {
	*crashing
	bad      string
	badEmail string
	calls    int
}

func (r *refusing) EnsureCustomer(ctx context.Context, in metering.CustomerInput) (metering.CustomerRef, error) {
	r.calls++
	if in.CustomerID == r.bad || (r.badEmail != "" && strings.HasSuffix(in.Email, r.badEmail)) {
		return metering.CustomerRef{}, &metering.ProviderError{Provider: "stripe", Op: "ensure customer",
			Kind: metering.ErrPaymentInvalid, HTTPStatus: 400, Code: "email_invalid", Message: "Invalid email address"}
	}
	return r.crashing.EnsureCustomer(ctx, in)
}

// 200 invoices of a customer the provider refuses do not keep the cycle
// from collecting the others: each is put off, and not asked again
// before its time.
func TestCollectNewNotStarved(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	bad := testenv.Org(t, f.pool, "bad-"+testenv.Suffix())
	prov := &refusing{crashing: f.stripe, bad: bad.String()}
	f.svc.cfg.Providers["stripe"] = prov
	var badSub uuid.UUID
	f.scan(&badSub, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		VALUES ($1, 'bad', $2, $3, $4, $5) RETURNING id`, bad, f.api, f.version, start, start.AddDate(0, 1, 0))
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency, period_start, period_end,
		subtotal, total, amount_due, finalized_at, due_at)
		SELECT $1, $2, $5, 'open', 'BAD-' || g, 'EUR', $3, $4, 1, 1, 1, $3, $4 FROM generate_series(1, 200) g`,
		f.issuer, bad, start.AddDate(0, -2, 0), start.AddDate(0, -1, 0), badSub); err != nil {
		t.Fatal(err)
	}
	good := f.invoice(f.customer("stripe", stripetest.PMSucceeds), "10.00")
	for range 3 {
		_, _ = f.svc.CollectNew(f.ctx, 200)
	}
	if n := f.count(`SELECT count(*) FROM payments WHERE invoice_id = $1`, good); n != 1 {
		t.Errorf("after 3 cycles the good invoice has %d payments; want 1", n)
	}
	if prov.calls != 200 {
		t.Errorf("the provider was asked %d times; want 200, each refused invoice once before its back-off ends", prov.calls)
	}
	f.clock.Advance(time.Hour + time.Second)
	_, _ = f.svc.CollectNew(f.ctx, 200)
	if prov.calls != 400 {
		t.Errorf("after an hour the provider was asked %d times in all; want 400", prov.calls)
	}
	var after time.Time
	f.scan(&after, `SELECT max(collect_after) FROM payment_collect_backoff`)
	if want := f.clock.Now().Add(2 * time.Hour); after.Before(want.Add(-time.Second)) {
		t.Errorf("second back-off ends %s; want two hours later, %s", after, want)
	}
}

// A customer the provider refused is not sent again as it was: the next
// try reads its billing profile, fixed meanwhile.
func TestEnsureCustomerRefusedReadsProfileAgain(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	bill, err := billing.New(billing.Config{Pool: f.pool})
	if err != nil {
		t.Fatal(err)
	}
	f.svc.cfg.Profiles = bill
	prov := &refusing{crashing: f.stripe, badEmail: "@typo"}
	f.svc.cfg.Providers["stripe"] = prov
	cus := testenv.Org(t, f.pool, "cust-"+testenv.Suffix())
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO billing_profiles (organization_id, legal_name, address_line1, city, postal_code, country, email)
		VALUES ($1, 'X', '1 Main St', 'Springfield', '12345', 'US', 'ap@typo')`, cus); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.EnsureCustomer(f.ctx, cus, "stripe"); err == nil {
		t.Fatal("EnsureCustomer with a refused email succeeded")
	}
	if _, err := f.pool.Exec(f.ctx, `UPDATE billing_profiles SET email = 'ap@example.test' WHERE organization_id = $1`, cus); err != nil {
		t.Fatal(err)
	}
	if ref, err := f.svc.EnsureCustomer(f.ctx, cus, "stripe"); err != nil || ref.ID == "" {
		t.Fatalf("EnsureCustomer after the profile was fixed = %+v, %v; want a customer", ref, err)
	}
	var keyNo int
	f.scan(&keyNo, `SELECT key_no FROM payment_customer_requests WHERE customer_id = $1`, cus)
	if keyNo != 2 {
		t.Errorf("key number = %d; want 2, a new key for the new parameters", keyNo)
	}
}
