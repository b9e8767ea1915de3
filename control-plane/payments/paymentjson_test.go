package payments

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/metering"
)

// TestPaymentJSON: amounts are decimal strings with exactly the
// currency's decimals, times are UTC to the microsecond, and what is
// absent is null (attention_reason, the times) or empty (attempts),
// never left out.
func TestPaymentJSON(t *testing.T) {
	t.Parallel()
	id := uuid.MustParse("0b9c7a52-3c1e-4a57-9d7e-3f0d2a6f1e01")
	inv := uuid.MustParse("0b9c7a52-3c1e-4a57-9d7e-3f0d2a6f1e02")
	at := time.Date(2026, 12, 8, 11, 0, 0, 123456789, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		name string
		p    Payment
		want string
	}{
		{"EUR, pending", Payment{ID: id, InvoiceID: inv, Provider: "stripe", Status: "pending",
			Amount: metering.Money{Minor: 1250, Currency: "EUR"}, Refunded: metering.Money{Currency: "EUR"},
			DisputedLost: metering.Money{Currency: "EUR"}, NextAttemptAt: &at},
			`{"id":"` + id.String() + `","invoice_id":"` + inv.String() + `","provider":"stripe","status":"pending","currency":"EUR",` +
				`"amount":"12.50","amount_refunded":"0.00","amount_disputed_lost":"0.00","attempts":[],` +
				`"next_attempt_at":"2026-12-08T10:00:00.123456Z","succeeded_at":null,"attention_reason":null}`},
		{"JPY, refunded", Payment{ID: id, InvoiceID: inv, Provider: "manual", Status: "succeeded",
			Amount: metering.Money{Minor: 1500, Currency: "JPY"}, Refunded: metering.Money{Minor: 500, Currency: "JPY"},
			DisputedLost: metering.Money{Currency: "JPY"}, SucceededAt: &at},
			`{"id":"` + id.String() + `","invoice_id":"` + inv.String() + `","provider":"manual","status":"succeeded","currency":"JPY",` +
				`"amount":"1500","amount_refunded":"500","amount_disputed_lost":"0","attempts":[],` +
				`"next_attempt_at":null,"succeeded_at":"2026-12-08T10:00:00.123456Z","attention_reason":null}`},
		{"KWD, needs attention", Payment{ID: id, InvoiceID: inv, Provider: "stripe", Status: "needs_attention",
			Amount: metering.Money{Minor: 1250, Currency: "KWD"}, Refunded: metering.Money{Currency: "KWD"},
			DisputedLost: metering.Money{Minor: 5, Currency: "KWD"}, AttentionReason: "amount_too_small: below 0.250",
			Instructions: &metering.PaymentInstructions{IBAN: "DE89370400440532013000"}},
			`{"id":"` + id.String() + `","invoice_id":"` + inv.String() + `","provider":"stripe","status":"needs_attention","currency":"KWD",` +
				`"amount":"1.250","amount_refunded":"0.000","amount_disputed_lost":"0.005","attempts":[],` +
				`"next_attempt_at":null,"succeeded_at":null,"attention_reason":"amount_too_small: below 0.250"}`},
	} {
		b, err := json.Marshal(tc.p.JSON(nil))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%s: json(Payment.JSON) = %s; want %s", tc.name, b, tc.want)
		}
	}
}

// TestPaymentEventJSON: the payment.* webhooks' data is PaymentJSON's
// members and the two organizations, side by side.
func TestPaymentEventJSON(t *testing.T) {
	t.Parallel()
	issuer, customer := uuid.New(), uuid.New()
	b, err := json.Marshal(paymentEvent{PaymentJSON: Payment{Amount: metering.Money{Minor: 1, Currency: "USD"}}.JSON(nil),
		IssuerID: issuer, CustomerID: customer})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 14 || got["amount"] != "0.01" || got["issuer_id"] != issuer.String() || got["customer_id"] != customer.String() {
		t.Errorf("json(paymentEvent) = %s; want the 12 members of PaymentJSON, amount 0.01, issuer_id %s and customer_id %s", b, issuer, customer)
	}
}
