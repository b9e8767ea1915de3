package payments

import (
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// PaymentJSON is a payment as the REST API's Payment renders it
// (schemas/openapi.json): snake_case members, amounts as decimal strings
// with exactly the currency's decimals ("12.50", "1500", "1.250"), never
// floats or minor units, times in UTC. The payment.* webhooks carry it
// too (paymentEvent), so that a subscriber reads a payment alike from
// either.
type PaymentJSON struct {
	ID                 uuid.UUID `json:"id"`
	InvoiceID          uuid.UUID `json:"invoice_id"`
	Provider           string    `json:"provider"`
	Status             string    `json:"status"`
	Currency           string    `json:"currency"`
	Amount             string    `json:"amount"`
	AmountRefunded     string    `json:"amount_refunded"`
	AmountDisputedLost string    `json:"amount_disputed_lost"`
	// Attempts is every attempt, oldest first; never null.
	Attempts      []Attempt `json:"attempts"`
	NextAttemptAt *string   `json:"next_attempt_at"`
	SucceededAt   *string   `json:"succeeded_at"`
	// AttentionReason is null unless the payment needs attention (or was
	// refunded beyond what was paid).
	AttentionReason *string `json:"attention_reason"`
}

// jsonTime is how PaymentJSON writes times: RFC 3339 in UTC, to the
// microsecond Postgres keeps.
const jsonTime = "2006-01-02T15:04:05.999999Z07:00"

// JSON renders the payment with its attempts (nil: none).
func (p Payment) JSON(attempts []Attempt) PaymentJSON {
	out := PaymentJSON{ID: p.ID, InvoiceID: p.InvoiceID, Provider: p.Provider, Status: p.Status,
		Currency: p.Amount.Currency, Amount: decimalString(p.Amount), AmountRefunded: decimalString(p.Refunded),
		AmountDisputedLost: decimalString(p.DisputedLost), Attempts: attempts}
	if out.Attempts == nil {
		out.Attempts = []Attempt{}
	}
	if p.NextAttemptAt != nil {
		out.NextAttemptAt = new(p.NextAttemptAt.UTC().Format(jsonTime))
	}
	if p.SucceededAt != nil {
		out.SucceededAt = new(p.SucceededAt.UTC().Format(jsonTime))
	}
	if p.AttentionReason != "" {
		out.AttentionReason = new(p.AttentionReason)
	}
	return out
}

// decimalString writes an amount as invoices print it, with exactly its
// currency's decimals; a currency Veil no longer prices in has no known
// decimals, and gets Money.Decimal's zero as the REST API does.
func decimalString(m metering.Money) string {
	if c, err := metering.CurrencyOf(m.Currency); err == nil {
		return c.Format(m.Decimal())
	}
	return m.Decimal().String()
}

// paymentEvent is the data of the payment.* webhooks: the payment as the
// REST API renders it, after the change, and the two organizations it is
// between (each of which receives the event).
type paymentEvent struct {
	PaymentJSON
	IssuerID   uuid.UUID `json:"issuer_id"`
	CustomerID uuid.UUID `json:"customer_id"`
}

func toAttempts(rows []db.PaymentAttempt) []Attempt {
	out := make([]Attempt, len(rows))
	for i, a := range rows {
		out[i] = Attempt{No: a.AttemptNo, Status: a.Status, ProviderPaymentID: a.ProviderPaymentID,
			FailureCode: a.FailureCode, DeclineCode: a.DeclineCode, FailureMessage: a.FailureMessage,
			Reference: a.Reference, CreatedAt: a.CreatedAt, FinishedAt: a.FinishedAt}
	}
	return out
}
