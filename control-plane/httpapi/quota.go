package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/drift"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/control-plane/subscriptions"
)

// QuotaService answers quota status (a *quota.Service).
type QuotaService interface {
	Status(ctx context.Context, subscriptionID uuid.UUID) (quota.Status, error)
}

var (
	// errQuotaUnavailable: Redis, ClickHouse or Postgres did not answer; the
	// cause is logged, not shown.
	errQuotaUnavailable = errors.New("quota state cannot be read now")
	// errNoUsageCheck: this control plane has no ClickHouse to check with.
	errNoUsageCheck = errors.New("this control plane has no ClickHouse configured, so it cannot check usage")
)

// quotaFailed logs why a quota read failed and answers the generic error.
func (a *api) quotaFailed(r *http.Request, what string, err error) error {
	if errors.Is(err, drift.ErrNoClickHouse) {
		return errNoUsageCheck
	}
	if r.Context().Err() != nil {
		return r.Context().Err()
	}
	a.log.ErrorContext(r.Context(), what+" failed", "error", err)
	return errQuotaUnavailable
}

// quotaRoutes: a subscription's quota, and its provider's credits and
// resets.
func (a *api) quotaRoutes(r chi.Router) {
	r.Get(idPath("/v1/subscriptions/{id}/quota"), a.handle(a.quotaStatus))
	r.Post(idPath("/v1/subscriptions/{id}/quota/credits"), a.handle(a.adjustQuota(quota.AdjustCredit)))
	r.Post(idPath("/v1/subscriptions/{id}/quota/reset"), a.handle(a.adjustQuota(quota.AdjustReset)))
}

// quotaStatus answers what the subscription used of its quota this
// period, for whoever may see the subscription.
func (a *api) quotaStatus(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if _, err := a.cfg.Subscriptions.GetSubscription(r.Context(), actorFrom(r), id); err != nil {
		return err
	}
	if a.cfg.Quota == nil {
		return errQuotaUnavailable
	}
	st, err := a.cfg.Quota.Status(r.Context(), id)
	if errors.Is(err, quota.ErrNotFound) {
		return subscriptions.ErrSubscriptionNotFound
	}
	if err != nil {
		return a.quotaFailed(r, "quota status", err)
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// adjustQuota credits or resets the period's quota.
func (a *api) adjustQuota(kind string) func(http.ResponseWriter, *http.Request) error {
	return write(http.StatusCreated, func(ctx context.Context, act identity.Actor, id uuid.UUID, in quota.AdjustmentInput) (quota.Adjustment, error) {
		return quota.NewAdjuster(a.cfg.Pool, a.cfg.Subscriptions).Adjust(ctx, act, id, kind, in)
	})
}
