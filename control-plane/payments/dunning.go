package payments

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/internal/periodic"
)

// DefaultGraceDays is how long a past_due subscription of an issuer
// without payment settings is admitted before it is suspended.
const DefaultGraceDays = 3

// Dunning moves the subscription of an invoice that is not paid (the
// subscriptions service): past_due when its payment's last attempt fails,
// suspended when the grace ends, active again once the invoice is paid.
// PastDue and InvoiceSettled run in the payment's transaction, so that the
// subscription's record is written after the commit that paid it.
type Dunning interface {
	PastDue(ctx context.Context, tx pgx.Tx, subscription, invoice uuid.UUID, number string, suspendAt time.Time) error
	InvoiceSettled(ctx context.Context, tx pgx.Tx, invoice uuid.UUID, reason string) error
	EscalateDunning(ctx context.Context, now time.Time) (suspended, reactivated int, err error)
	DisputeLost(ctx context.Context, tx pgx.Tx, subscription, invoice uuid.UUID, number string, suspendAt time.Time) error
}

// disputeLostDunning makes the subscription billed by the invoice of a
// payment whose dispute was lost past_due for the issuer's grace from
// now, then suspended as an unpaid one would be: the customer got its
// money back from its bank and would otherwise keep the service it did
// not pay for. The invoice stays paid, so only an admin's resume ends it
// (the issuer is emailed, NoticeDisputeLostIssuer, to decide).
func (s *Service) disputeLostDunning(ctx context.Context, tx pgx.Tx, p db.Payment) error {
	if s.cfg.Dunning == nil {
		return nil
	}
	q := db.New(tx)
	inv, err := q.InvoiceForDunning(ctx, p.InvoiceID)
	if err != nil {
		return fmt.Errorf("read invoice: %w", err)
	}
	_, grace, err := retrySchedule(ctx, q, p.IssuerID)
	if err != nil {
		return err
	}
	suspendAt := s.now().Add(time.Duration(grace) * 24 * time.Hour)
	if err := s.cfg.Dunning.DisputeLost(ctx, tx, inv.SubscriptionID, p.InvoiceID, inv.Number, suspendAt); err != nil {
		return fmt.Errorf("dun subscription %s: %w", inv.SubscriptionID, err)
	}
	return nil
}

// pastDue makes the subscription of the payment's invoice past_due, once
// its last attempt failed, for graceDays from now.
func (s *Service) pastDue(ctx context.Context, tx pgx.Tx, p db.Payment, graceDays int32, now time.Time) error {
	if s.cfg.Dunning == nil {
		return nil
	}
	inv, err := db.New(tx).InvoiceForDunning(ctx, p.InvoiceID)
	if err != nil {
		return fmt.Errorf("read invoice: %w", err)
	}
	if inv.Status != "open" {
		return nil
	}
	suspendAt := now.Add(time.Duration(graceDays) * 24 * time.Hour)
	if err := s.cfg.Dunning.PastDue(ctx, tx, inv.SubscriptionID, p.InvoiceID, inv.Number, suspendAt); err != nil {
		return fmt.Errorf("dun subscription %s: %w", inv.SubscriptionID, err)
	}
	return nil
}

// paid announces invoice.paid when the payment is what paid its invoice,
// at now in this transaction (not when billing closed it before), and
// ends the dunning of the subscription of the paid invoice. Another
// invoice of the subscription whose payment failed for good dunns it
// again, with a grace of its own from now (the subscriptions service
// looks for it, as it does when an invoice is settled in billing): a
// payment of one invoice does not let the other debts through.
func (s *Service) paid(ctx context.Context, tx pgx.Tx, p db.Payment, now time.Time) error {
	inv, err := db.New(tx).InvoicePaidAt(ctx, p.InvoiceID)
	if err != nil {
		return fmt.Errorf("read invoice: %w", err)
	}
	// Postgres keeps microseconds, which pgx truncates to.
	if inv.Status == "paid" && inv.PaidAt != nil && inv.PaidAt.Equal(now.Truncate(time.Microsecond)) {
		if _, err := s.invoicePaid(ctx, tx, p.InvoiceID); err != nil {
			return err
		}
	}
	if s.cfg.Dunning == nil {
		return nil
	}
	if err := s.cfg.Dunning.InvoiceSettled(ctx, tx, p.InvoiceID, "invoice paid"); err != nil {
		return fmt.Errorf("end dunning of invoice %s: %w", p.InvoiceID, err)
	}
	return nil
}

// EscalateDunning suspends the past_due subscriptions whose grace ended
// by now and makes active again those whose invoice was settled outside
// a payment (marked paid or uncollectible in billing). It returns how
// many were suspended and reactivated.
func (s *Service) EscalateDunning(ctx context.Context, now time.Time) (suspended, reactivated int, err error) {
	if s.cfg.Dunning == nil {
		return 0, 0, nil
	}
	return s.cfg.Dunning.EscalateDunning(ctx, now)
}

// EscalateDunningArgs is the periodic run of EscalateDunning.
type EscalateDunningArgs struct{}

// Kind implements river.JobArgs.
func (EscalateDunningArgs) Kind() string { return "dunning_escalate" }

// EscalateDunningWorker returns the worker of EscalateDunningArgs, which
// logs what a run changed. Each subscription is a transaction of its own,
// so a run cut short by its timeout loses nothing: the next carries on.
func (s *Service) EscalateDunningWorker() *periodic.Worker[EscalateDunningArgs] {
	return periodic.NewWorker[EscalateDunningArgs](func(ctx context.Context) error {
		suspended, reactivated, err := s.EscalateDunning(ctx, s.now())
		if err != nil {
			s.log.WarnContext(ctx, "dunning", "suspended", suspended, "reactivated", reactivated, "err", err)
		} else if suspended+reactivated > 0 {
			s.log.InfoContext(ctx, "dunning", "suspended", suspended, "reactivated", reactivated)
		}
		return err
	}).WithTimeout(50 * time.Second)
}
