package enforcement_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/enforcement"
)

// TestSubscriptionRecordUnpaidInvoice: a past_due record carries its
// unpaid invoice and suspension time, a later record without them clears
// them, one without the fields at all (written before dunning) decodes
// as none, and a number the gateway could not put in a header is refused.
func TestSubscriptionRecordUnpaidInvoice(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	id := "sub_unpaid_" + f.suffix
	t.Cleanup(func() {
		f.client.Do(context.Background(), f.client.B().Del().Key(enforcement.SubscriptionName(id)).Build())
	})
	start := time.Date(2026, 2, 15, 0, 0, 0, 0, time.UTC)
	r := enforcement.SubscriptionRecord{
		ID: id, APIID: "api_1", PlanID: "plan_1", Status: enforcement.SubscriptionPastDue,
		PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0), QuotaRequests: -1,
		UnpaidInvoiceID: "0b9d7d4e-2f4a-4a43-9f53-8c1b1f1e2a10", UnpaidInvoiceNumber: "INV-2026-000042",
		SuspendAt: start.Add(72 * time.Hour), Version: 1,
	}
	if applied, err := f.store.PutSubscription(ctx, r); err != nil || !applied {
		t.Fatalf("PutSubscription = %v, %v; want true, nil", applied, err)
	}
	got, err := f.store.GetSubscription(ctx, id)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("GetSubscription = %+v, %v; want %+v", got, err, r)
	}
	paid := r
	paid.Status, paid.UnpaidInvoiceID, paid.UnpaidInvoiceNumber, paid.SuspendAt, paid.Version =
		enforcement.SubscriptionActive, "", "", time.Time{}, 2
	if applied, err := f.store.PutSubscription(ctx, paid); err != nil || !applied {
		t.Fatalf("PutSubscription(paid) = %v, %v; want true, nil", applied, err)
	}
	if got, err = f.store.GetSubscription(ctx, id); err != nil || !reflect.DeepEqual(got, paid) {
		t.Fatalf("GetSubscription after payment = %+v, %v; want %+v", got, err, paid)
	}
	f.client.Do(ctx, f.client.B().Hdel().Key(enforcement.SubscriptionName(id)).Field("unpaid_invoice_id", "unpaid_invoice_number", "suspend_at").Build())
	if got, err = f.store.GetSubscription(ctx, id); err != nil || !reflect.DeepEqual(got, paid) {
		t.Errorf("GetSubscription of a record without dunning fields = %+v, %v; want %+v", got, err, paid)
	}
	f.hset(t, enforcement.SubscriptionName(id), "unpaid_invoice_id", "x", "unpaid_invoice_number", "")
	if _, err := f.store.GetSubscription(ctx, id); !errors.Is(err, enforcement.ErrCorruptRecord) || !strings.Contains(err.Error(), "field unpaid_invoice_id:") {
		t.Errorf("GetSubscription(id without number) = %v; want ErrCorruptRecord naming unpaid_invoice_id", err)
	}
	for _, number := range []string{"INV 1", "INV\r\nX: y", strings.Repeat("9", 65)} {
		bad := r
		bad.UnpaidInvoiceNumber, bad.Version = number, 3
		if _, err := f.store.PutSubscription(ctx, bad); !errors.Is(err, enforcement.ErrInvalidRecord) {
			t.Errorf("PutSubscription(number %q) = %v; want ErrInvalidRecord", number, err)
		}
	}
}
