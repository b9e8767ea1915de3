package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/control-plane/drift"
	"github.com/veil-platform/veil/control-plane/identity"
)

// reconcileRoutes are mounted under /v1/admin: an admin's request to
// reconcile the gateway's routes, its key and subscription records, or the
// usage counters, now. The catalog and the subscriptions service audit the
// request before they change the gateway.
func (a *api) reconcileRoutes(r chi.Router) {
	r.Post("/reconcile/apis", a.handle(call(a.cfg.Catalog.ReconcileRequested)))
	r.Post("/reconcile/keys", a.handle(call(a.cfg.Subscriptions.ReconcileKeysRequested)))
	r.Get("/reconcile/usage", a.handle(a.lastUsageReconcile))
	r.Post("/reconcile/usage", a.handle(a.reconcileUsage))
}

// DriftChecker checks usage drift and keeps its reports (a
// *drift.Checker).
type DriftChecker interface {
	CheckRequested(ctx context.Context, actor identity.Actor) (drift.Report, error)
	Last(ctx context.Context) (drift.Report, bool, error)
}

// errNoUsageReconcile: GET /v1/admin/reconcile/usage before any run.
var errNoUsageReconcile = errors.New("no usage reconciliation has run yet")

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
