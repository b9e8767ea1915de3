package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/validation"
)

// Quota adjustment kinds.
const (
	AdjustCredit = "credit"
	AdjustReset  = "reset"
)

// MaxQuotaCredit bounds one credit, far above any real quota and far
// below the bigint counters.
const MaxQuotaCredit = 1_000_000_000_000

// QuotaAdjustmentInput is a credit (requests > 0) or a reset (requests
// ignored), with the reason the audit trail keeps.
type QuotaAdjustmentInput struct {
	Requests int64  `json:"requests"`
	Reason   string `json:"reason"`
}

// QuotaAdjustment is one change to a period's request quota.
type QuotaAdjustment struct {
	ID             uuid.UUID `json:"id"`
	SubscriptionID uuid.UUID `json:"subscription_id"`
	PeriodStart    time.Time `json:"period_start"`
	Kind           string    `json:"kind"`
	// Requests is what the adjustment added to the period's quota.
	Requests int64 `json:"requests"`
	// UsedAtChange is the period's counter when the change was made.
	UsedAtChange int64 `json:"used_at_change"`
	// Limit is the period's quota after the change.
	Limit     int64     `json:"limit"`
	Reason    string    `json:"reason"`
	Actor     string    `json:"actor"`
	CreatedAt time.Time `json:"created_at"`
}

// AdjustQuota credits requests to the current period's quota, or resets
// it (kind AdjustReset: the credit that makes the remaining quota the
// plan's whole quota again). The API's provider and admins may; the
// subscriber may not. The change rewrites the gateway's record, whose
// write recomputes the block at once (enforcement.PutSubscription).
func (s *Service) AdjustQuota(ctx context.Context, actor identity.Actor, id uuid.UUID, kind string, in QuotaAdjustmentInput) (QuotaAdjustment, error) {
	if kind != AdjustCredit && kind != AdjustReset {
		return QuotaAdjustment{}, fmt.Errorf("adjust quota: unknown kind %q", kind)
	}
	in.Reason = strings.TrimSpace(in.Reason)
	var v validation.Error
	if in.Reason == "" || len(in.Reason) > 500 {
		v.Add("reason", "required, at most 500 characters")
	}
	if kind == AdjustCredit && (in.Requests <= 0 || in.Requests > MaxQuotaCredit) {
		v.Add("requests", "a credit is 1 to %d requests", int64(MaxQuotaCredit))
	}
	if err := v.Err(); err != nil {
		return QuotaAdjustment{}, err
	}
	var out QuotaAdjustment
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		sub, err := s.lockSub(ctx, tx, id)
		if err != nil {
			return err
		}
		if !sub.canSee(actor) {
			return ErrSubscriptionNotFound
		}
		// The provider's members who may change its terms (providers),
		// and admins; the subscriber may not credit itself.
		if !actor.IsAdmin() && !(actor.Role == identity.RoleProvider && actor.OrgID == sub.apiOrg) {
			return ErrForbidden
		}
		if !sub.Status.live() {
			return fmt.Errorf("%w: subscription is canceled", ErrSubscriptionInactive)
		}
		if sub.terms.QuotaRequests == nil {
			return ErrNoQuota
		}
		used, err := s.cfg.Records.PeriodRequests(ctx, sub.ID.String(), sub.CurrentPeriodStart)
		if err != nil {
			return err
		}
		requests := in.Requests
		if kind == AdjustReset {
			// The remaining quota becomes the plan's: limit' = used + plan.
			requests = max(0, used+*sub.terms.QuotaRequests-sub.QuotaLimit())
		}
		err = tx.QueryRow(ctx, `INSERT INTO quota_adjustments (subscription_id, period_start, kind, requests, used_at_change, reason, actor)
			VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, created_at`,
			sub.ID, sub.CurrentPeriodStart, kind, requests, used, in.Reason, actor.Subject).Scan(&out.ID, &out.CreatedAt)
		if err != nil {
			return fmt.Errorf("record quota adjustment: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE subscriptions SET sync_version = sync_version + 1, updated_at = now() WHERE id = $1`, id); err != nil {
			return fmt.Errorf("bump subscription version: %w", err)
		}
		if err := s.enqueueSubSync(ctx, tx, id); err != nil {
			return err
		}
		out = QuotaAdjustment{
			ID: out.ID, SubscriptionID: sub.ID, PeriodStart: sub.CurrentPeriodStart.UTC(), Kind: kind, Requests: requests,
			UsedAtChange: used, Limit: sub.QuotaLimit() + requests, Reason: in.Reason, Actor: actor.Subject, CreatedAt: out.CreatedAt.UTC(),
		}
		return s.record(ctx, tx, actor, sub.OrganizationID, "subscription.quota."+kind, "subscription", id,
			map[string]int64{"limit": sub.QuotaLimit()}, out,
			"quota.adjusted", map[string]any{"subscription": sub, "adjustment": out})
	})
	return out, err
}

// ChangePlanInput moves a subscription to another plan of the same API.
type ChangePlanInput struct {
	PlanID uuid.UUID `json:"plan_id"`
}

// ChangePlan moves a live subscription to the latest version of an active
// plan of the same API (the same plan moves it to that plan's latest
// version), from now on: the billing period stays, the new terms (quota,
// hardness, rate limits) apply at once and the gateway's record and block
// follow through the outbox. Proration of the base fee belongs to
// billing, which prices each event by the version in force at its time
// (subscription_history).
func (s *Service) ChangePlan(ctx context.Context, actor identity.Actor, id uuid.UUID, in ChangePlanInput) (Subscription, error) {
	if in.PlanID == uuid.Nil {
		return Subscription{}, validation.One("plan_id", "is required")
	}
	var out Subscription
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.changeSub(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		if !before.Status.live() {
			return fmt.Errorf("%w: subscription is canceled", ErrSubscriptionInactive)
		}
		p, err := s.loadPlan(ctx, tx, actor, in.PlanID, false, false)
		if errors.Is(err, ErrPlanNotFound) {
			return fmt.Errorf("%w: plan_id: no plan %s you can see", ErrPlanNotFound, in.PlanID)
		}
		if err != nil {
			return err
		}
		if p.APIID != before.APIID {
			return validation.One("plan_id", "the plan belongs to another api")
		}
		if p.Status != PlanActive {
			return fmt.Errorf("%w: plan is %s", ErrPlanUnavailable, p.Status)
		}
		if p.Current.ID == before.PlanVersionID {
			return ErrSamePlan
		}
		now := s.now().UTC()
		if _, err := tx.Exec(ctx, `UPDATE subscriptions SET plan_version_id = $2, sync_version = sync_version + 1, updated_at = now()
			WHERE id = $1`, id, p.Current.ID); err != nil {
			return fmt.Errorf("change plan: %w", err)
		}
		if err := s.history(ctx, tx, id, p.Current.ID, before.Status, now, actor, "plan changed"); err != nil {
			return err
		}
		if err := s.enqueueSubSync(ctx, tx, id); err != nil {
			return err
		}
		if out, err = s.lockSub(ctx, tx, id); err != nil {
			return err
		}
		return s.record(ctx, tx, actor, out.OrganizationID, "subscription.plan_change", "subscription", id,
			map[string]any{"plan_id": before.PlanID, "plan_version_id": before.PlanVersionID},
			map[string]any{"plan_id": out.PlanID, "plan_version_id": out.PlanVersionID},
			"subscription.plan_changed", map[string]any{"subscription": out, "from_plan_version_id": before.PlanVersionID})
	})
	return out, err
}
