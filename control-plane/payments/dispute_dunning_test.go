package payments

import (
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
)

// A lost dispute of a paid invoice makes its subscription past_due for
// the issuer's grace, then suspended; the invoice being paid does not end
// it, an admin's resume does; the issuer is emailed once.
func TestDisputeLostDunned(t *testing.T) {
	t.Parallel()
	f := dunSetup(t)
	f.exhaust()
	f.succeed()
	if got := f.status(); got != subscriptions.StatusActive {
		t.Fatalf("subscription once paid = %s; want active", got)
	}
	var pi string
	if err := f.Pool.QueryRow(f.Ctx, `SELECT provider_payment_id FROM payment_attempts WHERE payment_id = $1 AND status = 'succeeded'`,
		f.pay.ID).Scan(&pi); err != nil {
		t.Fatal(err)
	}
	lostAt := f.Clock.Now()
	if err := f.svc.ApplyEvent(f.Ctx, "stripe", metering.WebhookEvent{ID: "evt_lost_" + testenv.Suffix(), Type: metering.WebhookDisputeClosed,
		Provider: "stripe", ProviderPaymentID: pi, ProviderDisputeID: "dp_" + testenv.Suffix(),
		Amount: metering.Money{Minor: 3000, Currency: "USD"}, Status: "lost"}); err != nil {
		t.Fatal(err)
	}
	grace := lostAt.Add(3 * 24 * time.Hour)
	if r := f.record(); r.Status != enforcement.SubscriptionPastDue || r.UnpaidInvoiceID != f.inv.String() || !r.SuspendAt.Equal(grace) {
		t.Fatalf("record after the dispute was lost = %s, invoice %s, suspend at %s; want past_due for %s until %s",
			r.Status, r.UnpaidInvoiceID, r.SuspendAt, f.inv, grace)
	}
	f.escalate(grace.Add(-time.Minute), 0, 0)
	f.escalate(grace, 1, 0)
	f.escalate(grace.Add(time.Hour), 0, 0)
	if got := f.status(); got != subscriptions.StatusSuspended {
		t.Errorf("subscription after the grace = %s; want suspended", got)
	}

	bill, err := billing.New(billing.Config{Pool: f.Pool})
	if err != nil {
		t.Fatal(err)
	}
	email := "ops-" + testenv.Suffix() + "@example.test"
	if _, err := f.Pool.Exec(f.Ctx, `INSERT INTO billing_profiles (organization_id, legal_name, address_line1, city, postal_code, country, email)
		VALUES ($1, 'X', '1 Main St', 'Springfield', '12345', 'US', $2)`, f.Provider.OrgID, email); err != nil {
		t.Fatal(err)
	}
	m := &keptMailer{}
	n := f.svc.Notifier(NotifierConfig{Mailer: m, Profiles: bill})
	for range 2 {
		if _, err := n.SendNotices(f.Ctx, 100); err != nil {
			t.Fatal(err)
		}
	}
	var toIssuer int
	for _, msg := range m.sent {
		if msg.To[0] == email && strings.Contains(msg.Subject, "disputed and lost") {
			toIssuer++
		}
	}
	if toIssuer != 1 {
		t.Errorf("%d dispute emails to the issuer; want 1", toIssuer)
	}

	if _, err := f.Svc.SetStatus(f.Ctx, identity.Actor{Subject: "root", Role: identity.RoleAdmin}, f.Sub.ID, subscriptions.StatusActive, "paid by transfer"); err != nil {
		t.Fatalf("admin resume: %v", err)
	}
	f.escalate(grace.Add(2*time.Hour), 0, 0)
	if got := f.status(); got != subscriptions.StatusActive {
		t.Errorf("subscription after the admin's resume = %s; want active", got)
	}
}
