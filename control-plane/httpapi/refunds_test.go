package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/veil-platform/veil/control-plane/identity"
)

// A refund to the credit balance: no provider call, the customer's
// balance with the issuer grows by it (a refund entry naming the
// invoice), the payment shows it refunded, and it counts against what
// was paid with refunds through the provider; an unknown destination is
// refused.
func TestRefundToCreditBalance(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	prov := e.token("acme", "alice", identity.RoleProvider)
	cons := e.token("hooli", "carol", identity.RoleConsumer)
	admin := e.token("veil-ops", "root", identity.RoleAdmin)
	issuer, customer := e.orgOf(prov), e.orgOf(cons)
	e.must(http.StatusOK, "PUT", "/v1/admin/organizations/"+issuer+"/payment-settings", admin, map[string]any{"provider": "manual"}, nil)
	inv := e.openInvoice(issuer, customer, "30.00")
	if _, err := e.Payments.RunCycle(t.Context()); err != nil {
		t.Fatalf("payments cycle: %v", err)
	}
	e.must(http.StatusOK, "POST", "/v1/invoices/"+inv+"/payment/mark-paid", prov, map[string]any{"reference": "TRX-9"}, nil)

	refunds := "/v1/invoices/" + inv + "/refunds"
	e.must(http.StatusUnprocessableEntity, "POST", refunds, prov, map[string]any{"amount": "1.00", "destination": "cash"}, nil)
	e.must(http.StatusForbidden, "POST", refunds, cons, map[string]any{"amount": "1.00", "destination": "credit_balance"}, nil)
	var rf struct{ Amount, Status, Destination string }
	e.must(http.StatusCreated, "POST", refunds, prov, map[string]any{"amount": "12.00", "reason": "plan change",
		"destination": "credit_balance"}, &rf)
	if rf.Amount != "12.00" || rf.Status != "succeeded" || rf.Destination != "credit_balance" {
		t.Errorf("refund = %+v; want 12.00 succeeded to the credit balance", rf)
	}
	var balances struct {
		Data []struct{ Currency, Balance string }
	}
	e.must(http.StatusOK, "GET", "/v1/credits", cons, nil, &balances)
	if len(balances.Data) != 1 || balances.Data[0].Balance != "12.00" || balances.Data[0].Currency != "EUR" {
		t.Errorf("customer's credit balances = %+v; want EUR 12.00", balances.Data)
	}
	var pay struct {
		AmountRefunded     string `json:"amount_refunded"`
		AmountDisputedLost string `json:"amount_disputed_lost"`
	}
	e.must(http.StatusOK, "GET", "/v1/invoices/"+inv+"/payment", cons, nil, &pay)
	if pay.AmountRefunded != "12.00" || pay.AmountDisputedLost != "0.00" {
		t.Errorf("payment amount_refunded = %s, amount_disputed_lost = %s; want 12.00, 0.00", pay.AmountRefunded, pay.AmountDisputedLost)
	}
	var doc struct {
		AmountRefunded *string `json:"amount_refunded"`
	}
	e.must(http.StatusOK, "GET", "/v1/invoices/"+inv, cons, nil, &doc)
	if doc.AmountRefunded == nil || *doc.AmountRefunded != "12.00" {
		t.Errorf("invoice amount_refunded = %v; want 12.00", doc.AmountRefunded)
	}
	e.must(http.StatusConflict, "POST", refunds, prov, map[string]any{"amount": "18.01", "destination": "credit_balance"}, nil)
}
