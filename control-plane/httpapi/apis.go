package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/internal/validation"
)

// apiRoutes: the catalog's APIs, their versions and state changes.
func (a *api) apiRoutes(r chi.Router) {
	r.Get("/v1/apis", a.handle(a.listAPIs))
	r.Post("/v1/apis", a.handle(a.createAPI))
	r.Get(idPath("/v1/apis/{id}"), a.handle(read(a.cfg.Catalog.GetAPI)))
	r.Patch(idPath("/v1/apis/{id}"), a.handle(write(http.StatusOK, a.cfg.Catalog.UpdateAPI)))
	r.Delete(idPath("/v1/apis/{id}"), a.handle(remove(a.cfg.Catalog.DeleteAPI)))
	r.Get(idPath("/v1/apis/{id}/versions"), a.handle(read(listOf(a.cfg.Catalog.ListVersions))))
	r.Post(idPath("/v1/apis/{id}/versions"), a.handle(write(http.StatusCreated, a.cfg.Catalog.CreateVersion)))
	r.Get(idPath("/v1/apis/{id}/transitions"), a.handle(read(listOf(a.cfg.Catalog.Transitions))))
	r.Post(idPath("/v1/apis/{id}/signing-secret/rotate"), a.handle(secret(a.cfg.Catalog.RotateSigningSecret)))
	r.Post(idPath("/v1/apis/{id}/submit"), a.handle(writeOptional(http.StatusCreated, a.cfg.Catalog.Submit)))
	for _, act := range []catalog.Action{catalog.ActionDeprecate, catalog.ActionRetire, catalog.ActionRevise} {
		r.Post(idPath("/v1/apis/{id}/"+string(act)), a.handle(reasoned(with(a.cfg.Catalog.Act, act), acceptedWhenApproved)))
	}
}

// adminAPIRoutes are mounted under /v1/admin.
func (a *api) adminAPIRoutes(r chi.Router) {
	for _, act := range []catalog.Action{catalog.ActionSuspend, catalog.ActionResume, catalog.ActionRetry} {
		r.Post(idPath("/apis/{id}/"+string(act)), a.handle(reasoned(with(a.cfg.Catalog.Act, act), acceptedWhenApproved)))
	}
}

func (a *api) listAPIs(w http.ResponseWriter, r *http.Request) error {
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	state := catalog.State(q.Get("state"))
	if q.Has("state") && !state.Valid() {
		return &validation.Error{Fields: []validation.Field{{Field: "state", Detail: "unknown state"}}}
	}
	items, next, err := a.cfg.Catalog.ListAPIs(r.Context(), actorFrom(r), catalog.APIFilter{State: state, After: q.Get("cursor"), Limit: limit, Search: q.Get("q")})
	return writePage(w, items, next, err)
}

func (a *api) createAPI(w http.ResponseWriter, r *http.Request) error {
	var in catalog.APIInput
	if err := decode(r, &in); err != nil {
		return err
	}
	out, err := a.cfg.Catalog.CreateAPI(r.Context(), actorFrom(r), in)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/apis/"+out.ID.String())
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// acceptedWhenApproved is 202 for an API approved by the action, whose
// registration runs in the background, and 200 otherwise.
func acceptedWhenApproved(out catalog.API) int {
	if out.State == catalog.StateApproved {
		return http.StatusAccepted
	}
	return http.StatusOK
}
