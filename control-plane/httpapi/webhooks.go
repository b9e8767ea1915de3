package httpapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/webhooks"
)

// webhookRoutes lets every member of an organization manage its webhook
// endpoints and inspect and redeliver their deliveries.
func (a *api) webhookRoutes(r chi.Router) {
	r.Get("/v1/webhooks/event-types", a.handle(a.eventTypes))
	r.Get("/v1/webhooks", a.handle(a.listEndpoints))
	r.Post("/v1/webhooks", a.handle(a.createEndpoint))
	r.Get(idPath("/v1/webhooks/{id}"), a.handle(read(a.getEndpoint)))
	r.Patch(idPath("/v1/webhooks/{id}"), a.handle(write(http.StatusOK, a.cfg.Webhooks.UpdateEndpoint)))
	r.Delete(idPath("/v1/webhooks/{id}"), a.handle(remove(a.cfg.Webhooks.DeleteEndpoint)))
	r.Post(idPath("/v1/webhooks/{id}/rotate-secret"), a.handle(secret(a.rotateSecret)))
	r.Get(idPath("/v1/webhooks/{id}/deliveries"), a.handle(a.listDeliveries))
	r.Get(idPath("/v1/webhooks/{id}/deliveries/{delivery}"), a.handle(a.getDelivery))
	r.Post(idPath("/v1/webhooks/{id}/deliveries/{delivery}/redeliver"), a.handle(a.redeliver))
}

func (a *api) eventTypes(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, newList(webhooks.EventTypes, ""))
	return nil
}

func (a *api) listEndpoints(w http.ResponseWriter, r *http.Request) error {
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	items, next, err := a.cfg.Webhooks.ListEndpoints(r.Context(), actorFrom(r).OrgID, r.URL.Query().Get("cursor"), limit)
	return writePage(w, items, next, err)
}

type endpointWithSecret struct {
	webhooks.Endpoint
	Secret string `json:"secret"`
}

func (a *api) createEndpoint(w http.ResponseWriter, r *http.Request) error {
	var in webhooks.EndpointInput
	if err := decode(r, &in); err != nil {
		return err
	}
	ep, secret, err := a.cfg.Webhooks.CreateEndpoint(r.Context(), actorFrom(r), in)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/webhooks/"+ep.ID.String())
	writeSecret(w, http.StatusCreated, endpointWithSecret{Endpoint: ep, Secret: secret})
	return nil
}

func (a *api) getEndpoint(ctx context.Context, act identity.Actor, id uuid.UUID) (webhooks.Endpoint, error) {
	return a.cfg.Webhooks.GetEndpoint(ctx, act.OrgID, id)
}

// rotateSecret gives the endpoint a new signing secret, answered this once.
func (a *api) rotateSecret(ctx context.Context, act identity.Actor, id uuid.UUID) (map[string]string, error) {
	secret, err := a.cfg.Webhooks.RotateSecret(ctx, act, id)
	if err != nil {
		return nil, err
	}
	return map[string]string{"secret": secret}, nil
}

func (a *api) listDeliveries(w http.ResponseWriter, r *http.Request) error {
	id, limit, err := idAndLimit(r)
	if err != nil {
		return err
	}
	items, next, err := a.cfg.Webhooks.ListDeliveries(r.Context(), actorFrom(r).OrgID, id, r.URL.Query().Get("cursor"), limit)
	return writePage(w, items, next, err)
}

// delivery loads the path's {delivery}, refusing one that is not of the
// path's endpoint.
func (a *api) delivery(r *http.Request) (webhooks.Delivery, error) {
	endpoint, err := pathID(r, "id")
	if err != nil {
		return webhooks.Delivery{}, err
	}
	id, err := pathID(r, "delivery")
	if err != nil {
		return webhooks.Delivery{}, err
	}
	d, err := a.cfg.Webhooks.GetDelivery(r.Context(), actorFrom(r).OrgID, id)
	if err != nil {
		return webhooks.Delivery{}, err
	}
	if d.EndpointID != endpoint {
		return webhooks.Delivery{}, webhooks.ErrDeliveryNotFound
	}
	return d, nil
}

func (a *api) getDelivery(w http.ResponseWriter, r *http.Request) error {
	d, err := a.delivery(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (a *api) redeliver(w http.ResponseWriter, r *http.Request) error {
	d, err := a.delivery(r)
	if err != nil {
		return err
	}
	d, err = a.cfg.Webhooks.Redeliver(r.Context(), actorFrom(r), d.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, d)
	return nil
}
