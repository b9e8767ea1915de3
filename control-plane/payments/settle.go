package payments

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
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
// who completes the payment later) while its payment is unpaid. A success
// the payment cannot keep (its attempt or payment canceled, another
// attempt paid, its invoice closed) is a stray charge, refunded.
// The provider's cancel or an authentication asked of nobody fails the
// attempt: only Veil cancels a payment.
func (s *Service) settle(ctx context.Context, tx pgx.Tx, p db.Payment, att db.PaymentAttempt, o outcome) error {
	switch o.Status {
	case "":
		return nil
	case metering.PaymentCanceled:
		o.Status, o.FailureCode = metering.PaymentFailed, cmp.Or(o.FailureCode, "canceled_at_provider")
	case metering.PaymentRequiresAction:
		// Off session nobody can authenticate: Stripe advises telling the
		// customer and retrying, as for a decline.
		o.Status, o.FailureCode = metering.PaymentFailed, cmp.Or(o.FailureCode, "authentication_required")
	}
	q := db.New(tx)
	now := s.now()
	if o.Status == metering.PaymentSucceeded {
		if keep, err := writtenOffPaid(ctx, q, p, att); err != nil || keep {
			if err != nil {
				return err
			}
			return s.lateSuccess(ctx, tx, p, att, o)
		}
		if stray, reason, err := s.isStray(ctx, q, p, att); err != nil || stray {
			if err != nil {
				return err
			}
			return s.strayCharge(ctx, tx, p, att, o, reason)
		}
	}
	if finalAttempt(att.Status) && !(att.Status == "failed" && o.Status == metering.PaymentSucceeded) {
		if o.ProviderPaymentID != "" && att.ProviderPaymentID == nil {
			// The answer of a call canceled in flight: its id lets
			// reconciliation cancel it at the provider.
			if err := q.AttemptBind(ctx, db.AttemptBindParams{ID: att.ID, ProviderPaymentID: &o.ProviderPaymentID, Now: now}); err != nil {
				return fmt.Errorf("record payment attempt: %w", err)
			}
		}
		return nil
	}
	if p.Status == "succeeded" || p.Status == "canceled" || p.Status == "needs_attention" {
		return nil
	}
	st := string(o.Status)
	upd := db.AttemptUpdateParams{ID: att.ID, Status: st, ProviderPaymentID: optional(o.ProviderPaymentID),
		FailureCode: o.FailureCode, DeclineCode: o.DeclineCode, FailureMessage: truncate(o.FailureMessage, 1000),
		Reference: cmp.Or(o.reference, att.Reference), Now: now}
	if finalAttempt(st) {
		upd.FinishedAt = &now
	}
	if err := q.AttemptUpdate(ctx, upd); err != nil {
		return fmt.Errorf("record payment attempt: %w", err)
	}
	switch o.Status {
	case metering.PaymentSucceeded:
		return s.succeeded(ctx, tx, p, att, o)
	case metering.PaymentFailed:
		// A failed PaymentIntent can still be confirmed at Stripe; it is
		// canceled there so that it cannot charge beside the next attempt.
		if err := q.AttemptMarkDoubt(ctx, att.ID); err != nil {
			return fmt.Errorf("record payment attempt: %w", err)
		}
		return s.failed(ctx, tx, p, now)
	default:
		if err := q.PaymentSetStatus(ctx, db.PaymentSetStatusParams{ID: p.ID, Status: st}); err != nil {
			return fmt.Errorf("record payment: %w", err)
		}
		return nil
	}
}

// isStray tells whether a success of att is one its payment cannot keep,
// and the reason its refund gives.
func (s *Service) isStray(ctx context.Context, q *db.Queries, p db.Payment, att db.PaymentAttempt) (bool, string, error) {
	switch {
	case att.Status == "succeeded":
		return false, "", nil
	case p.Status == "canceled":
		return true, "void", nil
	case p.Status == "succeeded" || att.Status == "canceled":
		return true, "duplicate", nil
	}
	st, err := q.InvoiceStatusLock(ctx, p.InvoiceID)
	if err != nil {
		return false, "", fmt.Errorf("read invoice: %w", err)
	}
	switch st {
	case "open", "uncollectible":
		return false, "", nil
	case "void":
		return true, "void", nil
	default:
		return true, "duplicate", nil
	}
}

// writtenOffPaid tells whether a success is of a payment canceled because
// its invoice was written off (uncollectible), and still is: the debt was
// real, so the money is kept and the invoice paid rather than refunded.
func writtenOffPaid(ctx context.Context, q *db.Queries, p db.Payment, att db.PaymentAttempt) (bool, error) {
	if p.Status != "canceled" || att.Status == "succeeded" {
		return false, nil
	}
	st, err := q.InvoiceStatusLock(ctx, p.InvoiceID)
	if err != nil {
		return false, fmt.Errorf("read invoice: %w", err)
	}
	return st == "uncollectible", nil
}

// lateSuccess records the success of an attempt of an invoice written off
// meanwhile and pays the invoice (uncollectible → paid), audited and
// announced as any success.
func (s *Service) lateSuccess(ctx context.Context, tx pgx.Tx, p db.Payment, att db.PaymentAttempt, o outcome) error {
	now := s.now()
	if err := db.New(tx).AttemptUpdate(ctx, db.AttemptUpdateParams{ID: att.ID, Status: "succeeded",
		ProviderPaymentID: optional(o.ProviderPaymentID), Reference: cmp.Or(o.reference, att.Reference), FinishedAt: &now, Now: now}); err != nil {
		return fmt.Errorf("record payment attempt: %w", err)
	}
	s.log.Warn("an invoice written off was paid after all: the payment is kept and the invoice paid", "payment", p.ID, "invoice", p.InvoiceID)
	return s.succeeded(ctx, tx, p, att, o)
}

// strayCharge records a success its payment does not keep on its attempt
// and inserts the refund of it, pending with its idempotency key, which
// pushStrayRefunds sends to the provider after the commit.
func (s *Service) strayCharge(ctx context.Context, tx pgx.Tx, p db.Payment, att db.PaymentAttempt, o outcome, reason string) error {
	q := db.New(tx)
	now := s.now()
	if !finalAttempt(att.Status) {
		if err := q.AttemptCancel(ctx, db.AttemptCancelParams{ID: att.ID, FailureCode: "superseded", Now: now}); err != nil {
			return fmt.Errorf("cancel payment attempt: %w", err)
		}
	}
	if err := q.AttemptRecordStray(ctx, db.AttemptRecordStrayParams{ID: att.ID, ProviderPaymentID: optional(o.ProviderPaymentID), Now: now}); err != nil {
		return fmt.Errorf("record stray charge: %w", err)
	}
	id := uuid.New()
	rf, err := q.StrayRefundInsert(ctx, db.StrayRefundInsertParams{ID: id, PaymentID: p.ID, InvoiceID: p.InvoiceID,
		Amount: p.Amount, Currency: p.Currency, Reason: reason, IdempotencyKey: "veil-refund-" + id.String(), StrayAttemptID: &att.ID})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("insert refund of a stray charge: %w", err)
	}
	s.strayCharges.Inc()
	s.log.Error("a payment succeeded that its invoice does not keep: it is refunded",
		"payment", p.ID, "invoice", p.InvoiceID, "attempt", att.AttemptNo, "provider_payment", o.ProviderPaymentID,
		"reason", reason, "refund", rf.ID)
	return audit.Record(ctx, tx, audit.Change{
		Actor: identity.System.Subject, ActorRole: string(identity.System.Role), OrganizationID: p.IssuerID,
		Action: "payment.stray_refund", TargetType: "invoice", TargetID: p.InvoiceID.String(),
		After: map[string]any{"attempt": att.AttemptNo, "provider_payment_id": o.ProviderPaymentID, "refund": rf.ID,
			"amount": metering.Money{Minor: rf.Amount, Currency: rf.Currency}.String(), "reason": reason},
	})
}

// succeeded marks the payment succeeded and its invoice paid, with the
// same transition billing's MarkPaid makes, in this transaction.
func (s *Service) succeeded(ctx context.Context, tx pgx.Tx, p db.Payment, att db.PaymentAttempt, o outcome) error {
	q := db.New(tx)
	now := s.now()
	// Another attempt under way (a retry, while a failed one was
	// completed) must not charge as well.
	if open, err := q.AttemptOpenOf(ctx, p.ID); err == nil && open.ID != att.ID {
		if err := q.AttemptCancel(ctx, db.AttemptCancelParams{ID: open.ID, FailureCode: "superseded", Now: now}); err != nil {
			return fmt.Errorf("cancel payment attempt: %w", err)
		}
	} else if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read payment attempt: %w", err)
	}
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
	return s.publish(ctx, tx, p.ID, "payment.succeeded")
}

// failed schedules the payment's next attempt on the issuer's next retry
// day, or fails it after the last, which makes its subscription past_due.
func (s *Service) failed(ctx context.Context, tx pgx.Tx, p db.Payment, now time.Time) error {
	q := db.New(tx)
	days, grace, err := retrySchedule(ctx, q, p.IssuerID)
	if err != nil {
		return err
	}
	// Retry days count from the first failure: {1,3,5,7} retries on days
	// 1, 3, 5 and 7 after it, and the payment fails after the last.
	first, err := q.PaymentFirstFailed(ctx, db.PaymentFirstFailedParams{ID: p.ID, At: &now})
	if err != nil || first == nil {
		return fmt.Errorf("record first failure: %w", errors.Join(err, ErrPaymentState))
	}
	set := db.PaymentSetStatusParams{ID: p.ID, Status: "failed"}
	if i := p.Attempts - 1; i >= 0 && i < len(days) {
		next := first.Add(time.Duration(days[i]) * 24 * time.Hour)
		set.Status, set.NextAttemptAt = "pending", &next
	}
	if err := q.PaymentSetStatus(ctx, set); err != nil {
		return fmt.Errorf("record payment: %w", err)
	}
	if set.Status == "failed" {
		if err := s.pastDue(ctx, tx, p, grace, now); err != nil {
			return err
		}
	}
	return s.publish(ctx, tx, p.ID, "payment.failed")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// needsAttention takes a payment whose amount the provider can never take
// out of retries and dunning, for the issuer to settle, audited.
func (s *Service) needsAttention(ctx context.Context, tx pgx.Tx, p db.Payment, att db.PaymentAttempt, code, msg string) error {
	q := db.New(tx)
	now := s.now()
	err := q.AttemptUpdate(ctx, db.AttemptUpdateParams{ID: att.ID, Status: "failed", FailureCode: code,
		FailureMessage: truncate(msg, 1000), Reference: att.Reference, FinishedAt: &now, Now: now})
	if err != nil {
		return fmt.Errorf("record payment attempt: %w", err)
	}
	reason := truncate(code+": "+msg, 500)
	if err := q.PaymentSetAttention(ctx, db.PaymentSetAttentionParams{ID: p.ID, Reason: reason}); err != nil {
		return fmt.Errorf("record payment: %w", err)
	}
	s.log.Warn("the provider cannot take this payment's amount: the issuer settles it", "payment", p.ID, "reason", reason)
	s.needsAttentionCounter(code).Inc()
	if err := audit.Record(ctx, tx, audit.Change{
		Actor: identity.System.Subject, ActorRole: string(identity.System.Role), OrganizationID: p.IssuerID,
		Action: EventPaymentNeedsAttention, TargetType: "invoice", TargetID: p.InvoiceID.String(),
		Before: map[string]any{"status": p.Status}, After: map[string]any{"status": "needs_attention", "reason": reason},
	}); err != nil {
		return err
	}
	if err := s.publish(ctx, tx, p.ID, EventPaymentNeedsAttention); err != nil {
		return err
	}
	// An amount below the provider's minimum is a small debt the issuer
	// collects by hand or writes off: suspending a subscription for it
	// would cost the issuer more than it is worth. Any other amount the
	// provider cannot take is dunned as a payment failed for good, so that
	// a consumer is not admitted for ever on a debt nobody can collect by
	// card; paying by transfer (marked paid) or a write-off ends it.
	if code == "amount_too_small" {
		return nil
	}
	_, grace, err := retrySchedule(ctx, q, p.IssuerID)
	if err != nil {
		return err
	}
	return s.pastDue(ctx, tx, p, grace, now)
}

// EventPaymentNeedsAttention announces a payment the provider can never
// take, for a person to settle.
const EventPaymentNeedsAttention = "payment.needs_attention"

// needsAttentionReasons are the codes a payment needs attention for, each
// counted from the start so that an alert on the counter can fire.
var needsAttentionReasons = []string{"amount_too_small", "amount_too_large", "amount_not_representable"}

func needsAttentionName(code string) string {
	return `veil_controlplane_payment_needs_attention_total{reason="` + code + `"}`
}

func (s *Service) needsAttentionCounter(code string) *metrics.Counter {
	return s.cfg.Metrics.GetOrCreateCounter(needsAttentionName(code))
}

// retrySchedule reads the issuer's retry days and grace, or the defaults
// when it has no payment settings.
func retrySchedule(ctx context.Context, q *db.Queries, issuer uuid.UUID) ([]int32, int32, error) {
	st, err := q.SettingsGet(ctx, issuer)
	switch {
	case err == nil:
		return st.RetryDays, st.GraceDays, nil
	case errors.Is(err, pgx.ErrNoRows):
		return DefaultRetryDays, int32(DefaultGraceDays), nil
	}
	return nil, 0, fmt.Errorf("read payment settings: %w", err)
}

// uncollectible reports whether a provider error says this amount can
// never be taken by it, so that retrying is pointless.
func uncollectible(err error) (string, bool) {
	if errors.Is(err, metering.ErrAmountNotRepresentable) {
		return "amount_not_representable", true
	}
	var pe *metering.ProviderError
	if errors.As(err, &pe) && (pe.Code == "amount_too_small" || pe.Code == "amount_too_large") {
		return pe.Code, true
	}
	return "", false
}
