package httpapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/validation"
)

// approvalRoutes: an API's approval request, as its organization sees it.
func (a *api) approvalRoutes(r chi.Router) {
	r.Get(idPath("/v1/approvals/{id}"), a.handle(read(a.cfg.Catalog.GetApproval)))
	r.Post(idPath("/v1/approvals/{id}/comments"), a.handle(write(http.StatusCreated, a.comment)))
}

// adminApprovalRoutes are mounted under /v1/admin: the review queue and
// its decisions.
func (a *api) adminApprovalRoutes(r chi.Router) {
	r.Get("/approvals", a.handle(a.listApprovals))
	r.Get("/approvals/stats", a.handle(call(a.cfg.Catalog.ApprovalStats)))
	r.Post("/approvals/bulk", a.handle(a.bulk))
	r.Get(idPath("/approvals/{id}"), a.handle(read(a.cfg.Catalog.GetApproval)))
	r.Post(idPath("/approvals/{id}/approve"), a.handle(reasoned(with(a.cfg.Catalog.Decide, catalog.DecisionApprove), nil)))
	r.Post(idPath("/approvals/{id}/reject"), a.handle(reasoned(with(a.cfg.Catalog.Decide, catalog.DecisionReject), nil)))
	r.Post(idPath("/approvals/{id}/escalate"), a.handle(reasoned(with(a.cfg.Catalog.Decide, catalog.DecisionEscalate), nil)))
	r.Post(idPath("/approvals/{id}/request-changes"), a.handle(reasoned(with(a.cfg.Catalog.Decide, catalog.DecisionRequestChanges), nil)))
	r.Post(idPath("/approvals/{id}/comments"), a.handle(write(http.StatusCreated, a.comment)))
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

// recorder captures a problem written for one item of a bulk answer.
type recorder struct {
	header http.Header
	status int
	body   any
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(s int) { r.status = s }

func (r *recorder) Write(b []byte) (int, error) {
	r.body = jsonRaw(b)
	return len(b), nil
}

type jsonRaw []byte

func (j jsonRaw) MarshalJSON() ([]byte, error) { return j, nil }
