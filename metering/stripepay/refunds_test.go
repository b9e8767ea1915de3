package stripepay_test

import (
	"testing"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
	"github.com/veil-platform/veil/metering/stripepay"
	"github.com/veil-platform/veil/metering/stripepay/stripetest"
)

// A refund carries Veil's refund id, and the listing of a payment's
// refunds returns it, with those made in the dashboard (no id): that is
// how a refund whose answer was lost is found again.
func TestStripeRefundCarriesVeilID(t *testing.T) {
	p, fake, _ := setup(t)
	cus := fake.AddCustomer(stripetest.PMSucceeds)
	paid, err := p.Collect(t.Context(), collect(cus, "", "veil-inv-l", eur))
	if err != nil {
		t.Fatal(err)
	}
	part := metering.Money{Minor: 1000, Currency: "EUR"}
	rf, err := p.Refund(t.Context(), metering.RefundInput{ProviderPaymentID: paid.ProviderPaymentID, Amount: part,
		RefundID: "rf-1", IdempotencyKey: "veil-refund-rf-1"})
	if err != nil || rf.RefundID != "rf-1" {
		t.Fatalf("Refund = %+v, %v; want it to carry rf-1", rf, err)
	}
	fake.AddDashboardRefund(paid.ProviderPaymentID, 500)
	list, err := p.ListRefunds(t.Context(), paid.ProviderPaymentID)
	if err != nil || len(list) != 2 {
		t.Fatalf("ListRefunds = %+v, %v; want 2", list, err)
	}
	if list[0].RefundID != "rf-1" || list[0].ProviderRefundID != rf.ProviderRefundID || list[0].Amount != part {
		t.Errorf("listed %+v; want Veil's refund %s of %v", list[0], rf.ProviderRefundID, part)
	}
	if list[1].RefundID != "" || list[1].Amount.Minor != 500 || list[1].Status != metering.RefundSucceeded {
		t.Errorf("listed %+v; want the dashboard's refund of 500, without a Veil id", list[1])
	}
	got, err := p.PaymentStatus(t.Context(), paid.ProviderPaymentID)
	if err != nil || got.ProviderCustomerID != cus {
		t.Errorf("PaymentStatus = %+v, %v; want the customer %s", got, err, cus)
	}
}

// stripe-mock accepts the refund's metadata and the listing's parameters.
func TestStripeMockRefundList(t *testing.T) {
	mock := testenv.StripeMock(t)
	p, err := stripepay.New(stripepay.Config{SecretKey: mock.Key, APIBase: mock.URL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	rf, err := p.Refund(t.Context(), metering.RefundInput{ProviderPaymentID: "pi_123", Amount: metering.Money{Minor: 100, Currency: "EUR"},
		RefundID: "rf-" + testenv.Suffix(), Reason: "goodwill", IdempotencyKey: "veil-refund-" + testenv.Suffix()})
	if err != nil || rf.ProviderRefundID == "" {
		t.Fatalf("Refund = %+v, %v; want a refund", rf, err)
	}
	if _, err := p.ListRefunds(t.Context(), "pi_123"); err != nil {
		t.Fatalf("ListRefunds = %v", err)
	}
}

// A refund event carries Veil's refund id back; a dispute's update is
// its own type.
func TestStripeWebhookRefundIDAndDisputeUpdate(t *testing.T) {
	p := webhookProvider(t)
	refund := map[string]any{"id": "re_1", "object": "refund", "amount": 1000, "currency": "eur", "payment_intent": "pi_1",
		"status": "pending", "metadata": map[string]any{"veil_refund_id": "rf-9"}}
	payload := event(t, "evt_r", "refund.updated", refund, nil)
	ev, err := p.ParseWebhook(payload, sign(payload, whsec, signedAt), signedAt)
	if err != nil || ev.RefundID != "rf-9" || ev.Type != metering.WebhookRefundPending || ev.ProviderRefundID != "re_1" {
		t.Errorf("refund.updated = %+v, %v; want pending re_1 carrying rf-9", ev, err)
	}
	dispute := map[string]any{"id": "dp_1", "object": "dispute", "amount": 4999, "currency": "eur", "payment_intent": "pi_1",
		"reason": "fraudulent", "status": "under_review"}
	payload = event(t, "evt_d", "charge.dispute.updated", dispute, nil)
	ev, err = p.ParseWebhook(payload, sign(payload, whsec, signedAt), signedAt)
	if err != nil || ev.Type != metering.WebhookDisputeUpdated || ev.Status != "under_review" {
		t.Errorf("charge.dispute.updated = %+v, %v; want dispute.updated under_review", ev, err)
	}
}
