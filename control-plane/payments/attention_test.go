package payments

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// A payment its provider can never take is announced to both
// organizations in its transaction, counted, shown with its reason, and
// emailed once to the customer (with the bank transfer's details) and to
// the issuer.
func TestNeedsAttentionAnnounced(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	bill, err := billing.New(billing.Config{Pool: f.pool})
	if err != nil {
		t.Fatal(err)
	}
	cus := f.customer("stripe", stripetest.PMSucceeds)
	emails := map[uuid.UUID]string{cus: "ap-" + testenv.Suffix() + "@example.test", f.issuer: "ops-" + testenv.Suffix() + "@example.test"}
	for org, email := range emails {
		if _, err := f.pool.Exec(f.ctx, `INSERT INTO billing_profiles (organization_id, legal_name, address_line1, city, postal_code, country, email)
			VALUES ($1, 'X', '1 Main St', 'Springfield', '12345', 'US', $2)`, org, email); err != nil {
			t.Fatal(err)
		}
	}
	inv := f.invoice(cus, "0.30")
	p, err := f.svc.Collect(f.ctx, inv)
	if err != nil || p.Status != "needs_attention" || !strings.HasPrefix(p.AttentionReason, "amount_too_small") {
		t.Fatalf("Collect = %+v, %v; want needs_attention for amount_too_small", p, err)
	}
	if n := f.hooks.count(EventPaymentNeedsAttention); n != 2 {
		t.Errorf("%s announced %d times; want to the issuer and the customer", EventPaymentNeedsAttention, n)
	}
	if got := f.svc.needsAttentionCounter("amount_too_small").Get(); got != 1 {
		t.Errorf("needs attention counter = %d; want 1", got)
	}
	if got := f.payment(inv).AttentionReason; !strings.HasPrefix(got, "amount_too_small") {
		t.Errorf("Get's attention reason = %q", got)
	}
	m := &keptMailer{}
	n := f.svc.Notifier(NotifierConfig{Mailer: m, Profiles: bill})
	for range 2 {
		if _, err := n.SendNotices(f.ctx, 100); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.sent) != 2 {
		t.Fatalf("%d emails; want one to the customer and one to the issuer", len(m.sent))
	}
	for _, msg := range m.sent {
		switch msg.To[0] {
		case emails[cus]:
			if !strings.Contains(msg.Text, "DE89370400440532013000") || strings.Contains(msg.Text, "payment/retry") {
				t.Errorf("customer's email lacks the transfer's details or offers pay now:\n%s", msg.Text)
			}
		case emails[f.issuer]:
			if !strings.Contains(msg.Text, "collect it by hand or write it off") || !strings.Contains(msg.Text, "mark-paid") {
				t.Errorf("issuer's email:\n%s", msg.Text)
			}
		default:
			t.Errorf("email to %v", msg.To)
		}
	}
}

// A payment the provider cannot take for another reason than a too small
// amount dunns its subscription as one failed for good; a too small one
// does not.
func TestNeedsAttentionDunned(t *testing.T) {
	t.Parallel()
	for reason, amount := range map[string]string{"amount_too_small": "0.30", "amount_not_representable": "5.125"} {
		t.Run(reason, func(t *testing.T) {
			t.Parallel()
			f := dunSetup(t)
			currency := map[string]string{"0.30": "USD", "5.125": "KWD"}[amount]
			var inv uuid.UUID
			now := f.Clock.Now()
			if err := f.Pool.QueryRow(f.Ctx, `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency,
				period_start, period_end, subtotal, total, amount_due, finalized_at, due_at)
				VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $8, $8, $7, $7) RETURNING id`,
				f.Provider.OrgID, f.Consumer.OrgID, f.Sub.ID, "INV-"+testenv.Suffix(), currency, now.AddDate(0, -1, 0), now,
				decimal.RequireFromString(amount)).Scan(&inv); err != nil {
				t.Fatal(err)
			}
			p, err := f.svc.Collect(f.Ctx, inv)
			if err != nil || p.Status != "needs_attention" || !strings.HasPrefix(p.AttentionReason, reason) {
				t.Fatalf("Collect = %+v, %v; want needs_attention for %s", p, err, reason)
			}
			want := subscriptions.StatusPastDue
			if reason == "amount_too_small" {
				want = subscriptions.StatusActive
			}
			if got := f.status(); got != want {
				t.Errorf("subscription = %s; want %s", got, want)
			}
		})
	}
}

// failingPublisher refuses to announce anything of one invoice.
type failingPublisher struct {
	recorder
	bad uuid.UUID
}

func (p *failingPublisher) Publish(ctx context.Context, tx pgx.Tx, org uuid.UUID, event string, data any) error {
	if inv, ok := data.(invoiceData); ok && inv.ID == p.bad {
		return errors.New("announce: refused")
	}
	return p.recorder.Publish(ctx, tx, org, event, data)
}

// An invoice with nothing due that cannot be paid holds up none behind it.
func TestPayZeroInvoicesGoesOn(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	cus := f.customer("stripe", stripetest.PMSucceeds)
	zero := func(finalized time.Time) uuid.UUID {
		var id uuid.UUID
		f.scan(&id, `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency, period_start, period_end,
			subtotal, total, amount_due, finalized_at, due_at)
			VALUES ($1, $2, $3, 'open', $4, 'EUR', $5, $6, 0, 0, 0, $7, $6) RETURNING id`,
			f.issuer, cus, f.sub, "INV-"+testenv.Suffix(), start.AddDate(0, -1, 0), start, finalized)
		return id
	}
	bad, good := zero(start), zero(start.Add(time.Minute))
	f.svc.cfg.Publisher = &failingPublisher{bad: bad}
	n, err := f.svc.PayZeroInvoices(f.ctx, 100)
	if err == nil || n < 1 {
		t.Errorf("PayZeroInvoices = %d, %v; want the good invoice paid and the bad one's error", n, err)
	}
	if st := f.invoiceStatus(good); st != "paid" {
		t.Errorf("invoice behind a failing one is %s; want paid", st)
	}
	if st := f.invoiceStatus(bad); st != "open" {
		t.Errorf("failing invoice is %s; want open", st)
	}
}
