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

// errUnmatchedRefund: the provider reports a refund of a charge Veil
// made that names a refund Veil does not have. The event is not recorded
// as applied, so the provider delivers it again.
var errUnmatchedRefund = errors.New("refund of a Veil charge matches no refund")

// ReconcileRefunds settles up to max refunds through the provider still
// pending after a minute, as their lost answers or events would have:
// one never answered is repeated with its key while the provider keeps
// it (23 hours); any other is looked up among the charge's refunds at
// the provider, which also records refunds made outside Veil. A refund
// past its key's lifetime that the provider never made fails, so that it
// stops counting against the payment. It returns how many it looked at;
// an error of one does not stop the others.
func (s *Service) ReconcileRefunds(ctx context.Context, max int) (int, error) {
	if max <= 0 || max > 10000 {
		max = 100
	}
	rows, err := db.New(s.pool).RefundsUnsettled(ctx, db.RefundsUnsettledParams{SettleSecs: unsettledAfter.Seconds(),
		KeySecs: keyLifetime.Seconds(), Max: int32(max)})
	if err != nil {
		return 0, fmt.Errorf("list unsettled refunds: %w", err)
	}
	var errs []error
	for _, r := range rows {
		if err := s.reconcileRefund(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("reconcile refund %s: %w", r.ID, err))
		}
	}
	return len(rows), errors.Join(errs...)
}

func (s *Service) reconcileRefund(ctx context.Context, r db.RefundsUnsettledRow) error {
	prov := s.cfg.Providers[r.Provider]
	if prov == nil || r.ProviderPaymentID == nil {
		return fmt.Errorf("%w: provider %q", ErrNotConfigured, r.Provider)
	}
	// Touched first, so that a refund that keeps failing goes to the back
	// of the queue instead of holding the others up.
	if err := db.New(s.pool).RefundTouch(ctx, r.ID); err != nil {
		return fmt.Errorf("touch refund: %w", err)
	}
	if r.ProviderRefundID == nil && r.KeyAlive {
		in := metering.RefundInput{ProviderPaymentID: *r.ProviderPaymentID,
			Amount: metering.Money{Minor: r.Amount, Currency: r.Currency}, Reason: r.Reason, RefundID: r.ID.String(),
			IdempotencyKey: r.IdempotencyKey}
		res, err := prov.Refund(ctx, in)
		if errors.Is(err, metering.ErrIdempotencyConflict) {
			// The key reached the provider with other parameters: a refund
			// asked for before refunds carried their id. Its own
			// parameters get its answer replayed.
			in.RefundID = ""
			res, err = prov.Refund(ctx, in)
		}
		if errors.Is(err, metering.ErrIdempotencyConflict) {
			return fmt.Errorf("repeat refund: %w", err)
		}
		if err != nil && !definite(err) {
			return fmt.Errorf("repeat refund: %w", err)
		}
		if err != nil {
			res = metering.RefundResult{Status: metering.RefundFailed, FailureReason: failureCode(err)}
		}
		return s.inTx(ctx, func(tx pgx.Tx) error { return s.settleRefund(ctx, tx, r.PaymentID, r.ID, res) })
	}
	lister, ok := prov.(metering.RefundLister)
	if !ok {
		// A refund the provider cannot be asked about (a transfer sent back
		// by hand) waits for a person.
		return nil
	}
	seen, err := s.syncRefunds(ctx, lister, r.PaymentID, *r.ProviderPaymentID)
	if err != nil {
		return err
	}
	if seen[r.ID] || r.ProviderRefundID != nil || r.KeyAlive {
		return nil
	}
	// Every refund Veil asks for carries its id, and the key that could
	// still make it has expired: the provider never made this one.
	s.log.Warn("a refund the provider never made fails", "refund", r.ID, "payment", r.PaymentID)
	return s.inTx(ctx, func(tx pgx.Tx) error {
		return s.settleRefund(ctx, tx, r.PaymentID, r.ID, metering.RefundResult{Status: metering.RefundFailed,
			FailureReason: "not_at_provider"})
	})
}

// syncRefunds reads every refund of a payment's charge at the provider
// and applies each, in one transaction; it returns the ids of Veil's
// refunds the provider has.
func (s *Service) syncRefunds(ctx context.Context, lister metering.RefundLister, paymentID uuid.UUID, pi string) (map[uuid.UUID]bool, error) {
	list, err := lister.ListRefunds(ctx, pi)
	if err != nil {
		return nil, fmt.Errorf("list refunds at the provider: %w", err)
	}
	seen := map[uuid.UUID]bool{}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := db.New(tx).PaymentLock(ctx, paymentID); err != nil {
			return fmt.Errorf("lock payment: %w", err)
		}
		for _, res := range list {
			if id, err := uuid.Parse(res.RefundID); err == nil {
				seen[id] = true
			}
			err := s.providerRefund(ctx, tx, pi, res)
			if errors.Is(err, errUnmatchedRefund) {
				s.log.Error("a refund at the provider matches none of Veil's", "provider_refund", res.ProviderRefundID,
					"refund", res.RefundID, "provider_payment", pi)
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	return seen, err
}

// providerRefund applies what the provider says of one refund of the
// charge pi. Veil's own refund is found by the provider's id, or by the
// id it carries when its answer is not recorded yet (an early event, a
// crash), and settled; a refund without Veil's id is one made outside
// Veil (the dashboard), recorded once.
func (s *Service) providerRefund(ctx context.Context, tx pgx.Tx, pi string, res metering.RefundResult) error {
	q := db.New(tx)
	if res.ProviderRefundID == "" {
		return fmt.Errorf("apply refund: %w: provider refund id missing", ErrInvalid)
	}
	rf, err := q.RefundByProviderID(ctx, &res.ProviderRefundID)
	byVeilID := false
	if errors.Is(err, pgx.ErrNoRows) && res.RefundID != "" {
		id, perr := uuid.Parse(res.RefundID)
		if perr == nil {
			rf, err = q.RefundGet(ctx, id)
			byVeilID = err == nil
		}
	}
	switch {
	case err == nil:
		// The provider's id was recorded from the provider's own answer;
		// an id in metadata is only a claim, checked.
		if byVeilID {
			if err := s.sameRefund(ctx, q, rf, pi, res); err != nil {
				return err
			}
		}
		if res.Status == "" {
			res.Status = metering.RefundPending
		}
		return s.settleRefund(ctx, tx, rf.PaymentID, rf.ID, res)
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("read refund: %w", err)
	}
	att, err := q.AttemptByProviderID(ctx, &pi)
	if errors.Is(err, pgx.ErrNoRows) {
		s.log.Info("provider refund of a charge Veil did not make", "provider_refund", res.ProviderRefundID, "provider_payment", pi)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read payment attempt: %w", err)
	}
	if res.RefundID != "" {
		return fmt.Errorf("%w: %s carries refund id %q", errUnmatchedRefund, res.ProviderRefundID, res.RefundID)
	}
	return s.recordExternal(ctx, tx, att, res)
}

// sameRefund checks that the provider's refund is the one Veil asked for:
// of its payment's charge, for its amount, so that a refund naming
// another's id settles nothing.
func (s *Service) sameRefund(ctx context.Context, q *db.Queries, rf db.PaymentRefund, pi string, res metering.RefundResult) error {
	if rf.ProviderRefundID != nil && *rf.ProviderRefundID != res.ProviderRefundID {
		return fmt.Errorf("%w: refund %s is %s at the provider, not %s", errUnmatchedRefund, rf.ID, *rf.ProviderRefundID, res.ProviderRefundID)
	}
	if rf.Destination != DestinationPaymentMethod {
		return fmt.Errorf("%w: refund %s went to the credit balance", errUnmatchedRefund, rf.ID)
	}
	want := pi
	if rf.StrayAttemptID == nil {
		att, err := q.AttemptSucceededOf(ctx, rf.PaymentID)
		if err != nil || att.ProviderPaymentID == nil {
			return fmt.Errorf("%w: refund %s of a payment without its charge", errUnmatchedRefund, rf.ID)
		}
		want = *att.ProviderPaymentID
	}
	if pi != want || (res.Amount != metering.Money{} && res.Amount != metering.Money{Minor: rf.Amount, Currency: rf.Currency}) {
		s.mismatch("refund", "refund", rf.ID, "provider_refund", res.ProviderRefundID, "provider_payment", pi,
			"amount", res.Amount.String())
		return fmt.Errorf("%w: %s is not refund %s's charge or amount", errUnmatchedRefund, res.ProviderRefundID, rf.ID)
	}
	return nil
}

// recordExternal records a refund made outside Veil of the payment's
// charge at its amount, audited; a succeeded one is announced as Veil's
// are, and flags the payment when credit refunds already covered it.
func (s *Service) recordExternal(ctx context.Context, tx pgx.Tx, att db.PaymentAttempt, res metering.RefundResult) error {
	if res.Status != metering.RefundPending && res.Status != metering.RefundSucceeded {
		return nil
	}
	q := db.New(tx)
	p, err := q.PaymentLock(ctx, att.PaymentID)
	if err != nil {
		return fmt.Errorf("lock payment: %w", err)
	}
	if att.Status != "succeeded" || p.Status != "succeeded" {
		s.log.Error("a refund made outside Veil of a charge the payment did not keep: check it",
			"provider_refund", res.ProviderRefundID, "payment", p.ID, "attempt", att.ID)
		return nil
	}
	if res.Amount.Currency != p.Currency {
		s.log.Error("a refund made outside Veil in another currency than its payment's: check it",
			"provider_refund", res.ProviderRefundID, "payment", p.ID, "currency", res.Amount.Currency)
		return nil
	}
	// The refund is a fact: compared only with money the provider
	// returned of the same charge, never with credit given or with Veil's
	// refunds still pending (which may never have been made).
	returned, err := q.RefundsReturned(ctx, p.ID)
	if err != nil {
		return fmt.Errorf("sum refunds: %w", err)
	}
	amount := min(res.Amount.Minor, p.Amount-returned)
	if amount < res.Amount.Minor {
		// The provider never refunds more than it charged: one of Veil's
		// records of it is wrong.
		s.cfg.Metrics.GetOrCreateCounter(mismatchedName("refund")).Inc()
		s.log.Error("a refund made outside Veil exceeds what the provider had left of the charge: recorded up to it; check it",
			"provider_refund", res.ProviderRefundID, "payment", p.ID, "amount", res.Amount.Minor, "recorded", amount)
	}
	if amount <= 0 {
		return nil
	}
	rf, err := q.RefundInsertExternal(ctx, db.RefundInsertExternalParams{ID: uuid.New(), PaymentID: p.ID, InvoiceID: p.InvoiceID,
		Amount: amount, Currency: p.Currency, Reason: "made at the provider", Actor: p.Provider,
		IdempotencyKey: "veil-external-" + res.ProviderRefundID, ProviderRefundID: &res.ProviderRefundID, Status: "pending"})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record refund made at the provider: %w", err)
	}
	err = audit.Record(ctx, tx, audit.Change{
		Actor: identity.System.Subject, ActorRole: string(identity.System.Role), OrganizationID: p.IssuerID,
		Action: "payment.refund", TargetType: "invoice", TargetID: p.InvoiceID.String(),
		After: map[string]any{"refund": rf.ID, "amount": metering.Money{Minor: amount, Currency: p.Currency}.String(),
			"provider_refund_id": res.ProviderRefundID, "external": true},
	})
	if err != nil {
		return err
	}
	return s.settleRefund(ctx, tx, p.ID, rf.ID, res)
}
