package payments

import (
	"context"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// refusingMailer refuses (SMTP 550) any message to an address ending in
// refuse, as a relay does for an unknown mailbox, and keeps the others'
// recipients.
type refusingMailer struct {
	mu     sync.Mutex
	refuse string
	sent   []string
}

func (m *refusingMailer) Send(_ context.Context, msg notify.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, to := range msg.To {
		if strings.HasSuffix(to, m.refuse) {
			return &textproto.Error{Code: 550, Msg: "5.1.1 recipient address rejected"}
		}
	}
	m.sent = append(m.sent, strings.Join(msg.To, ","))
	return nil
}

// keptMailer keeps what it sends.
type keptMailer struct {
	mu   sync.Mutex
	sent []notify.Message
}

func (m *keptMailer) Send(_ context.Context, msg notify.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent = append(m.sent, msg)
	return nil
}

// A recipient the relay refuses for good (5xx) is not asked again and
// holds up no other customer's notice; an admin's users.invalid
// placeholder is no recipient.
func TestPaymentNoticeRefusedRecipient(t *testing.T) {
	t.Parallel()
	f := setup(t, "stripe")
	bill, err := billing.New(billing.Config{Pool: f.pool})
	if err != nil {
		t.Fatal(err)
	}
	m := &refusingMailer{refuse: "@typo.example"}
	n := f.svc.Notifier(NotifierConfig{Mailer: m, Profiles: bill})
	addProfile := func(org any, email string) {
		if _, err := f.pool.Exec(f.ctx, `INSERT INTO billing_profiles (organization_id, legal_name, address_line1, city, postal_code, country, email)
			VALUES ($1, 'X', '1 Main St', 'Springfield', '12345', 'US', $2)`, org, email); err != nil {
			t.Fatal(err)
		}
	}
	bad := f.customer("stripe", stripetest.PMDeclined)
	addProfile(bad, "ap@typo.example")
	if _, err := f.svc.Collect(f.ctx, f.invoice(bad, "7.00")); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	good := f.customer("stripe", stripetest.PMDeclined)
	goodEmail := "ap-" + testenv.Suffix() + "@example.test"
	addProfile(good, goodEmail)
	if _, err := f.svc.Collect(f.ctx, f.invoice(good, "8.00")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := n.SendNotices(f.ctx, 100); err != nil {
			t.Fatalf("SendNotices = %v; want a refused recipient skipped", err)
		}
	}
	if len(m.sent) != 1 || m.sent[0] != goodEmail {
		t.Errorf("delivered %v; want only %s, once", m.sent, goodEmail)
	}

	placeholder := f.customer("stripe", stripetest.PMDeclined)
	user := testenv.Suffix()
	if _, err := f.pool.Exec(f.ctx, `WITH u AS (INSERT INTO users (email) VALUES ($1 || '@users.invalid') RETURNING id)
		INSERT INTO memberships (organization_id, user_id, role) SELECT $2, id, 'admin' FROM u`, user, placeholder); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Collect(f.ctx, f.invoice(placeholder, "9.00")); err != nil {
		t.Fatal(err)
	}
	if _, err := n.SendNotices(f.ctx, 100); err != nil {
		t.Fatal(err)
	}
	for _, to := range m.sent {
		if strings.HasSuffix(to, ".invalid") {
			t.Errorf("a notice went to the placeholder %s", to)
		}
	}
}
