package httpapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
)

// keyRoutes: a subscription's API keys.
func (a *api) keyRoutes(r chi.Router) {
	k := a.cfg.Subscriptions.Keys()
	r.Get(idPath("/v1/subscriptions/{id}/keys"), a.handle(read(listOf(k.ListKeys))))
	r.Post(idPath("/v1/subscriptions/{id}/keys"), a.handle(issued(decode, k.CreateKey)))

	r.Get(idPath("/v1/keys/{id}"), a.handle(read(k.GetKey)))
	r.Patch(idPath("/v1/keys/{id}"), a.handle(write(http.StatusOK, k.UpdateKey)))
	r.Delete(idPath("/v1/keys/{id}"), a.handle(remove(k.DeleteKey)))
	for _, act := range []keys.Action{keys.ActionSuspend, keys.ActionResume, keys.ActionRevoke} {
		r.Post(idPath("/v1/keys/{id}/"+string(act)), a.handle(reasoned(with(k.Act, act), nil)))
	}
	r.Post(idPath("/v1/keys/{id}/rotate"), a.handle(issued(decodeOptional, k.Rotate)))
	r.Post(idPath("/v1/keys/{id}/reveal"), a.handle(secret(k.Reveal)))
	r.Get(idPath("/v1/keys/{id}/events"), a.handle(a.keyEvents))
	r.Get(idPath("/v1/keys/{id}/usage"), a.handle(a.usage(func(ctx context.Context, act identity.Actor, id uuid.UUID) (uuid.UUID, string, error) {
		sub, err := k.SubscriptionOf(ctx, act, id)
		return sub, id.String(), err
	})))
}

// issued answers 201 with the key do issues for the path's id and a body
// read by dec: its plaintext is shown this once.
func issued[In any](dec func(*http.Request, any) error, do change[In, keys.Key]) handler {
	return writeWith(dec, do, func(w http.ResponseWriter, k keys.Key) {
		w.Header().Set("Location", "/v1/keys/"+k.ID.String())
		writeSecret(w, http.StatusCreated, k)
	})
}

// keyEvents is a key's audit trail, newest first.
func (a *api) keyEvents(w http.ResponseWriter, r *http.Request) error {
	id, limit, err := idAndLimit(r)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = 50
	}
	k, err := a.cfg.Subscriptions.Keys().GetKey(r.Context(), actorFrom(r), id)
	if err != nil {
		return err
	}
	f := audit.Filter{TargetType: "key", TargetID: id.String(), Limit: limit + 1}
	if err := auditCursor(r, &f); err != nil {
		return err
	}
	items, err := audit.List(r.Context(), a.cfg.Pool, f)
	if err != nil {
		return err
	}
	page := auditPage(items, limit)
	if k.ShowsClients(actorFrom(r)) {
		writeJSON(w, http.StatusOK, page)
		return nil
	}
	// The API's provider sees what happened to its consumer's key, not
	// where the consumer's people called from.
	view := make([]providerKeyEvent, len(page.Data))
	for i, e := range page.Data {
		view[i] = providerKeyEvent{Entry: e}
	}
	writeJSON(w, http.StatusOK, newList(view, page.NextCursor))
	return nil
}

// providerKeyEvent is an audit entry without the caller's source IP and
// user agent: the fields at this depth hide the embedded ones, and being
// empty they are left out.
type providerKeyEvent struct {
	audit.Entry
	SourceIP  string `json:"source_ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
}
