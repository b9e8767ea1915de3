package httpapi

import (
	"context"
	"errors"
	"net/http"

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

// DriftChecker checks usage drift and keeps its reports (a
// *drift.Checker).
type DriftChecker interface {
	CheckRequested(ctx context.Context, actor identity.Actor) (drift.Report, error)
	Last(ctx context.Context) (drift.Report, bool, error)
}

var (
	// errQuotaUnavailable: Redis, ClickHouse or Postgres did not answer; the
	// cause is logged, not shown.
	errQuotaUnavailable = errors.New("quota state cannot be read now")
	// errNoUsageCheck: this control plane has no ClickHouse to check with.
	errNoUsageCheck     = errors.New("this control plane has no ClickHouse configured, so it cannot check usage")
	errNoUsageReconcile = errors.New("no usage reconciliation has run yet")
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

func (a *api) lastUsageReconcile(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Drift == nil {
		return errQuotaUnavailable
	}
	rep, ok, err := a.cfg.Drift.Last(r.Context())
	if err != nil {
		return err
	}
	if !ok {
		return errNoUsageReconcile
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

func (a *api) reconcileUsage(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Drift == nil {
		return errQuotaUnavailable
	}
	// The drift check audits the request with the report it stores.
	rep, err := a.cfg.Drift.CheckRequested(r.Context(), actorFrom(r))
	if err != nil {
		return a.quotaFailed(r, "usage reconciliation", err)
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
