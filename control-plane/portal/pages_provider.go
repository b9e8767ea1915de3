package portal

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// providerRoutes are the providers' pages, under /provider: their APIs
// (registration, edits, review), plans, meters, subscribers, promotions
// and analytics. Everything goes through the REST API as the signed-in
// provider, so the API's own checks decide what another organization's
// ids show (its 404 or 403).
func (p *portal) providerRoutes(r chi.Router) {
	r.Get("/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/provider/apis", http.StatusSeeOther)
	})
	r.Get("/apis", p.providerAPIs)
	r.Post("/apis", p.registerAPI)
	r.Get("/apis/{id}", p.providerAPIPage)
	r.Post("/apis/{id}", p.editAPI)
	r.Post("/apis/{id}/submit", p.submitAPI)
	r.Post("/apis/{id}/comments", p.commentAPI)
	r.Post("/apis/{id}/meters", p.createMeter)
	p.providerPlanRoutes(r)
	p.providerSubscriberRoutes(r)
	p.providerPromotionRoutes(r)
	p.providerAnalyticsRoutes(r)
}

// ownAPI is an API as its provider reads it: with its upstream and state.
type ownAPI struct {
	ID              string      `json:"id"`
	OrganizationID  string      `json:"organization_id"`
	Name            string      `json:"name"`
	Slug            string      `json:"slug"`
	Description     string      `json:"description"`
	UpstreamURL     string      `json:"upstream_url"`
	Version         string      `json:"version"`
	Routes          []routeView `json:"routes"`
	HealthCheckPath string      `json:"health_check_path"`
	DocsURL         string      `json:"docs_url"`
	Visibility      string      `json:"visibility"`
	State           string      `json:"state"`
	StateReason     string      `json:"state_reason"`
	GatewayPath     string      `json:"gateway_path"`
	CreatedAt       time.Time   `json:"created_at"`
	UpdatedAt       time.Time   `json:"updated_at"`
}

// Editable says whether the API's registration may change: what the
// gateway serves and the catalog shows were reviewed otherwise.
func (a ownAPI) Editable() bool { return a.State == "draft" || a.State == "rejected" }

// Submittable says whether the API may be sent for review.
func (a ownAPI) Submittable() bool { return a.State == "draft" || a.State == "rejected" }

// me is the signed-in user as the API knows them: the organization's id.
type me struct {
	OrganizationID string `json:"organization_id"`
}

// orgID is the signed-in user's organization id.
func (p *portal) orgID(r *http.Request) (string, error) {
	var m me
	if err := p.api.get(r, "/v1/me", nil, &m); err != nil {
		return "", err
	}
	return m.OrganizationID, nil
}

// formProblem is the problem of a form the API refused for what it holds
// (a 4xx other than 401, 403 and 404), to show next to its fields; any
// other failure is the error page's.
func formProblem(err error) (*Problem, bool) {
	pr, ok := asProblem(err)
	if !ok || pr.Status >= 500 || pr.Status == http.StatusUnauthorized || pr.Status == http.StatusForbidden || pr.Status == http.StatusNotFound {
		return nil, false
	}
	return pr, true
}

// invalid is a problem the portal finds in a form before the API sees it.
func invalid(errs ...FieldError) *Problem {
	return &Problem{Status: http.StatusUnprocessableEntity, Title: "Invalid request", Detail: "Correct the fields below.", Errors: errs}
}

// apiForm is what the registration and edit forms hold, as typed.
type apiForm struct {
	Name, Slug, UpstreamURL, Version, Description, DocsURL, Visibility, Routes, HealthCheckPath string
}

func apiFormOf(a ownAPI) apiForm {
	return apiForm{Name: a.Name, Slug: a.Slug, UpstreamURL: a.UpstreamURL, Version: a.Version, Description: a.Description,
		DocsURL: a.DocsURL, Visibility: a.Visibility, Routes: routesText(a.Routes), HealthCheckPath: a.HealthCheckPath}
}

func apiFormFrom(r *http.Request) apiForm {
	f := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	return apiForm{Name: f("name"), Slug: f("slug"), UpstreamURL: f("upstream_url"), Version: f("version"), Description: f("description"),
		DocsURL: f("docs_url"), Visibility: f("visibility"), Routes: r.PostFormValue("routes"), HealthCheckPath: f("health_check_path")}
}

// routesText is routes as the form's textarea shows them: one
// "GET,POST /path" a line.
func routesText(routes []routeView) string {
	var b strings.Builder
	for _, rt := range routes {
		b.WriteString(strings.Join(rt.Methods, ","))
		b.WriteString(" ")
		b.WriteString(rt.Path)
		b.WriteString("\n")
	}
	return b.String()
}

// parseRoutes reads the textarea's lines ("GET /forecast", "GET,POST
// /items/{id}", "GET POST /x"): the last word is the path, the others the
// methods; blank lines are skipped. A line that is no route is sent as
// typed, for the API to say what is wrong with it; lines maps each
// route's index to its line number, for the API's errors.
func parseRoutes(text string) (routes []routeView, lines []int) {
	routes = []routeView{}
	for i, line := range strings.Split(text, "\n") {
		fields := strings.Fields(strings.ReplaceAll(line, ",", " "))
		if len(fields) == 0 {
			continue
		}
		methods := []string{}
		for _, m := range fields[:len(fields)-1] {
			methods = append(methods, strings.ToUpper(m))
		}
		routes = append(routes, routeView{Methods: methods, Path: fields[len(fields)-1]})
		lines = append(lines, i+1)
	}
	return routes, lines
}

// routeLines names the textarea's line in the API's errors about
// routes[i]: the field stays routes, the detail says which line.
func routeLines(pr *Problem, lines []int) {
	for i, e := range pr.Errors {
		var n int
		if _, err := fmt.Sscanf(e.Field, "routes[%d]", &n); err == nil && n >= 0 && n < len(lines) {
			pr.Errors[i].Detail = fmt.Sprintf("line %d: %s", lines[n], e.Detail)
		}
	}
}

type providerAPIsPage struct {
	APIs []ownAPI
	Form apiForm
	Idem string
}

func (p *portal) providerAPIs(w http.ResponseWriter, r *http.Request) {
	p.showProviderAPIs(w, r, http.StatusOK, apiForm{Visibility: "public", Version: "1"}, nil)
}

func (p *portal) showProviderAPIs(w http.ResponseWriter, r *http.Request, status int, form apiForm, pr *Problem) {
	apis, err := p.ownAPIs(r)
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	p.render(w, r, status, "provider_apis", view{Title: "Your APIs", Nav: "apis", Problem: pr,
		Data: providerAPIsPage{APIs: apis, Form: form, Idem: formKey()}})
}

// ownAPIs lists the signed-in provider's organization's APIs (the API's
// list also holds other providers' public ones, left out here).
func (p *portal) ownAPIs(r *http.Request) ([]ownAPI, error) {
	org, err := p.orgID(r)
	if err != nil {
		return nil, err
	}
	var out []ownAPI
	q := url.Values{"limit": {"200"}}
	for range 10 {
		var list page[ownAPI]
		if err := p.api.get(r, "/v1/apis", q, &list); err != nil {
			return nil, err
		}
		for _, a := range list.Data {
			if a.OrganizationID == org {
				out = append(out, a)
			}
		}
		if list.NextCursor == "" {
			break
		}
		q.Set("cursor", list.NextCursor)
	}
	return out, nil
}

func (p *portal) registerAPI(w http.ResponseWriter, r *http.Request) {
	form := apiFormFrom(r)
	routes, lines := parseRoutes(form.Routes)
	in := map[string]any{"name": form.Name, "slug": form.Slug, "upstream_url": form.UpstreamURL, "version": form.Version,
		"description": form.Description, "docs_url": form.DocsURL, "visibility": form.Visibility, "routes": routes,
		"health_check_path": form.HealthCheckPath}
	var out ownAPI
	if err := p.api.post(r, "/v1/apis", idemOf(r), in, &out); err != nil {
		pr, ok := formProblem(err)
		if !ok {
			p.failAPI(w, r, err)
			return
		}
		routeLines(pr, lines)
		p.showProviderAPIs(w, r, pr.Status, form, pr)
		return
	}
	http.Redirect(w, r, "/provider/apis/"+out.ID, http.StatusSeeOther)
}

// approvalView is an approval request of an API with its history, as the
// admins' pages read it.
type approvalView = adminApproval

type transitionView struct {
	From      string    `json:"from"`
	To        string    `json:"to"`
	Actor     string    `json:"actor"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
}

// meterView is a meter of an API.
type meterView struct {
	ID          string `json:"id"`
	Slug        string `json:"slug"`
	Name        string `json:"name"`
	Aggregation string `json:"aggregation"`
	Field       string `json:"field"`
}

// providerPlan is a plan as its provider reads it.
type providerPlan struct {
	ID          string          `json:"id"`
	APIID       string          `json:"api_id"`
	Name        string          `json:"name"`
	Slug        string          `json:"slug"`
	Description string          `json:"description"`
	Status      string          `json:"status"`
	Current     planVersionView `json:"current_version"`
	SourceFile  *string         `json:"source_file"`
	CreatedAt   time.Time       `json:"created_at"`
}

// FromFile says whether a plan file manages the plan: read-only here.
func (pl providerPlan) FromFile() bool { return pl.SourceFile != nil || pl.Current.Source == "file" }

type providerAPIPage struct {
	API         ownAPI
	Form        apiForm
	Approval    *approvalView
	Earlier     []approvalView
	Transitions []transitionView
	Meters      []meterView
	Plans       []providerPlan
	// Sent is which form a problem belongs to: edit, submit, comment or
	// meter.
	Sent        string
	Comment     string
	MeterForm   meterView
	SubmitNote  string
	SubmitPrio  string
	Aggregation []string
	Priorities  []string
	Problem     *Problem
}

// Err is the API's detail for field of form (edit, submit, comment or
// meter), when that form was the one sent: the forms share field names.
func (pg providerAPIPage) Err(form, field string) string {
	if pg.Sent != form {
		return ""
	}
	return view{Problem: pg.Problem}.FieldError(field)
}

func (p *portal) providerAPIPage(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such API.")
		return
	}
	p.showProviderAPI(w, r, id, http.StatusOK, "", nil)
}

// showProviderAPI renders API id's page, with the problem of the form
// sent (edit, submit, comment or meter) and what it held.
func (p *portal) showProviderAPI(w http.ResponseWriter, r *http.Request, id string, status int, sent string, pr *Problem) {
	out := providerAPIPage{Sent: sent, Problem: pr, SubmitPrio: "normal", Priorities: []string{"low", "normal", "high", "urgent"}, Aggregation: []string{"count", "sum", "unique_count", "max"}}
	if err := p.api.get(r, "/v1/apis/"+id, nil, &out.API); err != nil {
		p.failAPI(w, r, err)
		return
	}
	// Another organization's public API reads, but it is not this
	// provider's to manage: the API refuses its transitions the same way.
	var tr page[transitionView]
	if err := p.api.get(r, "/v1/apis/"+id+"/transitions", nil, &tr); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Transitions = tr.Data
	slices.Reverse(out.Transitions)
	out.Form = apiFormOf(out.API)
	var meters page[meterView]
	if err := p.api.get(r, "/v1/apis/"+id+"/meters", nil, &meters); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Meters = meters.Data
	var plans page[providerPlan]
	if err := p.api.get(r, "/v1/apis/"+id+"/plans", url.Values{"limit": {"100"}}, &plans); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Plans = plans.Data
	approvals, err := p.approvalsOf(r, id)
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	if len(approvals) > 0 {
		out.Approval, out.Earlier = &approvals[0], approvals[1:]
	}
	if pr != nil {
		switch sent {
		case "edit":
			out.Form = apiFormFrom(r)
		case "comment":
			out.Comment = r.PostFormValue("comment")
		case "submit":
			out.SubmitNote, out.SubmitPrio = r.PostFormValue("note"), r.PostFormValue("priority")
		case "meter":
			out.MeterForm = meterView{Slug: r.PostFormValue("slug"), Name: r.PostFormValue("name"),
				Aggregation: r.PostFormValue("aggregation"), Field: r.PostFormValue("field")}
		}
	}
	p.render(w, r, status, "provider_api", view{Title: out.API.Name, Nav: "apis", Data: out, Problem: pr})
}

// maxApprovals bounds the approval requests an API's page reads.
const maxApprovals = 5

// approvalsOf reads API id's approval requests, newest first. The REST API
// lists requests for admins only; an organization finds its own in its
// audit log (each submission is audited with the request as it opened).
func (p *portal) approvalsOf(r *http.Request, apiID string) ([]approvalView, error) {
	var entries page[struct {
		TargetID string          `json:"target_id"`
		After    json.RawMessage `json:"after"`
	}]
	q := url.Values{"target_type": {"approval"}, "action": {"approval.submit"}, "limit": {"200"}}
	if err := p.api.get(r, "/v1/audit", q, &entries); err != nil {
		return nil, err
	}
	var out []approvalView
	for _, e := range entries.Data {
		var after struct {
			APIID string `json:"api_id"`
		}
		if json.Unmarshal(e.After, &after) != nil || after.APIID != apiID || !uuidPattern.MatchString(e.TargetID) {
			continue
		}
		var a approvalView
		if err := p.api.get(r, "/v1/approvals/"+e.TargetID, nil, &a); err != nil {
			return nil, err
		}
		out = append(out, a)
		if len(out) == maxApprovals {
			break
		}
	}
	return out, nil
}

// editAPI changes what the form changed of the API.
func (p *portal) editAPI(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such API.")
		return
	}
	var before ownAPI
	if err := p.api.get(r, "/v1/apis/"+id, nil, &before); err != nil {
		p.failAPI(w, r, err)
		return
	}
	form := apiFormFrom(r)
	routes, lines := parseRoutes(form.Routes)
	// Only what changed is sent: the API refuses any change of a reviewed
	// API's gateway fields, even to the value they have.
	in := map[string]any{}
	for k, v := range map[string][2]string{
		"name": {form.Name, before.Name}, "slug": {form.Slug, before.Slug}, "upstream_url": {form.UpstreamURL, before.UpstreamURL},
		"description": {form.Description, before.Description}, "docs_url": {form.DocsURL, before.DocsURL},
		"visibility": {form.Visibility, before.Visibility}, "health_check_path": {form.HealthCheckPath, before.HealthCheckPath},
	} {
		if v[0] != v[1] {
			in[k] = v[0]
		}
	}
	if !reflect.DeepEqual(routes, nonNilRoutes(before.Routes)) {
		in["routes"] = routes
	}
	if len(in) > 0 {
		if err := p.api.patch(r, "/v1/apis/"+id, in, nil); err != nil {
			pr, ok := formProblem(err)
			if !ok {
				p.failAPI(w, r, err)
				return
			}
			routeLines(pr, lines)
			p.showProviderAPI(w, r, id, pr.Status, "edit", pr)
			return
		}
	}
	http.Redirect(w, r, "/provider/apis/"+id, http.StatusSeeOther)
}

func nonNilRoutes(r []routeView) []routeView {
	if r == nil {
		return []routeView{}
	}
	return r
}

// submitAPI sends the API for review.
func (p *portal) submitAPI(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such API.")
		return
	}
	in := map[string]any{"priority": r.PostFormValue("priority"), "note": strings.TrimSpace(r.PostFormValue("note"))}
	if err := p.api.post(r, "/v1/apis/"+id+"/submit", idemOf(r), in, nil); err != nil {
		pr, ok := formProblem(err)
		if !ok {
			p.failAPI(w, r, err)
			return
		}
		p.showProviderAPI(w, r, id, pr.Status, "submit", pr)
		return
	}
	http.Redirect(w, r, "/provider/apis/"+id+"#approval", http.StatusSeeOther)
}

// commentAPI comments on the API's approval request.
func (p *portal) commentAPI(w http.ResponseWriter, r *http.Request) {
	id, approval := pathID(r), r.PostFormValue("approval_id")
	if id == "" || !uuidPattern.MatchString(approval) {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such approval request.")
		return
	}
	in := map[string]any{"comment": r.PostFormValue("comment")}
	if err := p.api.post(r, "/v1/approvals/"+approval+"/comments", idemOf(r), in, nil); err != nil {
		pr, ok := formProblem(err)
		if !ok {
			p.failAPI(w, r, err)
			return
		}
		p.showProviderAPI(w, r, id, pr.Status, "comment", pr)
		return
	}
	http.Redirect(w, r, "/provider/apis/"+id+"#approval", http.StatusSeeOther)
}

// createMeter adds a meter to the API, for its plans' charges.
func (p *portal) createMeter(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such API.")
		return
	}
	in := map[string]any{"slug": strings.TrimSpace(r.PostFormValue("slug")), "name": strings.TrimSpace(r.PostFormValue("name")),
		"aggregation": r.PostFormValue("aggregation")}
	if f := strings.TrimSpace(r.PostFormValue("field")); f != "" {
		in["field"] = f
	}
	if err := p.api.post(r, "/v1/apis/"+id+"/meters", idemOf(r), in, nil); err != nil {
		pr, ok := formProblem(err)
		if !ok {
			p.failAPI(w, r, err)
			return
		}
		p.showProviderAPI(w, r, id, pr.Status, "meter", pr)
		return
	}
	http.Redirect(w, r, "/provider/apis/"+id+"#meters", http.StatusSeeOther)
}
