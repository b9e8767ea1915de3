package httpapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/validation"
)

// subscriptionRoutes: subscriptions to plans (plans.go serves the plans).
func (a *api) subscriptionRoutes(r chi.Router) {
	s := a.cfg.Subscriptions
	r.Get("/v1/subscriptions", a.handle(a.listSubscriptions))
	r.Post("/v1/subscriptions", a.handle(a.subscribe))
	r.Get(idPath("/v1/subscriptions/{id}"), a.handle(read(s.GetSubscription)))
	r.Post(idPath("/v1/subscriptions/{id}/cancel"), a.handle(writeOptional(http.StatusOK, s.Cancel)))
	r.Get(idPath("/v1/subscriptions/{id}/usage"), a.handle(a.usage(func(ctx context.Context, act identity.Actor, id uuid.UUID) (uuid.UUID, string, error) {
		_, err := s.GetSubscription(ctx, act, id)
		return id, "", err
	})))
	r.Post(idPath("/v1/subscriptions/{id}/plan"), a.handle(write(http.StatusOK, s.ChangePlan)))
}

// adminSubscriptionRoutes are mounted under /v1/admin.
func (a *api) adminSubscriptionRoutes(r chi.Router) {
	for _, st := range []subscriptions.Status{subscriptions.StatusSuspended, subscriptions.StatusActive} {
		path := map[subscriptions.Status]string{subscriptions.StatusSuspended: "suspend", subscriptions.StatusActive: "resume"}[st]
		r.Post(idPath("/subscriptions/{id}/"+path), a.handle(reasoned(with(a.cfg.Subscriptions.SetStatus, st), nil)))
	}
	r.Post(idPath("/subscriptions/{id}/release"), a.handle(reasoned(a.cfg.Subscriptions.ReleaseHold, nil)))
}

func (a *api) subscribe(w http.ResponseWriter, r *http.Request) error {
	var in subscriptions.SubscribeInput
	if err := decode(r, &in); err != nil {
		return err
	}
	if in.PlanID == uuid.Nil {
		return validation.One("plan_id", "is required")
	}
	out, err := a.cfg.Subscriptions.Subscribe(r.Context(), actorFrom(r), in)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/subscriptions/"+out.ID.String())
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (a *api) listSubscriptions(w http.ResponseWriter, r *http.Request) error {
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	var v validation.Error
	apiID := queryUUID(r, "api_id", &v)
	q := r.URL.Query()
	st := subscriptions.Status(q.Get("status"))
	switch {
	case !q.Has("status"):
	case st == subscriptions.StatusTrialing, st == subscriptions.StatusActive, st == subscriptions.StatusPastDue,
		st == subscriptions.StatusSuspended, st == subscriptions.StatusCanceled:
	default:
		v.Add("status", "must be trialing, active, past_due, suspended or canceled")
	}
	if err := v.Err(); err != nil {
		return err
	}
	items, next, err := a.cfg.Subscriptions.ListSubscriptions(r.Context(), actorFrom(r), subscriptions.SubscriptionFilter{
		APIID: apiID, Status: st, After: q.Get("cursor"), Limit: limit,
	})
	return writePage(w, items, next, err)
}
