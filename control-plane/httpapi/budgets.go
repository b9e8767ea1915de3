package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/control-plane/budgets"
	"github.com/veil-platform/veil/internal/validation"
)

// budgetRoutes: an organization's members (and admins) manage its
// budgets; anyone else, the provider of a budgeted subscription's API
// included, finds none.
func (a *api) budgetRoutes(r chi.Router) {
	b := a.cfg.Budgets
	r.Get("/v1/budgets", a.handle(a.listBudgets))
	r.Post("/v1/budgets", a.handle(a.createBudget))
	r.Get(idPath("/v1/budgets/{id}"), a.handle(read(b.Get)))
	r.Put(idPath("/v1/budgets/{id}"), a.handle(write(http.StatusOK, b.Change)))
	r.Delete(idPath("/v1/budgets/{id}"), a.handle(remove(b.Delete)))
}

// listBudgets pages through the caller's organization's budgets, or for
// an admin those of ?organization_id=.
func (a *api) listBudgets(w http.ResponseWriter, r *http.Request) error {
	var v validation.Error
	org := queryUUID(r, "organization_id", &v)
	if err := v.Err(); err != nil {
		return err
	}
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	items, next, err := a.cfg.Budgets.List(r.Context(), actorFrom(r), org, r.URL.Query().Get("cursor"), limit)
	return writePage(w, items, next, err)
}

func (a *api) createBudget(w http.ResponseWriter, r *http.Request) error {
	var in budgets.Input
	if err := decode(r, &in); err != nil {
		return err
	}
	out, err := a.cfg.Budgets.Create(r.Context(), actorFrom(r), in)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/budgets/"+out.ID.String())
	writeJSON(w, http.StatusCreated, out)
	return nil
}
