package caddyveil

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestCheckSubscriptionDunning: past_due is admitted with a warning naming
// the invoice and the suspension time; a suspension for an unpaid invoice
// is a 402 naming it; any other suspension, a cancellation or a record
// without a status stays a 403 without the invoice.
func TestCheckSubscriptionDunning(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 5, 9, 0, 0, 0, time.UTC)
	unpaid := func(status string) enforcement.SubscriptionRecord {
		return enforcement.SubscriptionRecord{Status: status, UnpaidInvoiceID: "inv-1", UnpaidInvoiceNumber: "INV-2026-000007", SuspendAt: at}
	}
	tests := []struct {
		name    string
		sub     enforcement.SubscriptionRecord
		ok      bool
		status  int
		invoice bool
		warning string
	}{
		{"active", enforcement.SubscriptionRecord{Status: enforcement.SubscriptionActive}, true, 0, false, ""},
		{"trialing", enforcement.SubscriptionRecord{Status: enforcement.SubscriptionTrialing}, true, 0, false, ""},
		{"past due", unpaid(enforcement.SubscriptionPastDue), true, 0, false,
			"invoice INV-2026-000007 is past due; pay by 2026-03-05T09:00:00Z to avoid suspension"},
		{"past due without an invoice", enforcement.SubscriptionRecord{Status: enforcement.SubscriptionPastDue}, true, 0, false, ""},
		{"suspended for an unpaid invoice", unpaid(enforcement.SubscriptionSuspended), false, http.StatusPaymentRequired, true, ""},
		{"suspended by an admin", enforcement.SubscriptionRecord{Status: enforcement.SubscriptionSuspended}, false, http.StatusForbidden, false, ""},
		{"canceled with an invoice left", unpaid(enforcement.SubscriptionCanceled), false, http.StatusForbidden, false, ""},
		{"no status", enforcement.SubscriptionRecord{}, false, http.StatusForbidden, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := http.Header{}
			ref, ok := checkSubscription(tt.sub, hdr)
			if ok != tt.ok || ref.status != tt.status || (ref.invoice != nil) != tt.invoice {
				t.Errorf("checkSubscription = %+v, %v; want status %d, ok %v, invoice %v", ref, ok, tt.status, tt.ok, tt.invoice)
			}
			if got := hdr.Get(billingWarningHeader); got != tt.warning {
				t.Errorf("%s = %q; want %q", billingWarningHeader, got, tt.warning)
			}
			if tt.invoice && (ref.invoice.id != "inv-1" || ref.invoice.number != "INV-2026-000007" || ref.typ != "payment-required") {
				t.Errorf("refusal = %+v, invoice %+v; want payment-required naming inv-1 INV-2026-000007", ref, *ref.invoice)
			}
		})
	}
}

// TestGatewayDunning runs the real gateway: a past_due subscription's call
// reaches the upstream with the warning, the suspended one is answered 402
// with the invoice in the problem, and once the record says active again
// (the invoice paid) calls pass, the change seen within a second.
func TestGatewayDunning(t *testing.T) {
	t.Parallel()
	f := setup(t)
	sub, inv := uuid.NewString(), uuid.NewString()
	now := time.Now().UTC()
	rec := enforcement.SubscriptionRecord{
		ID: sub, APIID: testAPI, PlanID: "plan_test", Status: enforcement.SubscriptionPastDue,
		PeriodStart: now.Add(-24 * time.Hour), PeriodEnd: now.Add(30 * 24 * time.Hour), QuotaRequests: -1,
		UnpaidInvoiceID: inv, UnpaidInvoiceNumber: "INV-2026-000099", SuspendAt: now.Add(72 * time.Hour).Truncate(time.Second), Version: 1,
	}
	put := func(r enforcement.SubscriptionRecord) {
		t.Helper()
		if applied, err := f.store.PutSubscription(t.Context(), r); err != nil || !applied {
			t.Fatalf("PutSubscription(%s) = %v, %v", r.Status, applied, err)
		}
	}
	put(rec)
	key, _ := newKey(t, f.store, enforcement.KeyRecord{SubscriptionID: sub})

	res := f.do(t, "GET", "/weather/alerts", key, viaBearer)
	f.checkAdmitted(t, res)
	want := "invoice INV-2026-000099 is past due; pay by " + rec.SuspendAt.Format(time.RFC3339) + " to avoid suspension"
	if got := res.header.Get("Veil-Billing-Warning"); got != want {
		t.Errorf("Veil-Billing-Warning = %q; want %q", got, want)
	}

	rec.Status, rec.SuspendAt, rec.Version = enforcement.SubscriptionSuspended, time.Time{}, 2
	put(rec)
	var last result
	waitStatus(t, f, key, http.StatusPaymentRequired, &last)
	f.checkRefused(t, last, http.StatusPaymentRequired, "payment-required")
	var p struct {
		Detail        string `json:"detail"`
		InvoiceID     string `json:"invoice_id"`
		InvoiceNumber string `json:"invoice_number"`
		InvoiceURL    string `json:"invoice_url"`
	}
	if err := json.Unmarshal(last.body, &p); err != nil {
		t.Fatal(err)
	}
	if p.InvoiceID != inv || p.InvoiceNumber != "INV-2026-000099" || p.InvoiceURL != "https://portal.example.test/v1/invoices/"+inv {
		t.Errorf("402 problem = %s; want invoice %s, INV-2026-000099, https://portal.example.test/v1/invoices/%s", last.body, inv, inv)
	}
	if last.header.Get("Veil-Billing-Warning") != "" {
		t.Errorf("a refused call has Veil-Billing-Warning %q", last.header.Get("Veil-Billing-Warning"))
	}

	paid := rec
	paid.Status, paid.UnpaidInvoiceID, paid.UnpaidInvoiceNumber, paid.Version = enforcement.SubscriptionActive, "", "", 3
	start := time.Now()
	put(paid)
	took := waitStatus(t, f, key, http.StatusOK, &last)
	f.checkAdmitted(t, last)
	if took > time.Second {
		t.Errorf("the paid subscription was admitted %s after its record was written; want within 1s", took)
	}
	t.Logf("admitted %s after the record said active (written at %s)", took, start.Format(time.RFC3339Nano))
}

// waitStatus calls until the gateway answers status, and returns how long
// that took.
func waitStatus(t *testing.T, f *fixture, key string, status int, last *result) time.Duration {
	t.Helper()
	start := time.Now()
	var took time.Duration
	testenv.Deadline(t, 10*time.Second, func() error {
		*last = f.do(t, "GET", "/weather/alerts", key, viaBearer)
		if last.status != status {
			return fmt.Errorf("status %d; want %d (body %s)", last.status, status, last.body)
		}
		took = time.Since(start)
		return nil
	})
	return took
}

// The invoice's link is absolute from the public URL, and there is none
// without one; a public URL that is not an absolute http(s) base is
// refused.
func TestInvoiceURL(t *testing.T) {
	if got := (&App{}).invoiceURL("inv-1"); got != "" {
		t.Errorf("invoiceURL without a public URL = %q; want none", got)
	}
	if got := (&App{PublicURL: "https://veil.example.com/portal"}).invoiceURL("inv-1"); got != "https://veil.example.com/portal/v1/invoices/inv-1" {
		t.Errorf("invoiceURL = %q", got)
	}
	for _, ok := range []string{"", "https://veil.example.com", "http://127.0.0.1:8080/x/"} {
		if err := CheckPublicURL(ok); err != nil {
			t.Errorf("CheckPublicURL(%q) = %v; want nil", ok, err)
		}
	}
	for _, bad := range []string{"/v1", "veil.example.com", "ftp://veil.example.com", "https://u:p@veil.example.com",
		"https://veil.example.com/?a=1", "https://veil.example.com/#x", "https://veil.example.com/\r\nX: 1"} {
		if err := CheckPublicURL(bad); err == nil {
			t.Errorf("CheckPublicURL(%q) = nil; want refused", bad)
		}
	}
}
