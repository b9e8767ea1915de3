package payments

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// CancelForVoid cancels the payment of an invoice being voided: no
// further attempt is made, and one under way is canceled at the provider
// (after the commit; an error is returned for the caller to repeat). An
// invoice without a payment has nothing to cancel.
func (s *Service) CancelForVoid(ctx context.Context, invoiceID uuid.UUID) error {
	var providerID string
	var prov metering.PaymentProvider
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		p, err := q.PaymentLockByInvoice(ctx, invoiceID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("lock payment: %w", err)
		}
		switch p.Status {
		case "succeeded":
			return ErrPaymentState
		case "canceled":
			return nil
		}
		prov = s.cfg.Providers[p.Provider]
		att, err := q.AttemptOpenOf(ctx, p.ID)
		switch {
		case err == nil:
			now := s.now()
			if att.ProviderPaymentID != nil {
				providerID = *att.ProviderPaymentID
			}
			err = q.AttemptUpdate(ctx, db.AttemptUpdateParams{ID: att.ID, Status: "canceled", FailureCode: "invoice_void",
				Reference: att.Reference, FinishedAt: &now, Now: now})
			if err != nil {
				return fmt.Errorf("cancel payment attempt: %w", err)
			}
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("read payment attempt: %w", err)
		}
		if err := q.PaymentSetStatus(ctx, db.PaymentSetStatusParams{ID: p.ID, Status: "canceled"}); err != nil {
			return fmt.Errorf("cancel payment: %w", err)
		}
		return nil
	})
	if err != nil || providerID == "" || prov == nil {
		return err
	}
	if err := prov.CancelPayment(ctx, providerID); err != nil {
		return fmt.Errorf("cancel payment at the provider: %w", err)
	}
	return nil
}

// MarkPaidManually records that an invoice's payment arrived outside the
// provider (a bank transfer the issuer saw on its account), for the
// issuer's providers and admins, with the transfer's reference, audited:
// the payment succeeds and the invoice is paid as a provider's event
// would have done.
func (s *Service) MarkPaidManually(ctx context.Context, actor identity.Actor, invoiceID uuid.UUID, reference string) (Payment, error) {
	if reference == "" || len(reference) > 200 {
		return Payment{}, fmt.Errorf("mark paid: %w: reference of 1 to 200 bytes required", ErrInvalid)
	}
	var out Payment
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		p, err := q.PaymentLockByInvoice(ctx, invoiceID)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("lock payment: %w", err)
		}
		if err := authorize(actor, p.IssuerID, p.CustomerID); err != nil {
			return err
		}
		if p.Status == "canceled" || p.Status == "succeeded" {
			return ErrPaymentState
		}
		att, err := s.manualAttempt(ctx, q, p)
		if err != nil {
			return err
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
	return out, err
}

// manualAttempt is the attempt a payment by hand settles: the open one,
// or a new one when none is (a payment that failed for good).
func (s *Service) manualAttempt(ctx context.Context, q *db.Queries, p db.Payment) (db.PaymentAttempt, error) {
	att, err := q.AttemptOpenOf(ctx, p.ID)
	if err == nil || !errors.Is(err, pgx.ErrNoRows) {
		return att, err
	}
	n := p.Attempts + 1
	att, err = q.AttemptInsert(ctx, db.AttemptInsertParams{PaymentID: p.ID, AttemptNo: n,
		IdempotencyKey: fmt.Sprintf("veil-inv-%s-a%d", p.InvoiceID, n), ProviderCustomerID: "", Now: s.now()})
	if err != nil {
		return att, fmt.Errorf("insert payment attempt: %w", err)
	}
	if err := q.PaymentStartAttempt(ctx, p.ID); err != nil {
		return att, fmt.Errorf("start payment attempt: %w", err)
	}
	return att, nil
}
