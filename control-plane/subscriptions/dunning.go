package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
)

// Dunning: a subscription whose invoice's last payment attempt failed is
// past_due (the gateway admits it with a warning) until its issuer's grace
// ends, then suspended (the gateway answers 402 naming the invoice), and
// active again as soon as the invoice is paid or written off. Its
// subscription_dunning row is what tells these statuses from an admin's:
// an admin's suspend or resume ends the dunning (SetStatus), so a payment
// never lifts an admin's suspension. control-plane/payments drives it.

// dunningBatch bounds the subscriptions one EscalateDunning run changes of
// each kind; the next run takes up the rest.
const dunningBatch = 500

// PastDue makes the subscription of invoice, whose payment's last attempt
// failed, past_due in the caller's transaction, to be suspended at
// suspendAt unless the invoice is paid first. A subscription that is not
// trialing or active is left as it is: one past_due already keeps its
// first invoice and grace, and a suspended or canceled one is not made
// past_due.
func (s *Service) PastDue(ctx context.Context, tx pgx.Tx, id, invoice uuid.UUID, number string, suspendAt time.Time) error {
	sub, err := s.lockSub(ctx, tx, id)
	if err != nil {
		return err
	}
	if sub.Status != StatusActive && sub.Status != StatusTrialing {
		return nil
	}
	now := s.now().UTC()
	if suspendAt.Before(now) {
		suspendAt = now
	}
	if err := db.New(tx).DunningUpsert(ctx, db.DunningUpsertParams{
		SubscriptionID: id, InvoiceID: invoice, PastDueAt: now, SuspendAt: suspendAt,
	}); err != nil {
		return fmt.Errorf("record subscription dunning: %w", err)
	}
	_, err = s.setStatus(ctx, tx, identity.System, sub, StatusPastDue, "invoice "+number+" unpaid after the last payment attempt")
	return err
}

// DisputeLost makes the subscription of invoice, a payment of which was
// disputed and lost (the money went back to the customer's bank),
// past_due in the caller's transaction, to be suspended at suspendAt. The
// invoice stays paid, so nothing but a person ends this dunning: an
// admin's resume (SetStatus, audited), asked for by the issuer once the
// customer paid again or the issuer forgave it. One past_due for an
// unpaid invoice is dunned for the dispute from then on, keeping the
// earlier suspension date; a suspended or canceled one is left as it is.
func (s *Service) DisputeLost(ctx context.Context, tx pgx.Tx, id, invoice uuid.UUID, number string, suspendAt time.Time) error {
	sub, err := s.lockSub(ctx, tx, id)
	if err != nil {
		return err
	}
	if sub.Status != StatusActive && sub.Status != StatusTrialing && sub.Status != StatusPastDue {
		return nil
	}
	now := s.now().UTC()
	if suspendAt.Before(now) {
		suspendAt = now
	}
	if err := db.New(tx).DunningDisputeLost(ctx, db.DunningDisputeLostParams{
		SubscriptionID: id, InvoiceID: invoice, PastDueAt: now, SuspendAt: suspendAt,
	}); err != nil {
		return fmt.Errorf("record subscription dunning: %w", err)
	}
	if sub.Status == StatusPastDue {
		if err := db.New(tx).SubscriptionMarkChanged(ctx, sub.ID); err != nil {
			return fmt.Errorf("mark subscription changed: %w", err)
		}
		return s.enqueueSubSync(ctx, tx, sub.ID)
	}
	_, err = s.setStatus(ctx, tx, identity.System, sub, StatusPastDue, "a payment of invoice "+number+" was disputed and lost")
	return err
}

// InvoiceSettled ends, in the caller's transaction, the dunning of the
// subscriptions dunned for invoice, which was paid: each one dunning made
// past_due or suspended is active again, its record written after commit.
func (s *Service) InvoiceSettled(ctx context.Context, tx pgx.Tx, invoice uuid.UUID, reason string) error {
	ids, err := db.New(tx).DunningOfInvoice(ctx, invoice)
	if err != nil {
		return fmt.Errorf("read subscription dunning: %w", err)
	}
	for _, id := range ids {
		if _, err := s.endDunning(ctx, tx, id, invoice, reason); err != nil {
			return err
		}
	}
	return nil
}

// endDunning ends the subscription's dunning for invoice (uuid.Nil: any)
// and makes it active when its status is dunning's; it reports whether it
// did.
func (s *Service) endDunning(ctx context.Context, tx pgx.Tx, id, invoice uuid.UUID, reason string) (bool, error) {
	sub, err := s.lockSub(ctx, tx, id)
	if err != nil {
		return false, err
	}
	q := db.New(tx)
	d, err := q.DunningGet(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && invoice != uuid.Nil && d.InvoiceID != invoice {
		// Ended meanwhile, or dunned for another invoice since.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read subscription dunning: %w", err)
	}
	if _, err := q.DunningDelete(ctx, id); err != nil {
		return false, fmt.Errorf("end subscription dunning: %w", err)
	}
	if sub.Status != StatusPastDue && sub.Status != StatusSuspended {
		return false, nil
	}
	// Another invoice whose payment failed for good while this one was
	// dunned (PastDue left the subscription as it was) is dunned now, with
	// the grace it had from its own failure: settling one debt does not
	// let the other through, nor give it a new grace.
	next, err := q.DunningNextUnpaid(ctx, db.DunningNextUnpaidParams{SubscriptionID: id, Settled: d.InvoiceID})
	switch {
	case err == nil:
		return false, s.dunNext(ctx, tx, sub, next, reason)
	case !errors.Is(err, pgx.ErrNoRows):
		return false, fmt.Errorf("read unpaid invoices: %w", err)
	}
	if reason == "" {
		reason = "invoice " + d.InvoiceNumber + " " + d.InvoiceStatus
	}
	_, err = s.setStatus(ctx, tx, identity.System, sub, StatusActive, reason)
	return err == nil, err
}

// dunNext dunns a subscription whose dunning just ended for the next
// unpaid invoice: past_due until that invoice's grace, counted from its
// payment's failure, ends. A suspended one whose next invoice's grace
// ended already stays suspended, for that invoice; one whose grace has
// not is made active first (settled is why), as no status goes from
// suspended to past_due directly.
func (s *Service) dunNext(ctx context.Context, tx pgx.Tx, sub Subscription, next db.DunningNextUnpaidRow, settled string) error {
	now := s.now().UTC()
	suspendAt := next.FailedAt.Add(time.Duration(next.GraceDays) * 24 * time.Hour)
	if suspendAt.Before(now) {
		suspendAt = now
	}
	q := db.New(tx)
	if err := q.DunningUpsert(ctx, db.DunningUpsertParams{
		SubscriptionID: sub.ID, InvoiceID: next.ID, PastDueAt: now, SuspendAt: suspendAt,
	}); err != nil {
		return fmt.Errorf("record subscription dunning: %w", err)
	}
	stays := sub.Status == StatusSuspended && !suspendAt.After(now)
	if stays {
		if err := q.DunningMarkSuspended(ctx, db.DunningMarkSuspendedParams{SubscriptionID: sub.ID, At: &now}); err != nil {
			return fmt.Errorf("record subscription dunning: %w", err)
		}
	}
	if sub.Status == StatusPastDue || stays {
		// The status stays; its record names the new invoice and date.
		if err := db.New(tx).SubscriptionMarkChanged(ctx, sub.ID); err != nil {
			return fmt.Errorf("mark subscription changed: %w", err)
		}
		return s.enqueueSubSync(ctx, tx, sub.ID)
	}
	if settled == "" {
		settled = "invoice settled"
	}
	active, err := s.setStatus(ctx, tx, identity.System, sub, StatusActive, settled)
	if err != nil {
		return err
	}
	_, err = s.setStatus(ctx, tx, identity.System, active, StatusPastDue, "invoice "+next.Number+" unpaid after the last payment attempt")
	return err
}

// EscalateDunning suspends the past_due subscriptions whose grace ended by
// now, and ends the dunning of those whose invoice is no longer open
// (marked paid, written off or voided in billing rather than through a
// payment), making them active again. Each subscription changes in a
// transaction of its own; an error is returned after the others were
// tried. It returns how many were suspended and how many reactivated.
func (s *Service) EscalateDunning(ctx context.Context, now time.Time) (suspended, reactivated int, err error) {
	q := db.New(s.pool)
	var errs []error
	settled, err := q.DunningSettled(ctx, dunningBatch)
	if err != nil {
		return 0, 0, fmt.Errorf("list settled dunning: %w", err)
	}
	for _, id := range settled {
		var done bool
		err := s.inTx(ctx, func(tx pgx.Tx) (err error) {
			done, err = s.endDunning(ctx, tx, id, uuid.Nil, "")
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("end dunning of %s: %w", id, err))
		} else if done {
			reactivated++
		}
	}
	due, err := q.DunningDue(ctx, db.DunningDueParams{Now: now, Max: dunningBatch})
	if err != nil {
		return suspended, reactivated, errors.Join(append(errs, fmt.Errorf("list dunning due: %w", err))...)
	}
	for _, id := range due {
		var done bool
		err := s.inTx(ctx, func(tx pgx.Tx) (err error) {
			done, err = s.suspendUnpaid(ctx, tx, id, now)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("suspend %s: %w", id, err))
		} else if done {
			suspended++
		}
	}
	return suspended, reactivated, errors.Join(errs...)
}

// suspendUnpaid suspends a past_due subscription whose grace ended by
// now, checked again under its lock (it may have paid meanwhile).
func (s *Service) suspendUnpaid(ctx context.Context, tx pgx.Tx, id uuid.UUID, now time.Time) (bool, error) {
	sub, err := s.lockSub(ctx, tx, id)
	if err != nil {
		return false, err
	}
	q := db.New(tx)
	d, err := q.DunningGet(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read subscription dunning: %w", err)
	}
	if sub.Status != StatusPastDue || d.SuspendedAt != nil || d.SuspendAt.After(now) || d.InvoiceStatus != "open" && !d.DisputeLost {
		return false, nil
	}
	if err := q.DunningMarkSuspended(ctx, db.DunningMarkSuspendedParams{SubscriptionID: id, At: &now}); err != nil {
		return false, fmt.Errorf("record subscription dunning: %w", err)
	}
	reason := "invoice " + d.InvoiceNumber + " unpaid past its grace"
	if d.DisputeLost {
		reason = "a payment of invoice " + d.InvoiceNumber + " disputed and lost, past its grace"
	}
	_, err = s.setStatus(ctx, tx, identity.System, sub, StatusSuspended, reason)
	return err == nil, err
}

// endDunningByAdmin ends the dunning of a subscription whose status an
// admin sets, audited: from then on its status is the admin's, which no
// payment changes.
func (s *Service) endDunningByAdmin(ctx context.Context, tx pgx.Tx, actor identity.Actor, sub Subscription) error {
	n, err := db.New(tx).DunningDelete(ctx, sub.ID)
	if err != nil {
		return fmt.Errorf("end subscription dunning: %w", err)
	}
	if n == 0 {
		return nil
	}
	return s.record(ctx, tx, actor, sub.OrganizationID, "subscription.dunning_ended", "subscription", sub.ID,
		map[string]any{"status": sub.Status}, map[string]any{"dunning": "ended by an admin"}, "", nil)
}

// dunningRecord adds to a past_due or suspended subscription's record the
// invoice its dunning is for, and when a past_due one is suspended.
func dunningRecord(ctx context.Context, q *db.Queries, sub Subscription, r *enforcement.SubscriptionRecord) error {
	if sub.Status != StatusPastDue && sub.Status != StatusSuspended {
		return nil
	}
	d, err := q.DunningGet(ctx, sub.ID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read subscription dunning: %w", err)
	}
	r.UnpaidInvoiceID, r.UnpaidInvoiceNumber = d.InvoiceID.String(), d.InvoiceNumber
	if sub.Status == StatusPastDue {
		r.SuspendAt = d.SuspendAt.UTC()
	}
	return nil
}
