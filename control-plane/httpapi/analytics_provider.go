package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/analytics"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/metering"
)

// providerAnalyticsRoutes: a provider's analytics of one API or of all its
// APIs. Its members and admins; anyone else, a subscriber of the API
// included, 404.
func (a *api) providerAnalyticsRoutes(r chi.Router) {
	r.Get(idPath("/v1/apis/{id}/analytics"), a.handle(a.providerView(a.cfg.Analytics.APIAnalytics)))
	r.Get(idPath("/v1/providers/{id}/analytics"), a.handle(a.providerView(a.cfg.Analytics.ProviderAnalytics)))
}

// adminOverviewRoutes are mounted under /v1/admin.
func (a *api) adminOverviewRoutes(r chi.Router) {
	r.Get("/overview", a.handle(a.adminOverview))
}

// providerWindow reads from, to, tz (as the consumer views) and top
// (1 to metering.MaxProviderTop, default analytics.DefaultProviderTop).
func providerWindow(r *http.Request) (analytics.Window, int, error) {
	q := r.URL.Query()
	w, err := analytics.ParseWindow(q, time.Now(), analytics.AnalyticsWindow)
	if err != nil {
		return analytics.Window{}, 0, err
	}
	top := analytics.DefaultProviderTop
	if q.Has("top") {
		n, err := strconv.Atoi(q.Get("top"))
		if err != nil || n < 1 || n > metering.MaxProviderTop {
			return analytics.Window{}, 0, analytics.InvalidParameter("top", "must be a whole number from 1 to %d", metering.MaxProviderTop)
		}
		top = n
	}
	return w, top, nil
}

// providerView answers a provider view that view computes for the id in
// the path (an API's, or a provider organization's).
func (a *api) providerView(view func(context.Context, identity.Actor, uuid.UUID, analytics.Window, int) (analytics.ProviderView, error)) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id")
		if err != nil {
			return err
		}
		win, top, err := providerWindow(r)
		if err != nil {
			return err
		}
		v, err := view(r.Context(), actorFrom(r), id, win, top)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, v)
		return nil
	}
}

// adminOverview answers 200 whatever fails: each part that could not be
// read is null and listed in unavailable.
func (a *api) adminOverview(w http.ResponseWriter, r *http.Request) error {
	o, err := a.cfg.Analytics.Overview(r.Context(), actorFrom(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}
