package subscriptions

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
)

// rollPeriods ends due trials, and rolls every billing period that has
// ended into the next (or cancels the subscription, if asked to at period
// end), so that the gateway's record names the period being counted.
func (s *Service) rollPeriods(ctx context.Context, rep *MaintenanceReport) error {
	now := s.now().UTC()
	ids, err := db.New(s.pool).SubscriptionListDueIDs(ctx, now)
	if err != nil {
		return err
	}
	return s.each(ctx, ids, func(tx pgx.Tx, id uuid.UUID) error {
		sub, err := s.lockSub(ctx, tx, id)
		if err != nil || !sub.Status.live() {
			return err
		}
		if sub.Status == StatusTrialing && sub.TrialEndsAt != nil && !sub.TrialEndsAt.After(now) {
			if sub, err = s.setStatus(ctx, tx, identity.System, sub, StatusActive, "trial ended"); err != nil {
				return err
			}
			rep.TrialsEnded++
		}
		if sub.CurrentPeriodEnd.After(now) {
			return nil
		}
		if sub.CancelAtPeriodEnd {
			rep.Canceled++
			_, err := s.setStatus(ctx, tx, identity.System, sub, StatusCanceled, "canceled at period end")
			return err
		}
		start, end := sub.CurrentPeriodStart, sub.CurrentPeriodEnd
		for !end.After(now) {
			start, end = end, enforcement.PeriodEndAnchored(end, sub.terms.Interval, sub.anchor)
		}
		if err := db.New(tx).SubscriptionRollPeriod(ctx, db.SubscriptionRollPeriodParams{ID: id, CurrentPeriodStart: start, CurrentPeriodEnd: end}); err != nil {
			return fmt.Errorf("roll period: %w", err)
		}
		if err := s.enqueueSubSync(ctx, tx, id); err != nil {
			return err
		}
		rep.PeriodsRolled++
		return s.record(ctx, tx, identity.System, sub.OrganizationID, "subscription.period_renewed", "subscription", id,
			map[string]time.Time{"period_start": sub.CurrentPeriodStart, "period_end": sub.CurrentPeriodEnd},
			map[string]time.Time{"period_start": start, "period_end": end},
			"subscription.renewed", map[string]any{"subscription_id": id, "period_start": start, "period_end": end})
	})
}
