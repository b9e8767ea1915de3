package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// planRoutes: the plans of an API and their versions, with each version's
// charges.
func (a *api) planRoutes(r chi.Router) {
	s := a.cfg.Subscriptions
	r.Get(idPath("/v1/apis/{id}/plans"), a.handle(read(listOf(s.ListPlans))))
	r.Post(idPath("/v1/apis/{id}/plans"), a.handle(write(http.StatusCreated, s.CreatePlan)))
	r.Get(idPath("/v1/plans/{id}"), a.handle(read(s.GetPlan)))
	r.Patch(idPath("/v1/plans/{id}"), a.handle(write(http.StatusOK, s.UpdatePlan)))
	r.Get(idPath("/v1/plans/{id}/versions"), a.handle(read(listOf(s.ListVersions))))
	r.Post(idPath("/v1/plans/{id}/versions"), a.handle(write(http.StatusCreated, s.CreateVersion)))
	r.Get(idPath("/v1/plan-versions/{id}"), a.handle(read(s.GetVersion)))
	r.Post(idPath("/v1/plans/{id}/quote"), a.handle(a.quote))
}
