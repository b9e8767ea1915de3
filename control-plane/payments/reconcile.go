package payments

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// finder is a provider that can look a payment up by the idempotency key
// it was created with (Stripe's search), for a call whose answer was lost
// or refused as a reuse of its key.
type finder interface {
	// FindPayment returns ErrPaymentNotFound when there is none.
	FindPayment(ctx context.Context, invoiceID, idempotencyKey string) (metering.PaymentResult, error)
}

// maxCheckBackoff bounds how long reconciliation waits between reads of
// an attempt long under way (a bank debit takes days).
const maxCheckBackoff = 6 * time.Hour

// Reconcile settles up to max attempts under way for longer than a
// minute from the provider's own state, as their lost webhooks would
// have: one whose answer was never recorded (a crash) is called again
// with its key, which returns what the first call did, or looked up at
// the provider once its key may be forgotten; one the provider answered
// is read, less often the longer it stays under way. It then resolves
// attempts canceled in doubt and sends the refunds of stray charges. It
// returns how many attempts it looked at; an error of one does not stop
// the others.
func (s *Service) Reconcile(ctx context.Context, max int) (int, error) {
	if max <= 0 || max > 10000 {
		max = 100
	}
	now := s.now()
	rows, err := db.New(s.pool).AttemptsUnsettled(ctx, db.AttemptsUnsettledParams{
		Before: now.Add(-unsettledAfter), Now: &now, Max: int32(max)})
	if err != nil {
		return 0, fmt.Errorf("list unsettled attempts: %w", err)
	}
	var errs []error
	for _, r := range rows {
		if err := s.reconcileOne(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("reconcile invoice %s: %w", r.InvoiceID, err))
		}
	}
	errs = append(errs, s.resolveDoubts(ctx, nil))
	return len(rows), errors.Join(errs...)
}

func (s *Service) reconcileOne(ctx context.Context, r db.AttemptsUnsettledRow) error {
	// Whatever happens below, the attempt goes to the back of the queue,
	// so that one that cannot be settled does not hold up the others.
	defer func() {
		err := db.New(s.pool).AttemptTouch(ctx, db.AttemptTouchParams{ID: r.ID, Now: s.now(), CheckAfter: s.backoff(r.CreatedAt)})
		if err != nil {
			s.log.Warn("payment attempt not put back in the queue", "attempt", r.ID, "err", err)
		}
	}()
	if r.ProviderPaymentID == nil {
		if r.CreatedAt.After(s.now().Add(-keyLifetime)) {
			_, err := s.Collect(ctx, r.InvoiceID)
			return err
		}
		return s.settleLost(ctx, r.PaymentID, r.ID, r.Provider, r.InvoiceID, r.IdempotencyKey)
	}
	prov := s.cfg.Providers[r.Provider]
	if prov == nil {
		return fmt.Errorf("%w: provider %q", ErrNotConfigured, r.Provider)
	}
	res, err := prov.PaymentStatus(ctx, *r.ProviderPaymentID)
	if err != nil {
		return err
	}
	return s.settleFound(ctx, r.PaymentID, r.ID, res)
}

// backoff is when an attempt created at created is next read: a quarter
// of its age from now, between a minute and maxCheckBackoff.
func (s *Service) backoff(created time.Time) *time.Time {
	wait := min(max(s.now().Sub(created)/4, unsettledAfter), maxCheckBackoff)
	at := s.now().Add(wait)
	return &at
}

// settleLost settles an attempt whose call's answer was lost and whose
// key the provider may have forgotten, from what a search finds: the
// payment it made, or, when there is none, a failure (nothing was
// charged), which schedules the next attempt.
func (s *Service) settleLost(ctx context.Context, paymentID, attemptID uuid.UUID, provider string, invoiceID uuid.UUID, key string) error {
	f, ok := s.cfg.Providers[provider].(finder)
	if !ok {
		s.log.Error("payment attempt unanswered past its key's lifetime: settle it by hand", "payment", paymentID, "key", key)
		return nil
	}
	res, err := f.FindPayment(ctx, invoiceID.String(), key)
	switch {
	case errors.Is(err, metering.ErrPaymentNotFound):
		res = metering.PaymentResult{Status: metering.PaymentFailed, FailureCode: "not_found_at_provider",
			FailureMessage: "no payment was found at the provider for this attempt"}
	case err != nil:
		return err
	}
	return s.settleFound(ctx, paymentID, attemptID, res)
}

// settleFound applies what the provider says of an attempt.
func (s *Service) settleFound(ctx context.Context, paymentID, attemptID uuid.UUID, res metering.PaymentResult) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		p, err := q.PaymentLock(ctx, paymentID)
		if err != nil {
			return fmt.Errorf("lock payment: %w", err)
		}
		att, err := q.AttemptLock(ctx, attemptID)
		if err != nil {
			return fmt.Errorf("lock payment attempt: %w", err)
		}
		if res.Status == metering.PaymentPending || string(res.Status) == att.Status {
			return nil
		}
		if res.ProviderPaymentID != "" && !s.sameCharge(p, att, res.Amount, res.ProviderCustomerID, res.ProviderPaymentID) {
			return nil
		}
		return s.settle(ctx, tx, p, att, outcome{PaymentResult: res})
	})
	if err != nil {
		return err
	}
	return s.resolveDoubts(ctx, &paymentID)
}

// resolveDoubts makes sure that attempts canceled or failed while their
// payment could still go through at the provider (of one payment, or
// all) cannot charge: each is canceled there; one that succeeded all the
// same is settled (a stray charge is refunded), one that is canceled or
// failed leaves doubt. One without a provider id is looked up once its
// call can no longer be under way. Then the refunds of stray charges are
// sent.
func (s *Service) resolveDoubts(ctx context.Context, paymentID *uuid.UUID) error {
	now := s.now()
	before := now.Add(time.Second)
	if paymentID == nil {
		before = now.Add(-unsettledAfter)
	}
	rows, err := db.New(s.pool).AttemptsInDoubt(ctx, db.AttemptsInDoubtParams{Before: before, Now: &now, PaymentID: paymentID, Max: 100})
	if err != nil {
		return fmt.Errorf("list payment attempts in doubt: %w", err)
	}
	var errs []error
	for _, r := range rows {
		if err := s.resolveDoubt(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("resolve payment attempt %s: %w", r.ID, err))
		}
	}
	errs = append(errs, s.pushStrayRefunds(ctx, paymentID))
	return errors.Join(errs...)
}

func (s *Service) resolveDoubt(ctx context.Context, r db.AttemptsInDoubtRow) error {
	q := db.New(s.pool)
	prov := s.cfg.Providers[r.Provider]
	if prov == nil {
		return fmt.Errorf("%w: provider %q", ErrNotConfigured, r.Provider)
	}
	if r.ProviderPaymentID == nil && r.UpdatedAt.After(s.now().Add(-unsettledAfter)) {
		return nil // its call may be under way still; its answer binds it
	}
	if err := q.AttemptTouch(ctx, db.AttemptTouchParams{ID: r.ID, Now: s.now(), CheckAfter: s.backoff(r.CreatedAt)}); err != nil {
		return fmt.Errorf("touch payment attempt: %w", err)
	}
	var res metering.PaymentResult
	if r.ProviderPaymentID == nil {
		f, ok := prov.(finder)
		if !ok {
			return s.clearDoubt(ctx, r.ID, "")
		}
		found, err := f.FindPayment(ctx, r.InvoiceID.String(), r.IdempotencyKey)
		if errors.Is(err, metering.ErrPaymentNotFound) {
			if r.CreatedAt.Before(s.now().Add(-keyLifetime)) {
				return s.clearDoubt(ctx, r.ID, "")
			}
			return nil
		}
		if err != nil {
			return err
		}
		res = found
	} else {
		res.ProviderPaymentID = *r.ProviderPaymentID
	}
	cerr := prov.CancelPayment(ctx, res.ProviderPaymentID)
	if cerr == nil || errors.Is(cerr, metering.ErrPaymentNotFound) {
		return s.clearDoubt(ctx, r.ID, res.ProviderPaymentID)
	}
	st, err := prov.PaymentStatus(ctx, res.ProviderPaymentID)
	if err != nil {
		return errors.Join(cerr, err)
	}
	switch st.Status {
	case metering.PaymentSucceeded:
		return s.settleFound(ctx, r.PaymentID, r.ID, st)
	case metering.PaymentCanceled, metering.PaymentFailed:
		return s.clearDoubt(ctx, r.ID, res.ProviderPaymentID)
	}
	return nil // processing: it will succeed or fail; read again later
}

func (s *Service) clearDoubt(ctx context.Context, attemptID uuid.UUID, providerPaymentID string) error {
	err := db.New(s.pool).AttemptResolveDoubt(ctx, db.AttemptResolveDoubtParams{ID: attemptID,
		ProviderPaymentID: optional(providerPaymentID), Now: s.now()})
	if err != nil {
		return fmt.Errorf("record payment attempt: %w", err)
	}
	return nil
}

// pushStrayRefunds sends the pending refunds of stray charges (of one
// payment, or all) to the provider with their keys, and records the
// answers. An error that may have reached the provider leaves the refund
// pending, to be sent again with its key; an error of one does not stop
// the others.
func (s *Service) pushStrayRefunds(ctx context.Context, paymentID *uuid.UUID) error {
	rows, err := db.New(s.pool).StrayRefundsPending(ctx, db.StrayRefundsPendingParams{PaymentID: paymentID, Max: 100,
		KeySecs: keyLifetime.Seconds()})
	if err != nil {
		return fmt.Errorf("list refunds of stray charges: %w", err)
	}
	var errs []error
	for _, r := range rows {
		if err := s.pushStrayRefund(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("refund stray charge %s: %w", r.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Service) pushStrayRefund(ctx context.Context, r db.StrayRefundsPendingRow) error {
	prov := s.cfg.Providers[r.Provider]
	if prov == nil {
		return fmt.Errorf("%w: provider %q", ErrNotConfigured, r.Provider)
	}
	// Touched first, so that a refund that keeps failing goes to the back
	// of the queue instead of holding the others up.
	if err := db.New(s.pool).RefundTouch(ctx, r.ID); err != nil {
		return fmt.Errorf("touch refund: %w", err)
	}
	if !r.KeyAlive {
		// The provider has forgotten the key: repeating it could refund
		// twice, so the charge's refunds are read first.
		done, err := s.strayRefundAtProvider(ctx, prov, r)
		if done || err != nil {
			return err
		}
	}
	in := metering.RefundInput{ProviderPaymentID: *r.ProviderPaymentID,
		Amount: metering.Money{Minor: r.Amount, Currency: r.Currency}, Reason: r.Reason, RefundID: r.ID.String(),
		IdempotencyKey: r.IdempotencyKey}
	res, err := prov.Refund(ctx, in)
	if errors.Is(err, metering.ErrIdempotencyConflict) {
		// Sent before stray refunds carried their id: its own parameters
		// get its answer replayed.
		in.RefundID = ""
		res, err = prov.Refund(ctx, in)
	}
	if err != nil && !definite(err) {
		return err
	}
	if err != nil {
		res = metering.RefundResult{Status: metering.RefundFailed, FailureReason: failureCode(err)}
		s.log.Error("the refund of a stray charge was refused: refund it by hand", "refund", r.ID, "err", err)
	}
	return s.settleStrayRefund(ctx, r.ID, res)
}

// strayRefundAtProvider looks for a stray charge's refund among the
// charge's refunds at the provider, by the id it carries, or, for one
// sent before refunds carried it, as the whole charge refunded; found,
// it is recorded.
func (s *Service) strayRefundAtProvider(ctx context.Context, prov metering.PaymentProvider, r db.StrayRefundsPendingRow) (bool, error) {
	lister, ok := prov.(metering.RefundLister)
	if !ok {
		return false, nil
	}
	list, err := lister.ListRefunds(ctx, *r.ProviderPaymentID)
	if err != nil {
		return false, fmt.Errorf("list refunds at the provider: %w", err)
	}
	for _, res := range list {
		ours := res.RefundID == r.ID.String() ||
			(res.RefundID == "" && res.Amount == metering.Money{Minor: r.Amount, Currency: r.Currency})
		if ours && (res.Status == metering.RefundSucceeded || res.Status == metering.RefundPending) {
			return true, s.settleStrayRefund(ctx, r.ID, res)
		}
	}
	return false, nil
}

// settleStrayRefund records the provider's answer to a stray charge's
// refund; the payment's own refunded amount is not the charge's.
func (s *Service) settleStrayRefund(ctx context.Context, refundID uuid.UUID, res metering.RefundResult) error {
	if (res.Status == metering.RefundPending || res.Status == "") && res.ProviderRefundID == "" {
		return nil
	}
	_, err := db.New(s.pool).RefundSettle(ctx, db.RefundSettleParams{ID: refundID, Status: string(cmp.Or(res.Status, metering.RefundPending)),
		ProviderRefundID: optional(res.ProviderRefundID), FailureReason: res.FailureReason, At: s.now()})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("record refund of a stray charge: %w", err)
	}
	return nil
}
