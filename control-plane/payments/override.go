package payments

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// closeCodes are the failure codes an invoice's close leaves on the
// attempts it cancels, by the invoice's new status.
var closeCodes = map[string]string{"void": "invoice_void", "paid": "paid_elsewhere", "uncollectible": "invoice_uncollectible"}

// InvoiceClosed is billing's word that an invoice was voided ("void"),
// marked paid outside payments ("paid") or written off
// ("uncollectible"), after its commit. The payment, unless it succeeded,
// is canceled in all three cases: no attempt follows, and the attempt
// under way is canceled, at the provider too once its id is known, so
// that its success, should it come, is refunded (as "void" for a voided
// invoice, "duplicate" for one paid) rather than kept; that of an invoice
// written off is kept and pays it, as the debt was real. Repeating it changes
// nothing; an error is returned for the caller to repeat.
func (s *Service) InvoiceClosed(ctx context.Context, invoiceID uuid.UUID, status string) error {
	code, ok := closeCodes[status]
	if !ok {
		return fmt.Errorf("close invoice payment: %w: status %q", ErrInvalid, status)
	}
	var paymentID uuid.UUID
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		p, err := q.PaymentLockByInvoice(ctx, invoiceID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("lock payment: %w", err)
		}
		paymentID = p.ID
		if p.Status == "succeeded" || p.Status == "canceled" {
			return nil
		}
		if err := s.cancelOpen(ctx, q, p, code); err != nil {
			return err
		}
		if err := q.PaymentSetStatus(ctx, db.PaymentSetStatusParams{ID: p.ID, Status: "canceled"}); err != nil {
			return fmt.Errorf("cancel payment: %w", err)
		}
		return audit.Record(ctx, tx, audit.Change{
			Actor: identity.System.Subject, ActorRole: string(identity.System.Role), OrganizationID: p.IssuerID,
			Action: "payment.canceled", TargetType: "invoice", TargetID: p.InvoiceID.String(),
			Before: map[string]any{"status": p.Status}, After: map[string]any{"status": "canceled", "reason": code},
		})
	})
	if err != nil || paymentID == uuid.Nil {
		return err
	}
	return s.resolveDoubts(ctx, &paymentID)
}

// cancelOpen cancels the payment's attempt under way, if any, leaving it
// in doubt for resolveDoubts.
func (s *Service) cancelOpen(ctx context.Context, q *db.Queries, p db.Payment, code string) error {
	att, err := q.AttemptOpenOf(ctx, p.ID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read payment attempt: %w", err)
	}
	if err := q.AttemptCancel(ctx, db.AttemptCancelParams{ID: att.ID, FailureCode: code, Now: s.now()}); err != nil {
		return fmt.Errorf("cancel payment attempt: %w", err)
	}
	return nil
}

// MarkPaidManually records that an invoice's payment arrived outside the
// provider (a bank transfer the issuer saw on its account), for the
// issuer's providers and admins, with the transfer's reference, audited:
// an attempt of its own succeeds and the invoice is paid as a provider's
// event would have done. The provider's attempt under way is canceled
// (paid_by_hand), at the provider too after the commit; should it
// succeed all the same, its charge is refunded as a duplicate.
func (s *Service) MarkPaidManually(ctx context.Context, actor identity.Actor, invoiceID uuid.UUID, reference string) (Payment, error) {
	if reference == "" || len(reference) > 200 {
		return Payment{}, fmt.Errorf("mark paid: %w: reference of 1 to 200 bytes required", ErrInvalid)
	}
	var out Payment
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		p, err := lockPayment(ctx, q, invoiceID, issuerOnly(actor))
		if err != nil {
			return err
		}
		if p.Status == "canceled" || p.Status == "succeeded" {
			return ErrPaymentState
		}
		st, err := q.InvoiceStatusLock(ctx, p.InvoiceID)
		if err != nil {
			return fmt.Errorf("lock invoice: %w", err)
		}
		if st != "open" && st != "uncollectible" {
			return fmt.Errorf("%w: %s", ErrInvoiceState, st)
		}
		if err := s.cancelOpen(ctx, q, p, "paid_by_hand"); err != nil {
			return err
		}
		att, err := s.manualAttempt(ctx, q, p)
		if err != nil {
			return err
		}
		// The payouts statement counts the money as the platform's only
		// when a platform admin confirmed it.
		if err := q.AttemptSettledBy(ctx, db.AttemptSettledByParams{ID: att.ID, Role: string(actor.Role)}); err != nil {
			return fmt.Errorf("record who marked paid: %w", err)
		}
		if p, err = q.PaymentLock(ctx, p.ID); err != nil {
			return fmt.Errorf("read payment: %w", err)
		}
		o := outcome{PaymentResult: metering.PaymentResult{Status: metering.PaymentSucceeded}, reference: reference, actor: &actor}
		if err := s.settle(ctx, tx, p, att, o); err != nil {
			return err
		}
		if p, err = q.PaymentLock(ctx, p.ID); err != nil {
			return fmt.Errorf("read payment: %w", err)
		}
		out = toPayment(p)
		return nil
	})
	if err != nil {
		return out, err
	}
	return out, s.resolveDoubts(ctx, &out.ID)
}

// manualAttempt inserts the attempt a payment by hand settles, with no
// customer at the provider.
func (s *Service) manualAttempt(ctx context.Context, q *db.Queries, p db.Payment) (db.PaymentAttempt, error) {
	n := p.Attempts + 1
	att, err := q.AttemptInsert(ctx, db.AttemptInsertParams{PaymentID: p.ID, AttemptNo: n,
		IdempotencyKey: fmt.Sprintf("veil-inv-%s-a%d", p.InvoiceID, n), ProviderCustomerID: "", Now: s.now()})
	if err != nil {
		return att, fmt.Errorf("insert payment attempt: %w", err)
	}
	if err := q.PaymentStartAttempt(ctx, p.ID); err != nil {
		return att, fmt.Errorf("start payment attempt: %w", err)
	}
	return att, nil
}
