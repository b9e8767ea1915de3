package quota

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/quota/internal/db"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/validation"
)

// Adjustment kinds.
const (
	AdjustCredit = "credit"
	AdjustReset  = "reset"
)

// MaxCredit bounds one credit, far above any real quota and far below the
// bigint counters.
const MaxCredit = 1_000_000_000_000

// ErrNoQuota: the subscription's plan has no request quota to adjust.
var ErrNoQuota = errors.New("subscription has no request quota")

// AdjustmentInput is a credit (requests > 0) or a reset (requests
// ignored), with the reason the audit trail keeps.
type AdjustmentInput struct {
	Requests int64  `json:"requests"`
	Reason   string `json:"reason"`
}

// Adjustment is one change to a period's request quota.
type Adjustment struct {
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

// Subscriptions is what an adjustment needs of the subscriptions service
// (a *subscriptions.Service): the subscription locked in the adjustment's
// transaction, its period's count, and the record rewrite and audit that
// follow the change.
type Subscriptions interface {
	LockVisible(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID) (subscriptions.Subscription, error)
	PeriodRequests(ctx context.Context, sub subscriptions.Subscription) (int64, error)
	Changed(ctx context.Context, tx pgx.Tx, actor identity.Actor, sub subscriptions.Subscription, action string,
		before, after any, event string, data any) error
}

// Adjuster credits and resets subscriptions' request quotas.
type Adjuster struct {
	pool *pgxpool.Pool
	subs Subscriptions
}

// NewAdjuster returns an Adjuster writing quota_adjustments on pool.
func NewAdjuster(pool *pgxpool.Pool, subs Subscriptions) *Adjuster {
	return &Adjuster{pool: pool, subs: subs}
}

func (in *AdjustmentInput) validate(kind string) error {
	if kind != AdjustCredit && kind != AdjustReset {
		return fmt.Errorf("adjust quota: unknown kind %q", kind)
	}
	in.Reason = strings.TrimSpace(in.Reason)
	var v validation.Error
	if in.Reason == "" || len(in.Reason) > 500 {
		v.Add("reason", "required, at most 500 characters")
	}
	if kind == AdjustCredit && (in.Requests <= 0 || in.Requests > MaxCredit) {
		v.Add("requests", "a credit is 1 to %d requests", int64(MaxCredit))
	}
	return v.Err()
}

// Adjust credits requests to the current period's quota, or resets it
// (kind AdjustReset: the credit that makes the remaining quota the plan's
// whole quota again). The API's provider and admins may; the subscriber
// may not. The change rewrites the gateway's record, whose write
// recomputes the block at once (enforcement.PutSubscription).
func (a *Adjuster) Adjust(ctx context.Context, actor identity.Actor, id uuid.UUID, kind string, in AdjustmentInput) (Adjustment, error) {
	if err := in.validate(kind); err != nil {
		return Adjustment{}, err
	}
	var out Adjustment
	err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		sub, err := a.subs.LockVisible(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		// The provider's members who may change its terms (providers),
		// and admins; the subscriber may not credit itself.
		if !actor.CanProvide(sub.ProviderOrg()) {
			return identity.ErrForbidden
		}
		if !sub.Live() {
			return fmt.Errorf("%w: subscription is canceled", subscriptions.ErrSubscriptionInactive)
		}
		plan := sub.PlanQuota()
		if plan == nil {
			return ErrNoQuota
		}
		used, err := a.subs.PeriodRequests(ctx, sub)
		if err != nil {
			return err
		}
		requests := in.Requests
		if kind == AdjustReset {
			// The remaining quota becomes the plan's: limit' = used + plan.
			requests = max(0, used+*plan-sub.QuotaLimit())
		}
		row, err := db.New(tx).AdjustmentInsert(ctx, db.AdjustmentInsertParams{
			SubscriptionID: sub.ID, PeriodStart: sub.CurrentPeriodStart, Kind: kind, Requests: requests, UsedAtChange: used,
			Reason: in.Reason, Actor: actor.Subject,
		})
		if err != nil {
			return fmt.Errorf("record quota adjustment: %w", err)
		}
		out = Adjustment{
			ID: row.ID, SubscriptionID: sub.ID, PeriodStart: sub.CurrentPeriodStart.UTC(), Kind: kind, Requests: requests,
			UsedAtChange: used, Limit: sub.QuotaLimit() + requests, Reason: in.Reason, Actor: actor.Subject, CreatedAt: row.CreatedAt.UTC(),
		}
		return a.subs.Changed(ctx, tx, actor, sub, "subscription.quota."+kind,
			map[string]int64{"limit": sub.QuotaLimit()}, out,
			"quota.adjusted", map[string]any{"subscription": sub, "adjustment": out})
	})
	return out, err
}

var _ Subscriptions = (*subscriptions.Service)(nil)
