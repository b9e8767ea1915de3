package payments

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// The customer is emailed once at each failed attempt (what failed, the
// amount, the invoice, the next attempt, how to pay: the invoice's link,
// a card, the bank transfer), when its subscription is made past_due
// (with the suspension date) and suspended, at its billing email; a
// payment that needs the customer's action goes to its admins when it
// has no billing email (an off-session payment the bank wants confirmed
// fails, and its notice asks for the customer's action). Running again
// sends nothing more.
func TestPaymentNotices(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	mp := testenv.Mailpit(t)
	mailer, err := notify.NewSMTP(notify.SMTPConfig{Addr: mp.SMTPAddr(), From: "billing@veil.test", TLS: notify.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	bill, err := billing.New(billing.Config{Pool: f.pool})
	if err != nil {
		t.Fatal(err)
	}
	n := f.svc.Notifier(NotifierConfig{Mailer: mailer, Profiles: bill, PublicURL: "https://veil.example.com/"})
	send := func(want int) {
		t.Helper()
		if got, err := n.SendNotices(f.ctx, 100); err != nil || got != want {
			t.Fatalf("SendNotices = %d, %v; want %d", got, err, want)
		}
	}

	declined := f.customer("stripe", stripetest.PMDeclined)
	email := "ap-" + testenv.Suffix() + "@example.test"
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO billing_profiles (organization_id, legal_name, address_line1, city, postal_code, country, email)
		VALUES ($1, 'Globex Corp', '1 Main St', 'Springfield', '12345', 'US', $2)`, declined, email); err != nil {
		t.Fatal(err)
	}
	inv := f.invoice(declined, "7.00")
	var number string
	f.scan(&number, `SELECT number FROM invoices WHERE id = $1`, inv)
	if p, err := f.svc.Collect(f.ctx, inv); err != nil || p.Status != "pending" {
		t.Fatalf("Collect = %s, %v; want a failed attempt, the next one pending", p.Status, err)
	}
	send(1)
	send(0)
	m := mp.WaitMessages(t, email, 1, 10*time.Second)[0]
	for _, want := range []string{"EUR 7.00", number, "attempt 1", "We will try again on 3 March 2026",
		"https://veil.example.com/v1/invoices/" + inv.String(), "https://veil.example.com/v1/invoices/" + inv.String() + "/payment/retry",
		"payment-methods/setup", "DE89370400440532013000"} {
		if !strings.Contains(m.Subject+"\n"+m.Text, want) {
			t.Errorf("failed attempt notice %q\n%s\nwants %q", m.Subject, m.Text, want)
		}
	}

	now := f.clock.Now()
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO subscription_dunning (subscription_id, invoice_id, past_due_at, suspend_at)
		VALUES ($1, $2, $3, $4)`, f.sub, inv, now, now.Add(72*time.Hour)); err != nil {
		t.Fatal(err)
	}
	send(1)
	if _, err := f.pool.Exec(f.ctx, `UPDATE subscription_dunning SET suspended_at = $2 WHERE subscription_id = $1`, f.sub, now.Add(72*time.Hour)); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(72 * time.Hour)
	send(1)
	send(0)
	msgs := mp.WaitMessages(t, email, 3, 10*time.Second)
	if !strings.Contains(msgs[1].Text, "suspended on 5 March 2026 09:00 UTC") || !strings.Contains(msgs[1].Subject, "past due") {
		t.Errorf("past_due notice %q\n%s\nwants the suspension date", msgs[1].Subject, msgs[1].Text)
	}
	if !strings.Contains(msgs[2].Subject, "suspended") || !strings.Contains(msgs[2].Text, "402") {
		t.Errorf("suspended notice %q\n%s", msgs[2].Subject, msgs[2].Text)
	}

	action := f.customer("stripe", stripetest.PMRequiresAction)
	admin := "admin-" + testenv.Suffix() + "@example.test"
	var user uuid.UUID
	f.scan(&user, `INSERT INTO users (email) VALUES ($1) RETURNING id`, admin)
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'admin')`, action, user); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Collect(f.ctx, f.invoice(action, "4.00")); err != nil {
		t.Fatal(err)
	}
	send(1)
	send(0)
	if m := mp.WaitMessages(t, admin, 1, 10*time.Second)[0]; !strings.Contains(m.Subject, "confirmation") || !strings.Contains(m.Text, "EUR 4.00") {
		t.Errorf("requires_action notice %q\n%s", m.Subject, m.Text)
	}
}
