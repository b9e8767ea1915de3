package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/pagination"
	"github.com/veil-platform/veil/internal/validation"
)

// Status is a subscription's status.
type Status string

// Subscription statuses.
const (
	StatusTrialing  Status = "trialing"
	StatusActive    Status = "active"
	StatusPastDue   Status = "past_due"
	StatusSuspended Status = "suspended"
	StatusCanceled  Status = "canceled"
)

// live reports whether the subscription still runs (may be billed and hold keys).
func (st Status) live() bool { return st != StatusCanceled }

// Subscription is an organization's subscription to an API's plan.
type Subscription struct {
	ID                 uuid.UUID  `json:"id"`
	OrganizationID     uuid.UUID  `json:"organization_id"`
	Subscriber         string     `json:"subscriber"`
	APIID              uuid.UUID  `json:"api_id"`
	PlanID             uuid.UUID  `json:"plan_id"`
	PlanVersionID      uuid.UUID  `json:"plan_version_id"`
	PlanVersion        int        `json:"plan_version"`
	Status             Status     `json:"status"`
	TrialEndsAt        *time.Time `json:"trial_ends_at"`
	CurrentPeriodStart time.Time  `json:"current_period_start"`
	CurrentPeriodEnd   time.Time  `json:"current_period_end"`
	CancelAtPeriodEnd  bool       `json:"cancel_at_period_end"`
	CanceledAt         *time.Time `json:"canceled_at"`
	MaxActiveKeys      int        `json:"max_active_keys"`
	// Synced reports whether the gateway holds the latest change.
	Synced    bool      `json:"synced"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`

	apiOrg      uuid.UUID
	terms       Terms
	syncVersion int64
	// quotaAdjustments are the requests credits and resets added to this
	// period's quota (quota_adjustments).
	quotaAdjustments int64
	// canceledFrom and holdReleased decide whether a canceled
	// subscription holds its organization and API (heldBy).
	canceledFrom Status
	holdReleased bool
	// anchor is the start its billing periods are stepped from
	// (enforcement.PeriodEndAnchored).
	anchor time.Time
}

// heldBy reports whether the canceled subscription holds its organization
// and API: it was canceled while an admin's suspension or a missed payment
// stood, and no admin has released it since.
func (sub Subscription) heldBy() bool {
	return (sub.canceledFrom == StatusSuspended || sub.canceledFrom == StatusPastDue) && !sub.holdReleased
}

// QuotaLimit is the request quota enforced this period: the plan's plus
// the period's adjustments, or -1 for unlimited (enforcement.Limit).
func (sub Subscription) QuotaLimit() int64 {
	return enforcement.Limit(sub.terms.QuotaRequests, sub.quotaAdjustments)
}

// SubscribeInput subscribes the caller's organization to a plan.
type SubscribeInput struct {
	PlanID uuid.UUID `json:"plan_id"`
	// PromotionCodes are redeemed with the subscription, in its
	// transaction: a code refused refuses the subscription.
	PromotionCodes []string `json:"promotion_codes"`
}

// CancelInput cancels a subscription now or at the end of its period.
type CancelInput struct {
	AtPeriodEnd bool `json:"at_period_end"`
}

// canSee: the subscriber's organization, the API's provider and admins.
func (sub Subscription) canSee(a identity.Actor) bool {
	return a.IsAdmin() || a.OrgID == sub.OrganizationID || a.OrgID == sub.apiOrg
}

// canChange: the subscriber's organization (consumers and providers alike,
// as providers consume other APIs too) and admins.
func (sub Subscription) canChange(a identity.Actor) bool {
	return a.IsAdmin() || a.OrgID == sub.OrganizationID
}

// Subscribe subscribes the actor's organization to the latest version of
// an active plan of an active API. A plan with trial days starts trialing.
// The promotion codes given are redeemed in the same transaction (a trial
// extension among them lengthens or starts the trial); one refused refuses
// the subscription.
func (s *Service) Subscribe(ctx context.Context, actor identity.Actor, in SubscribeInput) (Subscription, error) {
	if actor.Role == identity.RoleSystem || actor.OrgID == uuid.Nil {
		return Subscription{}, identity.ErrForbidden
	}
	var out Subscription
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		p, err := s.loadPlan(ctx, tx, actor, in.PlanID, false, false)
		if errors.Is(err, ErrPlanNotFound) {
			return fmt.Errorf("%w: plan_id: no plan %s you can see", ErrPlanNotFound, in.PlanID)
		}
		if err != nil {
			return err
		}
		q := db.New(tx)
		state, err := q.APIStateGetForShare(ctx, p.APIID)
		if err != nil {
			return fmt.Errorf("load api: %w", err)
		}
		apiState := catalog.State(state)
		if p.Status != PlanActive || apiState != catalog.StateActive {
			return fmt.Errorf("%w: plan is %s, api is %s", ErrPlanUnavailable, p.Status, apiState)
		}
		now := s.now().UTC().Truncate(time.Second)
		past, err := s.pastOf(ctx, tx, actor.OrgID, p.APIID, now)
		if err != nil {
			return err
		}
		if past.held != nil {
			return fmt.Errorf("%w: subscription %s was canceled while %s", ErrSubscriptionHeld, past.held.ID, past.held.canceledFrom)
		}
		status, trialEnds := StatusActive, (*time.Time)(nil)
		if days := p.Current.Terms.TrialDays; days > 0 && !past.hadTrial {
			end := now.AddDate(0, 0, days)
			status, trialEnds = StatusTrialing, &end
		}
		start, end, anchor := now, enforcement.PeriodEndAnchored(now, p.Current.Terms.Interval, now), now
		var carriedFrom *uuid.UUID
		if prev := past.carry; prev != nil {
			// Its periods go on from the boundaries it takes over.
			start, end, anchor, carriedFrom = prev.CurrentPeriodStart, prev.CurrentPeriodEnd, prev.anchor, &prev.ID
		}
		id, err := q.SubscriptionInsert(ctx, db.SubscriptionInsertParams{
			OrganizationID: actor.OrgID, Subscriber: actor.Subject, ApiID: p.APIID, PlanVersionID: p.Current.ID,
			Status: db.SubscriptionStatus(status), TrialEndsAt: trialEnds, CurrentPeriodStart: start, CurrentPeriodEnd: end,
			MaxActiveKeys: int32(s.cfg.MaxActiveKeys), CarriedFrom: carriedFrom, BillingAnchor: anchor,
		})
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			return ErrAlreadySubscribed
		}
		if err != nil {
			return fmt.Errorf("insert subscription: %w", err)
		}
		if status, err = s.redeemAtSubscribe(ctx, tx, actor, id, in.PromotionCodes, status); err != nil {
			return err
		}
		if err := s.history(ctx, tx, id, p.Current.ID, status, now, actor, "subscribed"); err != nil {
			return err
		}
		if past.carry != nil {
			if err := s.carryQuota(ctx, tx, actor, *past.carry, id, p.Current.Terms.QuotaRequests); err != nil {
				return err
			}
		}
		if out, err = s.lockSub(ctx, tx, id); err != nil {
			return err
		}
		if err := s.enqueueSubSync(ctx, tx, id); err != nil {
			return err
		}
		return s.record(ctx, tx, actor, out.OrganizationID, "subscription.create", "subscription", id, nil, out,
			"subscription.created", map[string]any{"subscription": out})
	})
	return out, err
}

// past is what an organization's earlier subscriptions to an API bind a
// new one to.
type past struct {
	// held is a subscription canceled while suspended or past_due whose
	// hold no admin has released: no new subscription.
	held *Subscription
	// carry is the latest canceled subscription whose billing period is
	// still running: the new one takes over its period and what it used.
	carry *Subscription
	// hadTrial: a trial was had already; trials are once per
	// organization and API.
	hadTrial bool
}

// pastOf reads the organization's earlier subscriptions to the API. It
// locks them, so that a concurrent cancel and subscribe cannot pass each
// other unseen.
func (s *Service) pastOf(ctx context.Context, tx pgx.Tx, org, api uuid.UUID, now time.Time) (past, error) {
	rows, err := db.New(tx).SubscriptionListPast(ctx, db.SubscriptionListPastParams{OrganizationID: org, ApiID: api})
	if err != nil {
		return past{}, fmt.Errorf("read past subscriptions: %w", err)
	}
	subs := toSubs(rows)
	var out past
	for i := range subs {
		sub := &subs[i]
		out.hadTrial = out.hadTrial || sub.TrialEndsAt != nil
		if sub.Status != StatusCanceled {
			continue
		}
		if sub.heldBy() && out.held == nil {
			out.held = sub
		}
		if out.carry == nil && sub.CurrentPeriodEnd.After(now) {
			out.carry = sub
		}
	}
	return out, nil
}

// carryQuota records, on the new subscription id, what prev left of the
// billing period's request quota the new one takes over: prev's own
// adjustments (a provider's credit goes with it) minus what the processors
// counted for it. A quota that prev used up stays used up, so the
// gateway blocks the new subscription from its first record on. The
// adjustment never takes more than the new plan's whole quota, so that a
// reset by the provider still restores it. Events of prev still in the
// pipeline when this runs (seconds of lag) are not carried.
func (s *Service) carryQuota(ctx context.Context, tx pgx.Tx, actor identity.Actor, prev Subscription, id uuid.UUID, planQuota *int64) error {
	used, err := s.cfg.Records.PeriodRequests(ctx, prev.ID.String(), prev.CurrentPeriodStart)
	if err != nil {
		return fmt.Errorf("carry quota of %s: %w", prev.ID, err)
	}
	requests := prev.quotaAdjustments - used
	if planQuota != nil {
		requests = max(requests, -*planQuota)
	}
	if err := db.New(tx).QuotaAdjustmentInsertCarried(ctx, db.QuotaAdjustmentInsertCarriedParams{
		SubscriptionID: id, PeriodStart: prev.CurrentPeriodStart, Requests: requests, UsedAtChange: used,
		Reason: "carried from canceled subscription " + prev.ID.String(), Actor: actor.Subject,
	}); err != nil {
		return fmt.Errorf("carry quota of %s: %w", prev.ID, err)
	}
	return nil
}

// ReleaseHold is the admins' release of the hold that a subscription
// canceled while suspended or past_due keeps on its organization and API,
// once the sanction or the debt is settled: the organization may then
// subscribe again.
func (s *Service) ReleaseHold(ctx context.Context, actor identity.Actor, id uuid.UUID, reason string) (Subscription, error) {
	if !actor.IsAdmin() {
		return Subscription{}, identity.ErrForbidden
	}
	var out Subscription
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.lockSub(ctx, tx, id)
		if err != nil {
			return err
		}
		if before.Status != StatusCanceled || !before.heldBy() {
			return fmt.Errorf("%w: subscription %s holds nothing (it is %s)", ErrSubscriptionTransition, id, before.Status)
		}
		now := s.now().UTC()
		if err := db.New(tx).SubscriptionReleaseHold(ctx, db.SubscriptionReleaseHoldParams{ID: id, HoldReleasedAt: &now, HoldReleasedBy: &actor.Subject}); err != nil {
			return fmt.Errorf("release subscription hold: %w", err)
		}
		if out, err = s.lockSub(ctx, tx, id); err != nil {
			return err
		}
		return s.record(ctx, tx, actor, out.OrganizationID, "subscription.hold_released", "subscription", id,
			map[string]any{"canceled_from": before.canceledFrom}, map[string]any{"reason": validation.Reason(reason)}, "", nil)
	})
	return out, err
}

func (s *Service) history(ctx context.Context, tx pgx.Tx, id, version uuid.UUID, st Status, at time.Time, actor identity.Actor, reason string) error {
	err := db.New(tx).SubscriptionHistoryInsert(ctx, db.SubscriptionHistoryInsertParams{
		SubscriptionID: id, PlanVersionID: version, Status: db.SubscriptionStatus(st), EffectiveAt: at, Actor: actor.Subject, Reason: reason,
	})
	if err != nil {
		return fmt.Errorf("record subscription history: %w", err)
	}
	return nil
}

func (s *Service) lockSub(ctx context.Context, tx pgx.Tx, id uuid.UUID) (Subscription, error) {
	return toSub(db.New(tx).SubscriptionGetByIDForUpdate(ctx, id))
}

// GetSubscription returns a subscription the actor may see.
func (s *Service) GetSubscription(ctx context.Context, actor identity.Actor, id uuid.UUID) (Subscription, error) {
	sub, err := toSub(db.New(s.pool).SubscriptionGetByID(ctx, id))
	if err != nil {
		return Subscription{}, err
	}
	if !sub.canSee(actor) {
		return Subscription{}, ErrSubscriptionNotFound
	}
	return sub, nil
}

// SubscriptionFilter selects subscriptions.
type SubscriptionFilter struct {
	APIID  uuid.UUID // uuid.Nil: any
	Status Status
	After  string
	Limit  int
}

// ListSubscriptions lists the subscriptions the actor may see: its
// organization's and those to its APIs; admins all.
func (s *Service) ListSubscriptions(ctx context.Context, actor identity.Actor, f SubscriptionFilter) ([]Subscription, string, error) {
	after, err := pagination.Decode(f.After)
	if err != nil {
		return nil, "", err
	}
	limit := pagination.Limit(f.Limit)
	rows, err := db.New(s.pool).SubscriptionList(ctx, db.SubscriptionListParams{
		Every: actor.IsAdmin(), OrgID: actor.OrgID, ApiID: nullUUID(f.APIID), Status: string(f.Status),
		AfterAt: after.Time(), AfterID: after.ID, RowLimit: int32(limit + 1),
	})
	if err != nil {
		return nil, "", fmt.Errorf("list subscriptions: %w", err)
	}
	out, next := pagination.Page(toSubs(rows), limit, func(x Subscription) pagination.Cursor { return pagination.Cursor{At: x.CreatedAt, ID: x.ID} })
	return out, next, nil
}

func nullUUID(id uuid.UUID) *uuid.UUID {
	if id == uuid.Nil {
		return nil
	}
	return &id
}

// Cancel cancels a subscription now, revoking its keys, or marks it to
// end with its current period.
func (s *Service) Cancel(ctx context.Context, actor identity.Actor, id uuid.UUID, in CancelInput) (Subscription, error) {
	var out Subscription
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.changeSub(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		if !before.Status.live() {
			return fmt.Errorf("%w: subscription is already canceled", ErrSubscriptionTransition)
		}
		if in.AtPeriodEnd {
			if err := db.New(tx).SubscriptionCancelAtPeriodEnd(ctx, id); err != nil {
				return fmt.Errorf("cancel subscription: %w", err)
			}
			if out, err = s.lockSub(ctx, tx, id); err != nil {
				return err
			}
			return s.record(ctx, tx, actor, out.OrganizationID, "subscription.cancel_at_period_end", "subscription", id,
				before, out, "subscription.updated", map[string]any{"subscription": out})
		}
		out, err = s.setStatus(ctx, tx, actor, before, StatusCanceled, "canceled")
		return err
	})
	return out, err
}

// LockSubscription locks a subscription the actor may change, for a
// change to one of its keys (keys.Subscriptions).
func (s *Service) LockSubscription(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID) (keys.Holder, error) {
	sub, err := s.changeSub(ctx, tx, actor, id)
	if err != nil {
		return keys.Holder{}, err
	}
	return keys.Holder{
		ID: sub.ID, OrganizationID: sub.OrganizationID, Status: string(sub.Status),
		Usable: sub.Status != StatusCanceled && sub.Status != StatusSuspended, MaxActiveKeys: sub.MaxActiveKeys,
	}, nil
}

// CheckSubscription returns nil when the actor may see the subscription
// (keys.Subscriptions).
func (s *Service) CheckSubscription(ctx context.Context, actor identity.Actor, id uuid.UUID) error {
	_, err := s.GetSubscription(ctx, actor, id)
	return err
}

var _ keys.Subscriptions = (*Service)(nil)

// changeSub locks a subscription the actor may change.
func (s *Service) changeSub(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID) (Subscription, error) {
	sub, err := s.lockSub(ctx, tx, id)
	if err != nil {
		return Subscription{}, err
	}
	if !sub.canChange(actor) {
		if sub.canSee(actor) {
			return Subscription{}, identity.ErrForbidden
		}
		return Subscription{}, ErrSubscriptionNotFound
	}
	return sub, nil
}

// subTransitions is the subscription state machine.
var subTransitions = map[Status][]Status{
	StatusTrialing:  {StatusActive, StatusPastDue, StatusSuspended, StatusCanceled},
	StatusActive:    {StatusPastDue, StatusSuspended, StatusCanceled},
	StatusPastDue:   {StatusActive, StatusSuspended, StatusCanceled},
	StatusSuspended: {StatusActive, StatusCanceled},
	StatusCanceled:  nil,
}

// setStatus moves a locked subscription to status to. Canceling revokes
// its live keys.
func (s *Service) setStatus(ctx context.Context, tx pgx.Tx, actor identity.Actor, before Subscription, to Status, reason string) (Subscription, error) {
	allowed := false
	for _, st := range subTransitions[before.Status] {
		allowed = allowed || st == to
	}
	if !allowed {
		return Subscription{}, fmt.Errorf("%w: %s → %s", ErrSubscriptionTransition, before.Status, to)
	}
	now := s.now().UTC()
	if err := db.New(tx).SubscriptionUpdateStatus(ctx, db.SubscriptionUpdateStatusParams{
		ID: before.ID, ToStatus: db.SubscriptionStatus(to), Now: now, FromStatus: db.SubscriptionStatus(before.Status),
	}); err != nil {
		return Subscription{}, fmt.Errorf("set subscription status: %w", err)
	}
	if err := s.history(ctx, tx, before.ID, before.PlanVersionID, to, now, actor, reason); err != nil {
		return Subscription{}, err
	}
	if to == StatusCanceled {
		if err := s.keys.RevokeAll(ctx, tx, actor, before.ID, "subscription canceled"); err != nil {
			return Subscription{}, err
		}
	}
	if err := s.enqueueSubSync(ctx, tx, before.ID); err != nil {
		return Subscription{}, err
	}
	after, err := s.lockSub(ctx, tx, before.ID)
	if err != nil {
		return Subscription{}, err
	}
	return after, s.record(ctx, tx, actor, after.OrganizationID, "subscription.transition."+string(to), "subscription", before.ID,
		map[string]Status{"status": before.Status}, map[string]any{"status": to, "reason": reason},
		"subscription."+string(to), map[string]any{"subscription": after, "from": before.Status, "to": to, "reason": reason})
}

// SetStatus is the admins' suspend and resume of a subscription (the
// gateway refuses the keys of a suspended subscription). It ends the
// subscription's dunning: an admin's suspension is lifted by an admin
// only, and an admin's resume lets an unpaid subscription in.
func (s *Service) SetStatus(ctx context.Context, actor identity.Actor, id uuid.UUID, to Status, reason string) (Subscription, error) {
	if !actor.IsAdmin() {
		return Subscription{}, identity.ErrForbidden
	}
	var out Subscription
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		before, err := s.lockSub(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := s.endDunningByAdmin(ctx, tx, actor, before); err != nil {
			return err
		}
		out, err = s.setStatus(ctx, tx, actor, before, to, reason)
		return err
	})
	return out, err
}

// enqueueSubSync queues the outbox job that writes the subscription's
// record to Redis.
func (s *Service) enqueueSubSync(ctx context.Context, tx pgx.Tx, id uuid.UUID) error {
	if _, err := s.cfg.Jobs.InsertTx(ctx, tx, SyncSubscriptionArgs{SubscriptionID: id}, &river.InsertOpts{MaxAttempts: keys.SyncAttempts}); err != nil {
		return fmt.Errorf("enqueue subscription sync: %w", err)
	}
	return nil
}
