package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/pagination"
	"github.com/veil-platform/veil/internal/validation"
)

func (a *api) routes(r chi.Router) {
	r.Get("/v1/me", a.handle(a.me))

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
	r.Get(idPath("/v1/approvals/{id}"), a.handle(read(a.cfg.Catalog.GetApproval)))
	r.Post(idPath("/v1/approvals/{id}/comments"), a.handle(write(http.StatusCreated, a.comment)))

	a.webhookRoutes(r)
	a.subscriptionRoutes(r)
	r.Get("/v1/audit", a.handle(a.listAudit))

	r.Route("/v1/admin", func(r chi.Router) {
		r.Use(adminOnly)
		for _, act := range []catalog.Action{catalog.ActionSuspend, catalog.ActionResume, catalog.ActionRetry} {
			r.Post(idPath("/apis/{id}/"+string(act)), a.handle(reasoned(with(a.cfg.Catalog.Act, act), acceptedWhenApproved)))
		}
		r.Get("/approvals", a.handle(a.listApprovals))
		r.Get("/approvals/stats", a.handle(call(a.cfg.Catalog.ApprovalStats)))
		r.Post("/approvals/bulk", a.handle(a.bulk))
		r.Get(idPath("/approvals/{id}"), a.handle(read(a.cfg.Catalog.GetApproval)))
		r.Post(idPath("/approvals/{id}/approve"), a.handle(reasoned(with(a.cfg.Catalog.Decide, catalog.DecisionApprove), nil)))
		r.Post(idPath("/approvals/{id}/reject"), a.handle(reasoned(with(a.cfg.Catalog.Decide, catalog.DecisionReject), nil)))
		r.Post(idPath("/approvals/{id}/escalate"), a.handle(reasoned(with(a.cfg.Catalog.Decide, catalog.DecisionEscalate), nil)))
		r.Post(idPath("/approvals/{id}/request-changes"), a.handle(reasoned(with(a.cfg.Catalog.Decide, catalog.DecisionRequestChanges), nil)))
		r.Post(idPath("/approvals/{id}/comments"), a.handle(write(http.StatusCreated, a.comment)))
		// The catalog audits the request before it changes the gateway.
		r.Post("/reconcile/apis", a.handle(call(a.cfg.Catalog.ReconcileRequested)))
		a.adminSubscriptionRoutes(r)
		a.adminIngestTokenRoutes(r)
	})
}

func (a *api) me(w http.ResponseWriter, r *http.Request) error {
	p, _ := identity.FromContext(r.Context())
	act := actorFrom(r)
	writeJSON(w, http.StatusOK, map[string]any{
		"subject": p.Subject, "organization": p.Org, "organization_id": act.OrgID, "role": p.Role, "name": p.Name, "email": p.Email,
	})
	return nil
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

type commentBody struct {
	Comment string `json:"comment"`
}

func (a *api) comment(ctx context.Context, act identity.Actor, id uuid.UUID, b commentBody) (catalog.ApprovalEvent, error) {
	return a.cfg.Catalog.Comment(ctx, act, id, b.Comment)
}

func (a *api) listApprovals(w http.ResponseWriter, r *http.Request) error {
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var v validation.Error
	f := catalog.ApprovalFilter{
		Status: catalog.ApprovalStatus(q.Get("status")), Priority: catalog.Priority(q.Get("priority")),
		After: q.Get("cursor"), Limit: limit, Overdue: queryBool(r, "overdue", &v),
		OrganizationID: queryUUID(r, "organization_id", &v), APIID: queryUUID(r, "api_id", &v),
	}
	if q.Has("status") && f.Status == "" {
		v.Add("status", "must not be empty")
	}
	if q.Has("priority") && f.Priority == "" {
		v.Add("priority", "must not be empty")
	}
	switch f.Status {
	case "", catalog.ApprovalPending, catalog.ApprovalEscalated, catalog.ApprovalApproved, catalog.ApprovalRejected,
		catalog.ApprovalChangesRequested, catalog.ApprovalExpired:
	default:
		v.Add("status", "unknown status")
	}
	switch f.Priority {
	case "", catalog.PriorityLow, catalog.PriorityNormal, catalog.PriorityHigh, catalog.PriorityUrgent:
	default:
		v.Add("priority", "unknown priority")
	}
	if len(v.Fields) > 0 {
		return &v
	}
	items, next, err := a.cfg.Catalog.ListApprovals(r.Context(), actorFrom(r), f)
	return writePage(w, items, next, err)
}

type bulkResult struct {
	ID       uuid.UUID         `json:"id"`
	Status   int               `json:"status"`
	Approval *catalog.Approval `json:"approval,omitempty"`
	Problem  any               `json:"problem,omitempty"`
}

func (a *api) bulk(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		IDs    []uuid.UUID      `json:"ids"`
		Action catalog.Decision `json:"action"`
		Reason string           `json:"reason"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	switch in.Action {
	case catalog.DecisionApprove, catalog.DecisionReject, catalog.DecisionEscalate, catalog.DecisionRequestChanges:
	default:
		return &validation.Error{Fields: []validation.Field{{Field: "action", Detail: "must be approve, reject, escalate or request_changes"}}}
	}
	res, err := a.cfg.Catalog.DecideBulk(r.Context(), actorFrom(r), in.IDs, in.Action, in.Reason)
	if err != nil {
		return err
	}
	out := make([]bulkResult, len(res))
	for i, x := range res {
		out[i] = bulkResult{ID: x.ID, Status: http.StatusOK, Approval: x.Approval}
		if x.Err != nil {
			rec := &recorder{header: http.Header{}}
			a.fail(rec, r, x.Err)
			out[i].Status = rec.status
			out[i].Problem = rec.body
		}
	}
	writeJSON(w, http.StatusMultiStatus, map[string]any{"results": out})
	return nil
}

func (a *api) listAudit(w http.ResponseWriter, r *http.Request) error {
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = 50
	}
	q := r.URL.Query()
	// One row more than asked tells whether a next page exists.
	f := audit.Filter{TargetType: q.Get("target_type"), TargetID: q.Get("target_id"), Action: q.Get("action"), Limit: limit + 1}
	if err := auditCursor(r, &f); err != nil {
		return err
	}
	act := actorFrom(r)
	var v validation.Error
	org := queryUUID(r, "organization_id", &v)
	if err := v.Err(); err != nil {
		return err
	}
	switch {
	case act.Role != identity.RoleAdmin:
		f.OrganizationID = &act.OrgID
	case org != uuid.Nil:
		f.OrganizationID = &org
	}
	items, err := audit.List(r.Context(), a.cfg.Pool, f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, auditPage(items, limit))
	return nil
}

// auditCursor reads an audit list's cursor: the id below which to list.
func auditCursor(r *http.Request, f *audit.Filter) error {
	q := r.URL.Query()
	if !q.Has("cursor") {
		return nil
	}
	n, err := strconv.ParseInt(q.Get("cursor"), 10, 64)
	if err != nil || n <= 0 {
		return pagination.ErrBadCursor
	}
	f.BeforeID = n
	return nil
}

// auditPage trims one page from items fetched with limit+1.
func auditPage(items []audit.Entry, limit int) list[audit.Entry] {
	next := ""
	if len(items) > limit {
		items = items[:limit]
		next = strconv.FormatInt(items[len(items)-1].ID, 10)
	}
	return newList(items, next)
}

// recorder captures a problem written for one item of a bulk answer.
type recorder struct {
	header http.Header
	status int
	body   any
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int)   { r.status = s }
func (r *recorder) Write(b []byte) (int, error) {
	r.body = jsonRaw(b)
	return len(b), nil
}
