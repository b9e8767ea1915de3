package portal

import (
	"net/http"
	"net/url"
	"regexp"

	"github.com/go-chi/chi/v5"
	"github.com/shopspring/decimal"
)

// apiView is what the catalog pages show of an API (the REST API's JSON).
type apiView struct {
	ID          string      `json:"id"`
	Name        string      `json:"name"`
	Slug        string      `json:"slug"`
	Description string      `json:"description"`
	Version     string      `json:"version"`
	DocsURL     string      `json:"docs_url"`
	State       string      `json:"state"`
	GatewayPath string      `json:"gateway_path"`
	Routes      []routeView `json:"routes"`
}

type routeView struct {
	Methods []string `json:"methods"`
	Path    string   `json:"path"`
}

// planView is what the catalog pages show of a plan.
type planView struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Slug        string `json:"slug"`
	Description string `json:"description"`
	Status      string `json:"status"`
	Current     struct {
		Version int `json:"version"`
		Terms   struct {
			Type          string          `json:"type"`
			Currency      string          `json:"currency"`
			Interval      string          `json:"interval"`
			BaseFee       decimal.Decimal `json:"base_fee"`
			TrialDays     int             `json:"trial_days"`
			QuotaRequests *int64          `json:"quota_requests"`
			QuotaHard     bool            `json:"quota_hard"`
		} `json:"terms"`
	} `json:"current_version"`
}

func (p *portal) catalogRoutes(r chi.Router) {
	r.Get("/catalog", p.catalog)
	r.Get("/catalog/{id}", p.apiPage)
}

type catalogPage struct {
	Query string
	APIs  []apiView
	Next  string
}

// cursorPattern is what a list cursor may look like in a link.
var cursorPattern = regexp.MustCompile(`^[A-Za-z0-9_=-]{1,200}$`)

func (p *portal) catalog(w http.ResponseWriter, r *http.Request) {
	q := url.Values{"limit": {"50"}}
	search := r.URL.Query().Get("q")
	if search != "" {
		q.Set("q", search)
	}
	if c := r.URL.Query().Get("cursor"); cursorPattern.MatchString(c) {
		q.Set("cursor", c)
	}
	var list page[apiView]
	if err := p.api.get(r, "/v1/apis", q, &list); err != nil {
		p.failAPI(w, r, err)
		return
	}
	p.render(w, r, http.StatusOK, "catalog", view{Title: "Catalog", Nav: "catalog",
		Data: catalogPage{Query: search, APIs: list.Data, Next: list.NextCursor}})
}

type apiPage struct {
	API   apiView
	Plans []planView
	// SentPlan and PromotionCode are what a refused subscribe form sent.
	SentPlan, PromotionCode string
}

// uuidPattern is the form of the ids in the pages' paths.
var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func (p *portal) apiPage(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such API.")
		return
	}
	p.renderAPI(w, r, id, nil)
}

// renderAPI renders API id's page, with the problem of a subscribe form
// that was refused.
func (p *portal) renderAPI(w http.ResponseWriter, r *http.Request, id string, pr *Problem) {
	var out apiPage
	if err := p.api.get(r, "/v1/apis/"+id, nil, &out.API); err != nil {
		p.failAPI(w, r, err)
		return
	}
	var plans page[planView]
	if err := p.api.get(r, "/v1/apis/"+id+"/plans", url.Values{"limit": {"100"}}, &plans); err != nil {
		p.failAPI(w, r, err)
		return
	}
	for _, pl := range plans.Data {
		if pl.Status == "active" {
			out.Plans = append(out.Plans, pl)
		}
	}
	status := http.StatusOK
	if pr != nil {
		status = pr.Status
		out.SentPlan, out.PromotionCode = r.PostFormValue("plan_id"), r.PostFormValue("promotion_code")
	}
	p.render(w, r, status, "api", view{Title: out.API.Name, Nav: "catalog", Data: out, Problem: pr})
}
