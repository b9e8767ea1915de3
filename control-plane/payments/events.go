package payments

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// ApplyEvent applies a verified provider event once: its id is stored in
// the transaction of its effect, so a redelivery changes nothing, and an
// event that arrives late (a failure after the success) cannot move a
// payment back. An event about an object Veil does not know is stored
// and otherwise ignored.
func (s *Service) ApplyEvent(ctx context.Context, provider string, ev metering.WebhookEvent) error {
	if s.cfg.Providers[provider] == nil {
		return fmt.Errorf("apply event: %w: provider %q", ErrNotConfigured, provider)
	}
	if ev.ID == "" || len(ev.ID) > 255 {
		return fmt.Errorf("apply event: %w: event id", ErrInvalid)
	}
	if ev.Type == metering.WebhookPaymentRefunded {
		// It says only how much of the charge is refunded in all: the
		// charge's refunds at the provider say which, those made outside
		// Veil included. Read before the event is recorded, so that an
		// error leaves it for the provider to deliver again.
		if err := s.syncCharge(ctx, provider, ev.ProviderPaymentID); err != nil {
			return fmt.Errorf("apply event %s: %w", ev.ID, err)
		}
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		n, err := q.EventInsert(ctx, db.EventInsertParams{Provider: provider, EventID: ev.ID, Type: string(ev.Type),
			ObjectID: objectID(ev), ReceivedAt: s.now()})
		if err != nil {
			return fmt.Errorf("record event: %w", err)
		}
		if n == 0 {
			return nil
		}
		switch ev.Type {
		case metering.WebhookPaymentSucceeded, metering.WebhookPaymentFailed, metering.WebhookPaymentCanceled,
			metering.WebhookPaymentProcessing, metering.WebhookPaymentRequiresAction:
			return s.paymentEvent(ctx, tx, ev)
		case metering.WebhookRefundSucceeded, metering.WebhookRefundFailed, metering.WebhookRefundPending:
			return s.refundEvent(ctx, tx, ev)
		case metering.WebhookDisputeOpened, metering.WebhookDisputeUpdated, metering.WebhookDisputeClosed:
			return s.disputeEvent(ctx, tx, ev)
		}
		return nil
	})
}

func objectID(ev metering.WebhookEvent) string {
	for _, id := range []string{ev.ProviderDisputeID, ev.ProviderRefundID, ev.ProviderPaymentID, ev.PaymentMethodID, ev.ProviderCustomerID} {
		if id != "" {
			return id
		}
	}
	return ""
}

var eventStatus = map[metering.WebhookEventType]metering.PaymentStatus{
	metering.WebhookPaymentSucceeded:      metering.PaymentSucceeded,
	metering.WebhookPaymentFailed:         metering.PaymentFailed,
	metering.WebhookPaymentCanceled:       metering.PaymentCanceled,
	metering.WebhookPaymentProcessing:     metering.PaymentProcessing,
	metering.WebhookPaymentRequiresAction: metering.PaymentRequiresAction,
}

// paymentEvent settles the attempt the event is about: found by the
// provider's payment id, or, when the attempt's answer was never recorded
// (a crash), as the open attempt of the invoice the payment carries.
func (s *Service) paymentEvent(ctx context.Context, tx pgx.Tx, ev metering.WebhookEvent) error {
	q := db.New(tx)
	p, att, err := s.attemptOf(ctx, q, ev.ProviderPaymentID, ev.InvoiceID)
	if err != nil {
		return err
	}
	if p == nil {
		if ev.Type == metering.WebhookPaymentSucceeded {
			s.log.Error("a payment succeeded that no open attempt is waiting for: check it and refund it if it is a second",
				"provider_payment", ev.ProviderPaymentID, "invoice", ev.InvoiceID, "event", ev.ID)
		}
		return nil
	}
	if !s.sameCharge(*p, *att, ev.Amount, ev.ProviderCustomerID, ev.ProviderPaymentID) {
		return nil
	}
	return s.settle(ctx, tx, *p, *att, outcome{PaymentResult: metering.PaymentResult{
		ProviderPaymentID: ev.ProviderPaymentID, Status: eventStatus[ev.Type],
		FailureCode: ev.FailureCode, DeclineCode: ev.DeclineCode, FailureMessage: ev.FailureMessage,
	}})
}

// attemptOf locks the payment, then the attempt, an event is about; nil
// when it is none of Veil's.
func (s *Service) attemptOf(ctx context.Context, q *db.Queries, providerPaymentID, invoice string) (*db.Payment, *db.PaymentAttempt, error) {
	att, err := q.AttemptByProviderID(ctx, &providerPaymentID)
	if err == nil {
		p, err := q.PaymentLock(ctx, att.PaymentID)
		if err != nil {
			return nil, nil, fmt.Errorf("lock payment: %w", err)
		}
		if att, err = q.AttemptLock(ctx, att.ID); err != nil {
			return nil, nil, fmt.Errorf("lock payment attempt: %w", err)
		}
		return &p, &att, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, fmt.Errorf("read payment attempt: %w", err)
	}
	invoiceID, perr := uuid.Parse(invoice)
	if perr != nil {
		s.log.Info("provider event about an unknown payment", "provider_payment", providerPaymentID)
		return nil, nil, nil
	}
	p, err := q.PaymentLockByInvoice(ctx, invoiceID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("lock payment: %w", err)
	}
	att, err = q.AttemptOpenOf(ctx, p.ID)
	if errors.Is(err, pgx.ErrNoRows) {
		// An attempt canceled while its call was under way: its success
		// is refunded (settle), so it must be found.
		att, err = q.AttemptInDoubtOf(ctx, p.ID)
	}
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && att.ProviderPaymentID != nil) {
		s.log.Info("provider event about no open attempt", "provider_payment", providerPaymentID, "invoice", invoiceID)
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read payment attempt: %w", err)
	}
	return &p, &att, nil
}

// refundEvent applies a refund's news: Veil's refund settles, one made
// outside Veil is recorded (providerRefund).
func (s *Service) refundEvent(ctx context.Context, tx pgx.Tx, ev metering.WebhookEvent) error {
	st := map[metering.WebhookEventType]metering.RefundStatus{
		metering.WebhookRefundSucceeded: metering.RefundSucceeded,
		metering.WebhookRefundFailed:    metering.RefundFailed,
		metering.WebhookRefundPending:   metering.RefundPending,
	}[ev.Type]
	return s.providerRefund(ctx, tx, ev.ProviderPaymentID, metering.RefundResult{ProviderRefundID: ev.ProviderRefundID,
		Status: st, Amount: ev.Amount, FailureReason: ev.Reason, RefundID: ev.RefundID})
}

// syncCharge applies the refunds at the provider of a charge Veil made;
// a charge it did not make, or a provider that cannot list, is left.
func (s *Service) syncCharge(ctx context.Context, provider, pi string) error {
	lister, ok := s.cfg.Providers[provider].(metering.RefundLister)
	if !ok || pi == "" {
		return nil
	}
	att, err := db.New(s.pool).AttemptByProviderID(ctx, &pi)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read payment attempt: %w", err)
	}
	_, err = s.syncRefunds(ctx, lister, att.PaymentID, pi)
	return err
}

// disputeEvent records a dispute's opening or its close. A close that
// arrives first records the dispute closed, and the late opening then
// changes nothing.
func (s *Service) disputeEvent(ctx context.Context, tx pgx.Tx, ev metering.WebhookEvent) error {
	q := db.New(tx)
	if ev.ProviderDisputeID == "" {
		return fmt.Errorf("apply dispute event: %w: dispute id missing", ErrInvalid)
	}
	now := s.now()
	var closed *time.Time
	if ev.Type == metering.WebhookDisputeClosed {
		closed = &now
	}
	att, err := q.AttemptByProviderID(ctx, &ev.ProviderPaymentID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		s.log.Info("dispute of an unknown payment", "provider_payment", ev.ProviderPaymentID)
	case err != nil:
		return fmt.Errorf("read payment attempt: %w", err)
	default:
		opened := ev.Created
		if opened.IsZero() {
			opened = now
		}
		err = q.DisputeOpen(ctx, db.DisputeOpenParams{PaymentID: att.PaymentID, ProviderDisputeID: ev.ProviderDisputeID,
			Amount: ev.Amount.Minor, Currency: ev.Amount.Currency, Reason: ev.Reason, Status: ev.Status,
			OpenedAt: opened, ClosedAt: closed})
		if err != nil {
			return fmt.Errorf("record dispute: %w", err)
		}
	}
	if ev.Type == metering.WebhookDisputeUpdated {
		if err := q.DisputeSetStatus(ctx, db.DisputeSetStatusParams{ProviderDisputeID: ev.ProviderDisputeID, Status: ev.Status}); err != nil {
			return fmt.Errorf("record dispute: %w", err)
		}
	}
	if err := disputeFunds(ctx, q, ev, now); err != nil {
		return err
	}
	if closed != nil {
		if err := q.DisputeClose(ctx, db.DisputeCloseParams{ProviderDisputeID: ev.ProviderDisputeID, Status: ev.Status, ClosedAt: closed}); err != nil {
			return fmt.Errorf("close dispute: %w", err)
		}
		if ev.Status == "lost" && att.PaymentID != uuid.Nil {
			return s.disputeLost(ctx, tx, att, ev)
		}
	}
	return nil
}
