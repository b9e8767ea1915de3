package payments

import (
	"bytes"
	"encoding/csv"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
)

var november = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// payoutFixture is an issuer whose November holds payments in EUR and
// USD (one paid in part by credits), a partial refund, a refund of an
// October payment, a lost dispute, and items just outside the month.
type payoutFixture struct {
	*fixture
	cust    uuid.UUID
	want    map[string]PayoutTotal
	inside  map[uuid.UUID]bool
	outside map[uuid.UUID]bool
}

// paid inserts an invoice of total (tax included, credit applied) and its
// payment of the rest, succeeded at (nil: still pending); it returns the
// payment.
func (f *payoutFixture) paid(currency, total, tax, credit string, at *time.Time) uuid.UUID {
	f.t.Helper()
	d := decimal.RequireFromString
	due := d(total).Sub(d(credit))
	var inv, pay uuid.UUID
	f.scan(&inv, `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency, period_start, period_end,
		subtotal, tax, credit_applied, total, amount_due, finalized_at, due_at)
		VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $9, $10, $11, $12, $7, $7) RETURNING id`,
		f.issuer, f.cust, f.sub, "INV-"+testenv.Suffix(), currency, november.AddDate(0, -2, 0), november.AddDate(0, -1, 0),
		d(total).Sub(d(tax)), d(tax), d(credit), d(total), due)
	m, err := metering.MinorUnits(due, currency)
	if err != nil {
		f.t.Fatal(err)
	}
	status := "pending"
	if at != nil {
		status = "succeeded"
	}
	f.scan(&pay, `INSERT INTO payments (invoice_id, issuer_id, customer_id, provider, amount, currency, status, succeeded_at)
		VALUES ($1, $2, $3, 'stripe', $4, $5, $6, $7) RETURNING id`, inv, f.issuer, f.cust, m.Minor, currency, status, at)
	return pay
}

// refund inserts a refund of payment; destination payment_method, or
// credit_balance (no provider id), or external (made in the provider's
// dashboard).
func (f *payoutFixture) refund(payment uuid.UUID, minor int64, status string, at time.Time, destination ...string) uuid.UUID {
	f.t.Helper()
	dest := "payment_method"
	if len(destination) > 0 {
		dest = destination[0]
	}
	var id uuid.UUID
	f.scan(&id, `INSERT INTO payment_refunds (payment_id, invoice_id, amount, currency, actor, idempotency_key, provider_refund_id,
			status, updated_at, succeeded_at, destination, external)
		SELECT id, invoice_id, $2, currency, 'prov', 'veil-refund-' || gen_random_uuid(),
			CASE WHEN $5 = 'credit_balance' THEN NULL ELSE 're_' || gen_random_uuid() END, $3, $4,
			CASE WHEN $3 = 'succeeded' THEN $4::timestamptz END,
			CASE WHEN $5 = 'external' THEN 'payment_method' ELSE $5 END, $5 = 'external'
		FROM payments WHERE id = $1 RETURNING id`, payment, minor, status, at, dest)
	return id
}

func (f *payoutFixture) dispute(payment uuid.UUID, providerID, status string, minor int64, closed time.Time) uuid.UUID {
	f.t.Helper()
	var id uuid.UUID
	f.scan(&id, `INSERT INTO payment_disputes (payment_id, provider_dispute_id, amount, currency, reason, status, opened_at, closed_at,
			lost_at)
		SELECT id, $2, $3, currency, 'fraudulent', $4, $5, $5, CASE WHEN $4 = 'lost' THEN $5::timestamptz END
		FROM payments WHERE id = $1 RETURNING id`,
		payment, providerID, minor, status, closed)
	return id
}

func setupPayouts(t *testing.T) *payoutFixture {
	t.Helper()
	f := &payoutFixture{fixture: setup(t, "stripe"), inside: map[uuid.UUID]bool{}, outside: map[uuid.UUID]bool{}}
	f.cust = f.fixture.customer("stripe", "pm_card_visa")
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO issuer_settings (organization_id, platform_fee_percent) VALUES ($1, 2.50)`, f.issuer); err != nil {
		t.Fatal(err)
	}
	ts := func(s string) *time.Time {
		x, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return &x
	}
	in := func(id uuid.UUID) uuid.UUID { f.inside[id] = true; return id }
	out := func(id uuid.UUID) uuid.UUID { f.outside[id] = true; return id }
	// EUR: 121.00 with 21.00 tax (fee 2.5% of 100.00 = 2.50) at the first
	// instant of the month; two of 10.20 (0.255 each, 0.26 once rounded
	// per payment, where the sum's fee would be 0.51); 30.00 of an invoice
	// of 50.00 with 10.00 tax and 20.00 paid by credits (fee on 24.00 =
	// 0.60).
	p1 := in(f.paid("EUR", "121.00", "21.00", "0", ts("2026-11-01T00:00:00Z")))
	in(f.paid("EUR", "10.20", "0", "0", ts("2026-11-10T12:00:00Z")))
	in(f.paid("EUR", "10.20", "0", "0", ts("2026-11-11T12:00:00Z")))
	in(f.paid("EUR", "50.00", "10.00", "20.00", ts("2026-11-12T12:00:00Z")))
	// USD: 200.00 at the month's last microsecond, then lost in two
	// disputes: 150.00, and 100.00 of which only the 50.00 left counts.
	p4 := in(f.paid("USD", "200.00", "0", "0", ts("2026-11-30T23:59:59.999999Z")))
	in(f.dispute(p4, "=HYPERLINK(\"http://evil\")", "lost", 15000, *ts("2026-11-20T08:00:00Z")))
	in(f.dispute(p4, "dp_more_"+testenv.Suffix(), "lost", 10000, *ts("2026-11-21T08:00:00Z")))
	// Outside: a payment a microsecond before and one at the next month's
	// start, one still pending, a dispute won, one lost in October.
	october := out(f.paid("EUR", "99.00", "0", "0", ts("2026-10-31T23:59:59.999999Z")))
	out(f.paid("EUR", "98.00", "0", "0", ts("2026-12-01T00:00:00Z")))
	out(f.paid("EUR", "97.00", "0", "0", nil))
	out(f.dispute(p1, "dp_won_"+testenv.Suffix(), "won", 12100, *ts("2026-11-21T00:00:00Z")))
	out(f.dispute(october, "dp_oct_"+testenv.Suffix(), "lost", 100, *ts("2026-10-31T23:59:59Z")))
	// Refunds: part of p1 in November; 5.00 of the October payment in
	// November, made in the provider's dashboard (counted); 10.00 of p1 to
	// the credit balance (apart); one pending and one in December (not).
	in(f.refund(p1, 2100, "succeeded", *ts("2026-11-15T00:00:00Z")))
	in(f.refund(october, 500, "succeeded", *ts("2026-11-01T00:00:00Z"), "external"))
	in(f.refund(p1, 1000, "succeeded", *ts("2026-11-16T00:00:00Z"), "credit_balance"))
	out(f.refund(p1, 1000, "pending", *ts("2026-11-16T00:00:00Z")))
	out(f.refund(p1, 700, "succeeded", *ts("2026-12-01T00:00:00Z")))
	d := decimal.RequireFromString
	f.want = map[string]PayoutTotal{
		"EUR": {Currency: "EUR", Payments: 4, Refunds: 2, CreditRefunds: 1, Collected: d("171.40"), Refunded: d("26.00"),
			PlatformFee: d("3.62"), Owed: d("141.78"), RefundedToCredit: d("10.00")},
		"USD": {Currency: "USD", Payments: 1, Disputes: 2, Collected: d("200.00"), DisputesLost: d("200.00"),
			PlatformFee: d("5.00"), Owed: d("-5.00")},
	}
	return f
}

func TestPayoutsMonth(t *testing.T) {
	f := setupPayouts(t)
	got, err := f.svc.Payouts(f.ctx, f.provider, f.issuer, "2026-11")
	if err != nil {
		t.Fatal(err)
	}
	if !got.From.Equal(november) || !got.To.Equal(november.AddDate(0, 1, 0)) || !got.PlatformFeePercent.Equal(decimal.RequireFromString("2.5")) {
		t.Fatalf("Payouts window and fee = %s..%s %s; want November at 2.50%%", got.From, got.To, got.PlatformFeePercent)
	}
	if len(got.Totals) != 2 {
		t.Fatalf("Payouts totals = %+v; want EUR and USD apart", got.Totals)
	}
	for _, tot := range got.Totals {
		w := f.want[tot.Currency]
		if tot.Payments != w.Payments || tot.Refunds != w.Refunds || tot.Disputes != w.Disputes || tot.CreditRefunds != w.CreditRefunds ||
			!tot.RefundedToCredit.Equal(w.RefundedToCredit) || !tot.Collected.Equal(w.Collected) ||
			!tot.Refunded.Equal(w.Refunded) || !tot.DisputesLost.Equal(w.DisputesLost) || !tot.PlatformFee.Equal(w.PlatformFee) ||
			!tot.Owed.Equal(w.Owed) {
			t.Errorf("Payouts total %s = %+v; want %+v", tot.Currency, tot, w)
		}
	}
	seen := map[uuid.UUID]bool{}
	for _, p := range got.Payments {
		seen[p.PaymentID] = true
		if p.InvoiceNumber == "" || p.SucceededAt.Before(november) || p.Provider != "stripe" {
			t.Errorf("payment item %+v does not cite its invoice, time and provider", p)
		}
	}
	for _, r := range got.Refunds {
		seen[r.RefundID] = true
	}
	for _, r := range got.CreditRefunds {
		seen[r.RefundID] = true
	}
	for _, d := range got.DisputesLost {
		seen[d.DisputeID] = true
	}
	if n := len(got.DisputesLost); n != 2 || !got.DisputesLost[1].Amount.Equal(decimal.RequireFromString("50.00")) {
		t.Errorf("disputes lost = %+v; want the second taking the 50.00 left", got.DisputesLost)
	}
	for id := range f.inside {
		if !seen[id] {
			t.Errorf("item %s of November not in the statement", id)
		}
	}
	for id := range f.outside {
		if seen[id] {
			t.Errorf("item %s outside November in the statement", id)
		}
	}
	empty, err := f.svc.Payouts(f.ctx, identity.System, f.issuer, "2026-09")
	if err != nil || len(empty.Totals) != 0 || len(empty.Payments) != 0 {
		t.Errorf("Payouts(2026-09) = %+v, %v; want an empty statement", empty, err)
	}
}

// TestPayoutsCSV: the export parses back, RFC 4180, to the items and the
// same totals, and a provider's id that reads as a formula is quoted.
func TestPayoutsCSV(t *testing.T) {
	f := setupPayouts(t)
	p, err := f.svc.Payouts(f.ctx, f.provider, f.issuer, "2026-11")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := p.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "\r\n") || !strings.Contains(buf.String(), `"'=HYPERLINK(""http://evil"")"`) {
		t.Fatalf("CSV is not CRLF or leaves a formula as it is:\n%s", buf.String())
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	unquote := func(s string) decimal.Decimal {
		d, err := decimal.NewFromString(strings.TrimPrefix(s, "'"))
		if err != nil {
			t.Fatalf("CSV amount %q: %v", s, err)
		}
		return d
	}
	sums := map[string]*PayoutTotal{}
	totals := map[string]PayoutTotal{}
	for _, r := range rows[1:] {
		cur := r[col["currency"]]
		if sums[cur] == nil {
			sums[cur] = &PayoutTotal{Currency: cur}
		}
		s := sums[cur]
		switch r[col["kind"]] {
		case "payment":
			s.Collected = s.Collected.Add(unquote(r[col["amount"]]))
			s.PlatformFee = s.PlatformFee.Add(unquote(r[col["platform_fee"]]))
		case "refund":
			s.Refunded = s.Refunded.Add(unquote(r[col["amount"]]))
		case "dispute_lost":
			s.DisputesLost = s.DisputesLost.Add(unquote(r[col["amount"]]))
		case "credit_refund":
			s.RefundedToCredit = s.RefundedToCredit.Add(unquote(r[col["amount"]]))
		case "total":
			totals[cur] = PayoutTotal{Collected: unquote(r[col["collected"]]), Refunded: unquote(r[col["refunded"]]),
				DisputesLost: unquote(r[col["disputes_lost"]]), PlatformFee: unquote(r[col["platform_fee"]]), Owed: unquote(r[col["owed"]]),
				RefundedToCredit: unquote(r[col["refunded_to_credit"]])}
		default:
			t.Fatalf("CSV row kind %q", r[col["kind"]])
		}
	}
	for cur, w := range f.want {
		s, tot := sums[cur], totals[cur]
		owed := s.Collected.Sub(s.Refunded).Sub(s.DisputesLost).Sub(s.PlatformFee)
		if s == nil || !s.Collected.Equal(w.Collected) || !s.Refunded.Equal(w.Refunded) || !s.DisputesLost.Equal(w.DisputesLost) ||
			!s.PlatformFee.Equal(w.PlatformFee) || !owed.Equal(w.Owed) || !tot.Owed.Equal(w.Owed) || !tot.Collected.Equal(w.Collected) ||
			!tot.PlatformFee.Equal(w.PlatformFee) || !tot.Refunded.Equal(w.Refunded) || !tot.DisputesLost.Equal(w.DisputesLost) ||
			!s.RefundedToCredit.Equal(w.RefundedToCredit) || !tot.RefundedToCredit.Equal(w.RefundedToCredit) {
			t.Errorf("CSV %s: items sum to %+v (owed %s), total row %+v; want %+v", cur, s, owed, tot, w)
		}
	}
}

func TestPayoutsAuthorization(t *testing.T) {
	f := setup(t, "stripe")
	other := testenv.Org(t, f.pool, "other-"+testenv.Suffix())
	cases := []struct {
		name  string
		actor identity.Actor
		org   uuid.UUID
		want  error
	}{
		{"another org's provider", identity.Actor{Subject: "o", Role: identity.RoleProvider, OrgID: other}, f.issuer, ErrNotFound},
		{"another org's consumer", identity.Actor{Subject: "o", Role: identity.RoleConsumer, OrgID: other}, f.issuer, ErrNotFound},
		{"no organization", identity.Actor{Subject: "n", Role: identity.RoleProvider}, f.issuer, ErrNotFound},
		{"the issuer's consumer", identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: f.issuer}, f.issuer, identity.ErrForbidden},
		{"the issuer's provider", f.provider, f.issuer, nil},
		{"an admin", identity.Actor{Subject: "a", Role: identity.RoleAdmin}, f.issuer, nil},
		{"an admin, no such org", identity.Actor{Subject: "a", Role: identity.RoleAdmin}, uuid.New(), ErrNotFound},
	}
	for _, c := range cases {
		_, err := f.svc.Payouts(f.ctx, c.actor, c.org, "2026-11")
		if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Errorf("Payouts as %s = %v; want %v", c.name, err, c.want)
		}
	}
	for _, m := range []string{"2026-13", "2026-1", "26-11", "2026-11-01", "1999-12", "", "2026-11\n"} {
		if _, err := f.svc.Payouts(f.ctx, f.provider, f.issuer, m); !errors.Is(err, ErrInvalid) {
			t.Errorf("Payouts(month %q) = %v; want ErrInvalid", m, err)
		}
	}
}

// TestPlatformFee: an invoice paid entirely by its payment is charged the
// revenue statement's fee, (total − tax) × percent, rounded once; a part
// paid by credits is not charged.
func TestPlatformFee(t *testing.T) {
	d := decimal.RequireFromString
	eur, jpy := metering.Currency{Code: "EUR", Exponent: 2}, metering.Currency{Code: "JPY", Exponent: 0}
	cases := []struct {
		amount, total, tax, pct string
		cur                     metering.Currency
		want                    string
	}{
		{"121.00", "121.00", "21.00", "2.5", eur, "2.50"},
		{"10.20", "10.20", "0", "2.5", eur, "0.26"},
		{"10.10", "10.10", "0", "2.5", eur, "0.25"},
		{"30.00", "50.00", "10.00", "2.5", eur, "0.60"},
		{"33.33", "100.00", "0", "3", eur, "1.00"},
		{"1050", "1050", "50", "12.35", jpy, "124"},
		{"5.00", "5.00", "5.00", "10", eur, "0.00"},
		{"5.00", "5.00", "0", "0", eur, "0.00"},
		{"7.00", "7.00", "0", "100", eur, "7.00"},
	}
	for _, c := range cases {
		got := PlatformFee(d(c.amount), d(c.total), d(c.tax), d(c.pct), c.cur)
		if !got.Equal(d(c.want)) {
			t.Errorf("PlatformFee(%s of %s, tax %s, %s%%) = %s; want %s", c.amount, c.total, c.tax, c.pct, got, c.want)
		}
	}
}

// Against the real stripe-mock: a payment collected through Stripe, its
// success reported by a webhook event, and a partial refund through
// Stripe land in the statement of the month they happened in, as the
// service recorded them.
func TestPayoutsThroughStripeMock(t *testing.T) {
	f := setup(t, "stripe")
	mock := testenv.StripeMock(t)
	sp, err := stripepay.New(stripepay.Config{SecretKey: mock.Key, APIBase: mock.URL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	f.stripe.PaymentProvider = sp
	// Refunds are stamped by the database's clock: the service's is now.
	f.clock.Set(time.Now().UTC())
	month := f.clock.Now().Format(MonthLayout)
	cust := f.customer("stripe", "pm_card_visa")
	inv := f.invoice(cust, "40.00")
	if _, err := f.svc.Collect(f.ctx, inv); err != nil {
		t.Fatalf("Collect through stripe-mock = %v", err)
	}
	var pi, cus string
	f.scan(&pi, `SELECT a.provider_payment_id FROM payment_attempts a JOIN payments p ON p.id = a.payment_id
		WHERE p.invoice_id = $1 AND a.provider_payment_id IS NOT NULL`, inv)
	f.scan(&cus, `SELECT provider_customer_id FROM payment_attempts WHERE provider_payment_id = $1`, pi)
	err = f.svc.ApplyEvent(f.ctx, "stripe", metering.WebhookEvent{ID: "evt_" + testenv.Suffix(), Type: metering.WebhookPaymentSucceeded,
		Provider: "stripe", ProviderPaymentID: pi, InvoiceID: inv.String(), Amount: metering.Money{Minor: 4000, Currency: "EUR"},
		ProviderCustomerID: cus})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Refund(f.ctx, f.provider, inv, decimal.RequireFromString("15.00"), "goodwill"); err != nil {
		t.Fatalf("Refund through stripe-mock = %v", err)
	}
	// An invoice the issuer's provider marks paid by hand while its
	// attempt at stripe-mock is open: the money went to the issuer.
	byHand := f.invoice(f.customer("stripe", "pm_card_visa"), "10.00")
	if _, err := f.svc.Collect(f.ctx, byHand); err != nil {
		t.Fatalf("Collect through stripe-mock = %v", err)
	}
	if _, err := f.svc.MarkPaidManually(f.ctx, f.provider, byHand, "transfer to the issuer"); err != nil {
		t.Fatalf("MarkPaidManually with stripe-mock = %v", err)
	}
	p, err := f.svc.Payouts(f.ctx, f.provider, f.issuer, month)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Payments) != 1 || p.Payments[0].InvoiceID != inv || len(p.Refunds) != 1 || p.Refunds[0].ProviderRefundID == "" ||
		len(p.Totals) != 1 || !p.Totals[0].Collected.Equal(decimal.RequireFromString("40")) ||
		!p.Totals[0].Refunded.Equal(decimal.RequireFromString("15")) || !p.Totals[0].Owed.Equal(decimal.RequireFromString("25")) {
		t.Errorf("Payouts(%s) after stripe-mock = payments %+v, refunds %+v, totals %+v; want 40.00 collected, 15.00 refunded, 25.00 owed",
			month, p.Payments, p.Refunds, p.Totals)
	}
	if len(p.PaidToIssuer) != 1 || p.PaidToIssuer[0].InvoiceID != byHand || p.PaidToIssuer[0].Provider != "manual" ||
		len(p.Totals) != 1 || !p.Totals[0].PaidToIssuer.Equal(decimal.RequireFromString("10")) {
		t.Errorf("Payouts(%s) paid to the issuer = %+v, totals %+v; want the 10.00 marked paid by hand, manual, not collected",
			month, p.PaidToIssuer, p.Totals)
	}
}
