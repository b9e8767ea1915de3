package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/control-plane/pricing"
)

// meterRoutes: the meters of an API.
func (a *api) meterRoutes(r chi.Router) {
	p := a.pricing()
	r.Get(idPath("/v1/apis/{id}/meters"), a.handle(read(listOf(p.ListMeters))))
	r.Post(idPath("/v1/apis/{id}/meters"), a.handle(write(http.StatusCreated, p.CreateMeter)))
	r.Get(idPath("/v1/meters/{id}"), a.handle(read(p.GetMeter)))
	r.Patch(idPath("/v1/meters/{id}"), a.handle(write(http.StatusOK, p.UpdateMeter)))
	r.Delete(idPath("/v1/meters/{id}"), a.handle(remove(p.DeleteMeter)))
}

// pricing is the configured meters' service, or one on the pool (nil
// without a pool: its routes then fail as 500s, like every route that
// needs Postgres).
func (a *api) pricing() *pricing.Service {
	if a.cfg.Pricing != nil {
		return a.cfg.Pricing
	}
	p, _ := pricing.New(a.cfg.Pool)
	return p
}
