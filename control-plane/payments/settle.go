package payments

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// outcome is what the provider (its answer, an event, a status read) or a
// person says of an attempt.
type outcome struct {
	metering.PaymentResult
	// reference and actor: who marked it paid by hand, with what proof.
	reference string
	actor     *identity.Actor
}

func finalAttempt(status string) bool {
	return status == "succeeded" || status == "failed" || status == "canceled"
}

// settle applies an outcome to an attempt and its payment, both locked by
// the caller (payment first). States move forward only: a settled attempt
// changes no more, except that a failed one may still succeed (a customer
// who completes the payment later), and a succeeded or canceled payment
// stays as it is.
func (s *Service) settle(ctx context.Context, tx pgx.Tx, p db.Payment, att db.PaymentAttempt, o outcome) error {
	st := string(o.Status)
	if st == "" || (finalAttempt(att.Status) && !(att.Status == "failed" && st == "succeeded")) {
		return nil
	}
	if p.Status == "succeeded" || p.Status == "canceled" {
		if st == "succeeded" && p.Status == "canceled" {
			s.log.Error("payment succeeded at the provider after its invoice's payment was canceled: refund it",
				"payment", p.ID, "provider_payment", o.ProviderPaymentID)
		}
		return nil
	}
	q := db.New(tx)
	now := s.now()
	upd := db.AttemptUpdateParams{ID: att.ID, Status: st, ProviderPaymentID: optional(o.ProviderPaymentID),
		FailureCode: o.FailureCode, DeclineCode: o.DeclineCode, FailureMessage: truncate(o.FailureMessage, 1000),
		Reference: att.Reference, Now: now}
	if o.reference != "" {
		upd.Reference = o.reference
	}
	if finalAttempt(st) {
		upd.FinishedAt = &now
	}
	if err := q.AttemptUpdate(ctx, upd); err != nil {
		return fmt.Errorf("record payment attempt: %w", err)
	}
	switch o.Status {
	case metering.PaymentSucceeded:
		return s.succeeded(ctx, tx, p, o)
	case metering.PaymentFailed:
		return s.failed(ctx, tx, p, now)
	default:
		if err := q.PaymentSetStatus(ctx, db.PaymentSetStatusParams{ID: p.ID, Status: st}); err != nil {
			return fmt.Errorf("record payment: %w", err)
		}
		return nil
	}
}

// succeeded marks the payment succeeded and its invoice paid, with the
// same transition billing's MarkPaid makes, in this transaction.
func (s *Service) succeeded(ctx context.Context, tx pgx.Tx, p db.Payment, o outcome) error {
	q := db.New(tx)
	now := s.now()
	if err := q.PaymentSetStatus(ctx, db.PaymentSetStatusParams{ID: p.ID, Status: "succeeded", SucceededAt: &now}); err != nil {
		return fmt.Errorf("record payment: %w", err)
	}
	n, err := q.InvoiceMarkPaid(ctx, db.InvoiceMarkPaidParams{ID: p.InvoiceID, At: &now})
	if err != nil {
		return fmt.Errorf("mark invoice paid: %w", err)
	}
	if n == 0 {
		// Voided or paid in billing meanwhile: the money is in, the
		// invoice is not this payment's to change.
		s.log.Error("payment succeeded for an invoice no longer open", "payment", p.ID, "invoice", p.InvoiceID)
	}
	if err := s.paid(ctx, tx, p, now); err != nil {
		return err
	}
	actor := identity.System
	if o.actor != nil {
		actor = *o.actor
	}
	after := map[string]any{"status": "succeeded", "provider_payment_id": o.ProviderPaymentID, "reference": o.reference}
	if err := audit.Record(ctx, tx, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: p.IssuerID, Action: "payment.succeeded",
		TargetType: "invoice", TargetID: p.InvoiceID.String(), Before: map[string]any{"status": p.Status}, After: after,
	}); err != nil {
		return err
	}
	p.Status, p.SucceededAt = "succeeded", &now
	return s.publish(ctx, tx, p, "payment.succeeded")
}

// failed schedules the payment's next attempt after the issuer's retry
// days, or fails it after the last, which makes its subscription
// past_due.
func (s *Service) failed(ctx context.Context, tx pgx.Tx, p db.Payment, now time.Time) error {
	q := db.New(tx)
	days, grace := DefaultRetryDays, int32(DefaultGraceDays)
	st, err := q.SettingsGet(ctx, p.IssuerID)
	switch {
	case err == nil:
		days, grace = st.RetryDays, st.GraceDays
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("read payment settings: %w", err)
	}
	set := db.PaymentSetStatusParams{ID: p.ID, Status: "failed"}
	if i := p.Attempts - 1; i >= 0 && i < len(days) {
		next := now.Add(time.Duration(days[i]) * 24 * time.Hour)
		set.Status, set.NextAttemptAt = "pending", &next
	}
	if err := q.PaymentSetStatus(ctx, set); err != nil {
		return fmt.Errorf("record payment: %w", err)
	}
	p.Status, p.NextAttemptAt = set.Status, set.NextAttemptAt
	if set.Status == "failed" {
		if err := s.pastDue(ctx, tx, p, grace, now); err != nil {
			return err
		}
	}
	return s.publish(ctx, tx, p, "payment.failed")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
