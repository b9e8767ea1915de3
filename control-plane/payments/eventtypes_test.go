package payments

import (
	"slices"
	"testing"

	"github.com/veil-platform/veil/control-plane/webhooks"
)

// Every event payments announces is one the webhooks service accepts:
// Publish refuses an unknown type, which would fail the change it
// announces.
func TestAnnouncedEventTypesKnown(t *testing.T) {
	t.Parallel()
	for _, ev := range []string{EventPaymentNeedsAttention, EventInvoicePaid, "payment.succeeded", "payment.failed",
		"payment.refunded", "payment.refund_failed", "payment.dispute_lost"} {
		if !slices.Contains(webhooks.EventTypes, ev) {
			t.Errorf("%s is not a webhook event type", ev)
		}
	}
}
