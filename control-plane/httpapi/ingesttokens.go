package httpapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/ingesttokens"
)

// adminIngestTokenRoutes are the ingest-token routes under /v1/admin (admins
// only): issue (the plaintext is in that answer only), list, revoke.
func (a *api) adminIngestTokenRoutes(r chi.Router) {
	r.Get("/ingest-tokens", a.handle(a.listIngestTokens))
	r.Post("/ingest-tokens", a.handle(a.createIngestToken))
	r.Delete(idPath("/ingest-tokens/{id}"), a.handle(answer(http.StatusOK, writeJSON, a.revokeIngestToken)))
}

func (a *api) ingestTokens() *ingesttokens.Service {
	if a.cfg.IngestTokens != nil {
		return a.cfg.IngestTokens
	}
	return ingesttokens.New(a.cfg.Pool)
}

func (a *api) createIngestToken(w http.ResponseWriter, r *http.Request) error {
	var in ingesttokens.CreateInput
	if err := decode(r, &in); err != nil {
		return err
	}
	out, err := a.ingestTokens().Create(r.Context(), actorFrom(r), in)
	if err != nil {
		return err
	}
	writeSecret(w, http.StatusCreated, out)
	return nil
}

func (a *api) listIngestTokens(w http.ResponseWriter, r *http.Request) error {
	out, err := a.ingestTokens().List(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newList(out, ""))
	return nil
}

// revokeIngestToken answers the token revoked.
func (a *api) revokeIngestToken(ctx context.Context, act identity.Actor, id uuid.UUID) (ingesttokens.Token, error) {
	return a.ingestTokens().Revoke(ctx, act, id)
}
