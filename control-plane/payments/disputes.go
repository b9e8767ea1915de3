// Disputes lost. For payouts: what a lost dispute took back from a
// payment is payments.amount_disputed_lost (minor units of
// payments.currency), set once per dispute when it closes lost
// (payment_disputes.lost_at, with the dispute's amount). Money returned
// to customers through the provider is payment_refunds.amount with
// status = 'succeeded' AND destination = 'payment_method' (external
// marks those made in the provider's dashboard); refunds to the credit
// balance (destination = 'credit_balance') move no money and are in
// payments.amount_refunded with the others.

package payments

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// disputeLost records, once, that a dispute of the payment's charge was
// lost: the provider took its amount back from the issuer. Audited and
// announced (payment.dispute_lost) to the issuer and the customer.
func (s *Service) disputeLost(ctx context.Context, tx pgx.Tx, att db.PaymentAttempt, ev metering.WebhookEvent) error {
	q := db.New(tx)
	p, err := q.PaymentLock(ctx, att.PaymentID)
	if err != nil {
		return fmt.Errorf("lock payment: %w", err)
	}
	if att.Status != "succeeded" || ev.Amount.Currency != p.Currency || ev.Amount.Minor <= 0 {
		s.mismatch("dispute", "provider_dispute", ev.ProviderDisputeID, "payment", p.ID, "attempt", att.ID,
			"amount", ev.Amount.String())
		return nil
	}
	d, err := q.DisputeLose(ctx, db.DisputeLoseParams{ProviderDisputeID: ev.ProviderDisputeID, At: new(s.now())})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record dispute lost: %w", err)
	}
	amount := min(ev.Amount.Minor, p.Amount-p.AmountDisputedLost)
	if amount < ev.Amount.Minor {
		s.log.Error("lost disputes exceed their payment: recorded up to it", "payment", p.ID, "provider_dispute", d.ProviderDisputeID)
	}
	if p, err = q.PaymentAddDisputeLost(ctx, db.PaymentAddDisputeLostParams{ID: p.ID, Amount: amount}); err != nil {
		return fmt.Errorf("record dispute lost: %w", err)
	}
	// A credit refund given before the chargeback is not taken back
	// here: the customer holds both, which a person settles.
	if err := s.checkOverRefunded(ctx, tx, p); err != nil {
		return err
	}
	lost := metering.Money{Minor: amount, Currency: p.Currency}
	err = audit.Record(ctx, tx, audit.Change{
		Actor: identity.System.Subject, ActorRole: string(identity.System.Role), OrganizationID: p.IssuerID,
		Action: "payment.dispute_lost", TargetType: "invoice", TargetID: p.InvoiceID.String(),
		After: map[string]any{"provider_dispute_id": d.ProviderDisputeID, "amount": lost.String(), "reason": d.Reason},
	})
	if err != nil {
		return err
	}
	s.log.Warn("a dispute was lost", "payment", p.ID, "invoice", p.InvoiceID, "amount", lost.String())
	if err := s.disputeLostDunning(ctx, tx, p); err != nil {
		return err
	}
	return s.publish(ctx, tx, p.ID, "payment.dispute_lost")
}

// disputeFunds records when the provider withdrew a dispute's amount
// from the platform's balance and when it gave it back, for the payouts
// statement. Stripe withdraws it when a chargeback opens (an inquiry,
// status warning_*, withdraws nothing until it becomes one) and
// reinstates it when the dispute is won; a lost one keeps it.
func disputeFunds(ctx context.Context, q *db.Queries, ev metering.WebhookEvent, now time.Time) error {
	if ev.Status == "" || strings.HasPrefix(ev.Status, "warning_") {
		return nil
	}
	if ev.Type != metering.WebhookDisputeClosed {
		if err := q.DisputeWithdrawn(ctx, db.DisputeWithdrawnParams{ProviderDisputeID: ev.ProviderDisputeID, At: &now}); err != nil {
			return fmt.Errorf("record dispute funds withdrawn: %w", err)
		}
		return nil
	}
	if ev.Status == "won" {
		if err := q.DisputeReinstated(ctx, db.DisputeReinstatedParams{ProviderDisputeID: ev.ProviderDisputeID, At: &now}); err != nil {
			return fmt.Errorf("record dispute funds reinstated: %w", err)
		}
	}
	return nil
}
