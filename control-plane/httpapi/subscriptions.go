package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// UsageReader reads metered usage (a *metering.Reader).
type UsageReader interface {
	Usage(ctx context.Context, q metering.Query) (metering.Report, error)
}

// subscriptionRoutes: plans of an API, subscriptions and their keys.
func (a *api) subscriptionRoutes(r chi.Router) {
	s := a.cfg.Subscriptions
	r.Get(idPath("/v1/apis/{id}/plans"), a.handle(read(listOf(s.ListPlans))))
	r.Post(idPath("/v1/apis/{id}/plans"), a.handle(write(http.StatusCreated, s.CreatePlan)))
	r.Get(idPath("/v1/plans/{id}"), a.handle(read(s.GetPlan)))
	r.Patch(idPath("/v1/plans/{id}"), a.handle(write(http.StatusOK, s.UpdatePlan)))
	r.Post(idPath("/v1/plans/{id}/versions"), a.handle(write(http.StatusCreated, s.CreateVersion)))

	r.Get("/v1/subscriptions", a.handle(a.listSubscriptions))
	r.Post("/v1/subscriptions", a.handle(a.subscribe))
	r.Get(idPath("/v1/subscriptions/{id}"), a.handle(read(s.GetSubscription)))
	r.Post(idPath("/v1/subscriptions/{id}/cancel"), a.handle(writeOptional(http.StatusOK, s.Cancel)))
	r.Get(idPath("/v1/subscriptions/{id}/usage"), a.handle(a.usage(func(ctx context.Context, act identity.Actor, id uuid.UUID) (uuid.UUID, string, error) {
		_, err := s.GetSubscription(ctx, act, id)
		return id, "", err
	})))
	r.Post(idPath("/v1/subscriptions/{id}/plan"), a.handle(write(http.StatusOK, s.ChangePlan)))
	r.Get(idPath("/v1/subscriptions/{id}/quota"), a.handle(a.quotaStatus))
	r.Post(idPath("/v1/subscriptions/{id}/quota/credits"), a.handle(a.adjustQuota(quota.AdjustCredit)))
	r.Post(idPath("/v1/subscriptions/{id}/quota/reset"), a.handle(a.adjustQuota(quota.AdjustReset)))
	k := s.Keys()
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

// adminSubscriptionRoutes are mounted under /v1/admin.
func (a *api) adminSubscriptionRoutes(r chi.Router) {
	for _, st := range []subscriptions.Status{subscriptions.StatusSuspended, subscriptions.StatusActive} {
		path := map[subscriptions.Status]string{subscriptions.StatusSuspended: "suspend", subscriptions.StatusActive: "resume"}[st]
		r.Post(idPath("/subscriptions/{id}/"+path), a.handle(reasoned(with(a.cfg.Subscriptions.SetStatus, st), nil)))
	}
	r.Post(idPath("/subscriptions/{id}/release"), a.handle(reasoned(a.cfg.Subscriptions.ReleaseHold, nil)))
	// The subscriptions service audits the request before it changes the
	// gateway's records.
	r.Post("/reconcile/keys", a.handle(call(a.cfg.Subscriptions.ReconcileKeysRequested)))
	r.Get("/reconcile/usage", a.handle(a.lastUsageReconcile))
	r.Post("/reconcile/usage", a.handle(a.reconcileUsage))
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

// usage answers a usage report for the subscription (and key) that scope
// resolves the path's id to, after checking the caller may see it.
// Query: from, to (RFC 3339; default the last 24 hours) and granularity
// (minute, hour (default), day).
func (a *api) usage(scope func(ctx context.Context, act identity.Actor, id uuid.UUID) (uuid.UUID, string, error)) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id")
		if err != nil {
			return err
		}
		q := r.URL.Query()
		var v validation.Error
		to := time.Now().UTC()
		from := to.Add(-24 * time.Hour)
		for _, p := range []struct {
			name string
			dst  *time.Time
		}{{"from", &from}, {"to", &to}} {
			if !q.Has(p.name) {
				continue
			}
			t, err := time.Parse(time.RFC3339, q.Get(p.name))
			if err != nil {
				v.Add(p.name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
			}
			*p.dst = t
		}
		g := metering.Hour
		if q.Has("granularity") {
			g = metering.Granularity(q.Get("granularity"))
			if !g.Valid() {
				v.Add("granularity", "must be minute, hour or day")
			}
		}
		if err := v.Err(); err != nil {
			return err
		}
		sub, key, err := scope(r.Context(), actorFrom(r), id)
		if err != nil {
			return err
		}
		if a.cfg.Usage == nil {
			return errUsageUnavailable
		}
		rep, err := a.cfg.Usage.Usage(r.Context(), metering.Query{Subject: sub.String(), KeyID: key, From: from, To: to, Granularity: g})
		if err != nil && !errors.Is(err, metering.ErrBadQuery) && r.Context().Err() == nil {
			a.log.ErrorContext(r.Context(), "usage read failed", "error", err)
			return fmt.Errorf("%w: %w", errUsageUnavailable, err)
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, rep)
		return nil
	}
}
