package portal

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// adminApproval is an approval request as the API answers it.
type adminApproval struct {
	ID              string               `json:"id"`
	APIID           string               `json:"api_id"`
	APIName         string               `json:"api_name"`
	OrganizationID  string               `json:"organization_id"`
	Status          string               `json:"status"`
	Priority        string               `json:"priority"`
	EscalationLevel int                  `json:"escalation_level"`
	SubmittedBy     string               `json:"submitted_by"`
	DueAt           time.Time            `json:"due_at"`
	Overdue         bool                 `json:"overdue"`
	DecidedBy       *string              `json:"decided_by"`
	DecidedAt       *time.Time           `json:"decided_at"`
	DecisionReason  string               `json:"decision_reason"`
	CreatedAt       time.Time            `json:"created_at"`
	History         []adminApprovalEvent `json:"history"`

	// Clock is the SLA clock as the page shows it (adminClock).
	Clock string `json:"-"`
}

type adminApprovalEvent struct {
	Action    string    `json:"action"`
	Actor     string    `json:"actor"`
	Comment   string    `json:"comment"`
	CreatedAt time.Time `json:"created_at"`
}

// Open says whether the request waits for a decision.
func (a adminApproval) Open() bool { return a.Status == "pending" || a.Status == "escalated" }

// adminClock is a request's SLA clock at now: the time left before it is
// due, how long it is overdue (the API's overdue flag decides), or for a
// decided request whether the decision came in time.
func adminClock(a adminApproval, now time.Time) string {
	switch {
	case a.DecidedAt != nil && a.DecidedAt.After(a.DueAt):
		return "decided " + adminDuration(a.DecidedAt.Sub(a.DueAt)) + " after due"
	case a.DecidedAt != nil:
		return "decided within the SLA"
	case !a.Open():
		return ""
	case a.Overdue:
		return "overdue by " + adminDuration(now.Sub(a.DueAt))
	default:
		return adminDuration(a.DueAt.Sub(now)) + " left"
	}
}

// adminApprovalStats are the queue's statistics.
type adminApprovalStats struct {
	OpenByPriority        map[string]int `json:"open_by_priority"`
	ByStatus              map[string]int `json:"by_status"`
	Overdue               int            `json:"overdue"`
	MedianDecisionSeconds *float64       `json:"median_decision_seconds"`
	DecidedAfterDue       int            `json:"decided_after_due"`
	SLABreaches           int            `json:"sla_breaches"`
}

// MedianDecision is the median time to a decision, or "".
func (s adminApprovalStats) MedianDecision() string {
	if s.MedianDecisionSeconds == nil {
		return ""
	}
	return adminDuration(time.Duration(*s.MedianDecisionSeconds * float64(time.Second)))
}

// adminCount is one labelled number of the statistics, in a fixed order.
type adminCount struct {
	Label string
	N     int
}

// Priorities are the open requests by priority, most urgent first.
func (s adminApprovalStats) Priorities() []adminCount {
	out := []adminCount{}
	for _, p := range slices.Backward(adminPriorities) {
		out = append(out, adminCount{p, s.OpenByPriority[p]})
	}
	return out
}

// Statuses are the requests by status.
func (s adminApprovalStats) Statuses() []adminCount {
	out := []adminCount{}
	for _, st := range adminStatuses {
		out = append(out, adminCount{strings.ReplaceAll(st, "_", " "), s.ByStatus[st]})
	}
	return out
}

var (
	// adminStatuses and adminPriorities are the API's (lowest priority
	// first).
	adminStatuses   = []string{"pending", "escalated", "approved", "rejected", "changes_requested", "expired"}
	adminPriorities = []string{"low", "normal", "high", "urgent"}
	// adminDecisions are the decisions a form may ask for.
	adminDecisions = []string{"approve", "reject", "request_changes", "escalate"}
)

// adminQueueFilter is the queue page's filter: status "" is the open
// requests (pending and escalated), "all" every one.
type adminQueueFilter struct {
	Status, Priority, Cursor string
	Overdue                  bool
}

func adminQueueFilterOf(q url.Values) adminQueueFilter {
	f := adminQueueFilter{Overdue: q.Get("overdue") == "1"}
	if s := q.Get("status"); s == "all" || slices.Contains(adminStatuses, s) {
		f.Status = s
	}
	if pr := q.Get("priority"); slices.Contains(adminPriorities, pr) {
		f.Priority = pr
	}
	if c := q.Get("cursor"); cursorPattern.MatchString(c) {
		f.Cursor = c
	}
	return f
}

// query is the filter as a query string (without the cursor).
func (f adminQueueFilter) query() url.Values {
	q := url.Values{}
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	if f.Priority != "" {
		q.Set("priority", f.Priority)
	}
	if f.Overdue {
		q.Set("overdue", "1")
	}
	return q
}

type adminQueuePage struct {
	Filter     adminQueueFilter
	Statuses   []string
	Priorities []string
	Decisions  []string
	Items      []adminApproval
	Next       string
	// More: the open view shows its first 200 of a status only.
	More  bool
	Stats *adminApprovalStats
	// Results are a bulk decision's, item by item.
	Results []adminBulkResult
	// Sent is what a refused bulk form sent.
	SentAction, SentReason string
	SentIDs                []string
	Idem                   string
}

// NextHref links the next page of the list, or is "".
func (q adminQueuePage) NextHref() string {
	if q.Next == "" {
		return ""
	}
	v := q.Filter.query()
	v.Set("cursor", q.Next)
	return "/admin/approvals?" + v.Encode()
}

// Picked says whether a refused bulk form had id selected.
func (q adminQueuePage) Picked(id string) bool { return slices.Contains(q.SentIDs, id) }

// loadQueue reads the queue page's requests and statistics.
func (p *portal) loadQueue(r *http.Request, f adminQueueFilter) (adminQueuePage, error) {
	out := adminQueuePage{Filter: f, Statuses: adminStatuses, Priorities: adminPriorities, Decisions: adminDecisions, Idem: formKey()}
	base := url.Values{"limit": {"100"}}
	if f.Priority != "" {
		base.Set("priority", f.Priority)
	}
	if f.Overdue {
		base.Set("overdue", "true")
	}
	if f.Status == "" {
		// The open requests, most urgent (soonest due) first.
		base.Set("limit", "200")
		for _, st := range []string{"pending", "escalated"} {
			q := maps.Clone(base)
			q.Set("status", st)
			var list page[adminApproval]
			if err := p.api.get(r, "/v1/admin/approvals", q, &list); err != nil {
				return out, err
			}
			out.Items = append(out.Items, list.Data...)
			out.More = out.More || list.NextCursor != ""
		}
		slices.SortStableFunc(out.Items, func(a, b adminApproval) int { return a.DueAt.Compare(b.DueAt) })
	} else {
		q := maps.Clone(base)
		if f.Status != "all" {
			q.Set("status", f.Status)
		}
		if f.Cursor != "" {
			q.Set("cursor", f.Cursor)
		}
		var list page[adminApproval]
		if err := p.api.get(r, "/v1/admin/approvals", q, &list); err != nil {
			return out, err
		}
		out.Items, out.Next = list.Data, list.NextCursor
	}
	now := time.Now()
	for i := range out.Items {
		out.Items[i].Clock = adminClock(out.Items[i], now)
	}
	var st adminApprovalStats
	if err := p.api.get(r, "/v1/admin/approvals/stats", nil, &st); err != nil {
		return out, err
	}
	out.Stats = &st
	return out, nil
}

func (p *portal) adminApprovals(w http.ResponseWriter, r *http.Request) {
	out, err := p.loadQueue(r, adminQueueFilterOf(r.URL.Query()))
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	p.render(w, r, http.StatusOK, "admin_approvals", view{Title: "Approval queue", Nav: "approvals", Data: out})
}

// adminBulkResult is one request's outcome of a bulk decision.
type adminBulkResult struct {
	ID       string          `json:"id"`
	Status   int             `json:"status"`
	Approval *adminApproval  `json:"approval"`
	Problem  json.RawMessage `json:"problem"`

	Name   string   `json:"-"`
	Failed *Problem `json:"-"`
}

// adminBulkDecide applies one decision, with one reason, to the selected
// requests through the API's bulk route, then shows the queue with each
// request's outcome.
func (p *portal) adminBulkDecide(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	ids := r.PostForm["ids"]
	action, reason := r.PostFormValue("action"), strings.TrimSpace(r.PostFormValue("reason"))
	f := adminQueueFilterOf(r.PostForm)
	var pr *Problem
	var res struct {
		Results []adminBulkResult `json:"results"`
	}
	switch {
	case len(ids) == 0:
		pr = adminInvalid("ids", "select at least one request")
	case !slices.Contains(adminDecisions, action):
		pr = adminInvalid("action", "choose approve, reject, request changes or escalate")
	default:
		in := map[string]any{"ids": ids, "action": action, "reason": reason}
		if err := p.api.post(r, "/v1/admin/approvals/bulk", idemOf(r), in, &res); err != nil {
			var ok bool
			if pr, ok = adminFormProblem(err); !ok {
				p.failAPI(w, r, err)
				return
			}
		}
	}
	out, err := p.loadQueue(r, f)
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	status := http.StatusOK
	if pr != nil {
		status = pr.Status
		out.SentAction, out.SentReason, out.SentIDs = action, reason, ids
	}
	names := map[string]string{}
	for _, a := range out.Items {
		names[a.ID] = a.APIName
	}
	for i, x := range res.Results {
		switch {
		case x.Approval != nil:
			x.Name = x.Approval.APIName
		case names[x.ID] != "":
			x.Name = names[x.ID]
		default:
			var a adminApproval
			if p.api.get(r, "/v1/admin/approvals/"+x.ID, nil, &a) == nil {
				x.Name = a.APIName
			}
		}
		if x.Status/100 != 2 {
			x.Failed = &Problem{Status: x.Status}
			if json.Unmarshal(x.Problem, x.Failed) != nil || x.Failed.Title == "" {
				x.Failed.Title = http.StatusText(x.Status)
			}
		}
		res.Results[i] = x
	}
	out.Results = res.Results
	p.render(w, r, status, "admin_approvals", view{Title: "Approval queue", Nav: "approvals", Data: out, Problem: pr})
}

// adminAPI is what the approval page shows of the API under review.
type adminAPI struct {
	apiView
	OrganizationID  string `json:"organization_id"`
	UpstreamURL     string `json:"upstream_url"`
	HealthCheckPath string `json:"health_check_path"`
	Visibility      string `json:"visibility"`
	StateReason     string `json:"state_reason"`
	CreatedBy       string `json:"created_by"`
}

type adminTransition struct {
	From      string    `json:"from"`
	To        string    `json:"to"`
	Actor     string    `json:"actor"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
}

type adminApprovalPage struct {
	Approval    adminApproval
	API         adminAPI
	Transitions []adminTransition
	Idem        string
	// SentReason and SentComment are what a refused form sent.
	SentReason, SentComment string
}

func (p *portal) adminApprovalPage(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such approval request.")
		return
	}
	p.showApproval(w, r, id, nil)
}

// showApproval renders approval request id's page, with the problem of a
// form that was refused.
func (p *portal) showApproval(w http.ResponseWriter, r *http.Request, id string, pr *Problem) {
	out := adminApprovalPage{Idem: formKey()}
	if err := p.api.get(r, "/v1/admin/approvals/"+id, nil, &out.Approval); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Approval.Clock = adminClock(out.Approval, time.Now())
	if err := p.api.get(r, "/v1/apis/"+out.Approval.APIID, nil, &out.API); err != nil {
		p.failAPI(w, r, err)
		return
	}
	var tr page[adminTransition]
	if err := p.api.get(r, "/v1/apis/"+out.Approval.APIID+"/transitions", nil, &tr); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Transitions = tr.Data
	status := http.StatusOK
	if pr != nil {
		status = pr.Status
		out.SentReason, out.SentComment = r.PostFormValue("reason"), r.PostFormValue("comment")
	}
	p.render(w, r, status, "admin_approval", view{Title: "Review " + out.Approval.APIName, Nav: "approvals", Data: out, Problem: pr})
}

// adminDecide approves, rejects, requests changes to or escalates a
// request, with the reason given. Approving moves the API to approved;
// its gateway registration runs as a job and makes it active.
func (p *portal) adminDecide(w http.ResponseWriter, r *http.Request) {
	id, action := pathID(r), r.PostFormValue("action")
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such approval request.")
		return
	}
	if !slices.Contains(adminDecisions, action) {
		p.showApproval(w, r, id, adminInvalid("action", "choose approve, reject, request changes or escalate"))
		return
	}
	in := map[string]any{"reason": strings.TrimSpace(r.PostFormValue("reason"))}
	path := "/v1/admin/approvals/" + id + "/" + strings.ReplaceAll(action, "_", "-")
	if err := p.api.post(r, path, idemOf(r), in, nil); err != nil {
		if pr, ok := adminFormProblem(err); ok {
			p.showApproval(w, r, id, pr)
			return
		}
		p.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/admin/approvals/"+id, http.StatusSeeOther)
}

// adminComment adds a comment to a request's history.
func (p *portal) adminComment(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such approval request.")
		return
	}
	in := map[string]any{"comment": strings.TrimSpace(r.PostFormValue("comment"))}
	if err := p.api.post(r, "/v1/admin/approvals/"+id+"/comments", idemOf(r), in, nil); err != nil {
		if pr, ok := adminFormProblem(err); ok {
			p.showApproval(w, r, id, pr)
			return
		}
		p.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/admin/approvals/"+id+"#history", http.StatusSeeOther)
}
