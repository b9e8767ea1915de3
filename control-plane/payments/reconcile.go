package payments

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// Reconcile settles up to max attempts under way for longer than a
// minute from the provider's own state, as their lost webhooks would
// have: one whose answer was never recorded (a crash) is called again
// with its key, which returns what the first call did; one the provider
// answered is read. It returns how many it looked at; an error of one
// does not stop the others.
func (s *Service) Reconcile(ctx context.Context, max int) (int, error) {
	if max <= 0 || max > 10000 {
		max = 100
	}
	rows, err := db.New(s.pool).AttemptsUnsettled(ctx, db.AttemptsUnsettledParams{
		Before: s.now().Add(-unsettledAfter), Max: int32(max)})
	if err != nil {
		return 0, fmt.Errorf("list unsettled attempts: %w", err)
	}
	var errs []error
	for _, r := range rows {
		if r.ProviderPaymentID == nil {
			if _, err := s.Collect(ctx, r.InvoiceID); err != nil {
				errs = append(errs, fmt.Errorf("reconcile invoice %s: %w", r.InvoiceID, err))
			}
			continue
		}
		if err := s.reconcileOne(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	return len(rows), errors.Join(errs...)
}

func (s *Service) reconcileOne(ctx context.Context, r db.AttemptsUnsettledRow) error {
	prov := s.cfg.Providers[r.Provider]
	if prov == nil {
		return fmt.Errorf("reconcile payment %s: %w: provider %q", r.PaymentID, ErrNotConfigured, r.Provider)
	}
	res, err := prov.PaymentStatus(ctx, *r.ProviderPaymentID)
	if err != nil {
		return fmt.Errorf("reconcile payment %s: %w", r.PaymentID, err)
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		p, err := q.PaymentLock(ctx, r.PaymentID)
		if err != nil {
			return fmt.Errorf("lock payment: %w", err)
		}
		att, err := q.AttemptLock(ctx, r.ID)
		if err != nil {
			return fmt.Errorf("lock payment attempt: %w", err)
		}
		if res.Status == metering.PaymentPending || string(res.Status) == att.Status {
			return nil
		}
		return s.settle(ctx, tx, p, att, outcome{PaymentResult: res})
	})
}
