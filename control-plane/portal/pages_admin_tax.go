package portal

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/shopspring/decimal"
)

// adminTaxRule is an issuer's tax rule as the API answers it.
type adminTaxRule struct {
	ID             string          `json:"id"`
	Country        string          `json:"country"`
	Region         string          `json:"region"`
	Name           string          `json:"name"`
	RatePercent    decimal.Decimal `json:"rate_percent"`
	Inclusive      bool            `json:"inclusive"`
	ReverseCharge  bool            `json:"reverse_charge"`
	EffectiveFrom  time.Time       `json:"effective_from"`
	EffectiveUntil *time.Time      `json:"effective_until"`
	CreatedBy      string          `json:"created_by"`
	CreatedAt      time.Time       `json:"created_at"`

	// Ended: the rule no longer applies (until is past).
	Ended bool `json:"-"`
}

// adminSettings are an issuer's billing settings.
type adminSettings struct {
	InvoicePrefix      string          `json:"invoice_prefix"`
	PlatformFeePercent decimal.Decimal `json:"platform_fee_percent"`
	UpdatedAt          *time.Time      `json:"updated_at"`
}

// adminIssuer is an organization that offers APIs, named by its APIs
// (the API has no list of organizations).
type adminIssuer struct {
	ID   string
	APIs []string
}

// Label names the issuer in the organization picker.
func (i adminIssuer) Label() string {
	names := i.APIs
	if len(names) > 3 {
		names = append(slices.Clone(names[:3]), "…")
	}
	return strings.Join(names, ", ") + " (" + i.ID[:8] + ")"
}

// adminTaxForm is the tax rule form's values: a rule's to supersede, or
// what a refused form sent.
type adminTaxForm struct {
	Country, Region, Name, Rate, From, Until string
	Inclusive, ReverseCharge                 bool
	// Supersedes is the rule being changed, if any.
	Supersedes *adminTaxRule
}

type adminTaxPage struct {
	Issuers []adminIssuer
	// Org is the selected issuer ("" before one is picked).
	Org      string
	Settings adminSettings
	Rules    []adminTaxRule
	Form     adminTaxForm
	// Fee is the platform fee form's value.
	Fee  string
	Idem string
}

// issuers lists the organizations that own APIs, from the catalog (every
// API, in every state, as an admin sees it).
func (p *portal) issuers(r *http.Request) ([]adminIssuer, error) {
	byID := map[string]*adminIssuer{}
	var order []string
	q := url.Values{"limit": {"200"}}
	for range 10 {
		var list page[adminAPI]
		if err := p.api.get(r, "/v1/apis", q, &list); err != nil {
			return nil, err
		}
		for _, a := range list.Data {
			is, ok := byID[a.OrganizationID]
			if !ok {
				is = &adminIssuer{ID: a.OrganizationID}
				byID[a.OrganizationID] = is
				order = append(order, a.OrganizationID)
			}
			is.APIs = append(is.APIs, a.Name)
		}
		if list.NextCursor == "" {
			break
		}
		q.Set("cursor", list.NextCursor)
	}
	out := make([]adminIssuer, 0, len(order))
	for _, id := range order {
		if len(id) >= 8 {
			out = append(out, *byID[id])
		}
	}
	slices.SortFunc(out, func(a, b adminIssuer) int { return strings.Compare(a.Label(), b.Label()) })
	return out, nil
}

func (p *portal) adminTax(w http.ResponseWriter, r *http.Request) {
	org := r.URL.Query().Get("org")
	if org != "" && !uuidPattern.MatchString(org) {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such organization.")
		return
	}
	p.showTax(w, r, org, http.StatusOK, nil, nil)
}

// showTax renders the tax page of issuer org ("" to pick one), with the
// values and problem of a form that was refused.
func (p *portal) showTax(w http.ResponseWriter, r *http.Request, org string, status int, sent *adminTaxForm, pr *Problem) {
	out := adminTaxPage{Org: org, Idem: formKey(), Form: adminTaxForm{ReverseCharge: true}}
	var err error
	if out.Issuers, err = p.issuers(r); err != nil {
		p.failAPI(w, r, err)
		return
	}
	if org != "" {
		if err := p.api.get(r, "/v1/organizations/"+org+"/billing-settings", nil, &out.Settings); err != nil {
			p.failAPI(w, r, err)
			return
		}
		var rules page[adminTaxRule]
		if err := p.api.get(r, "/v1/organizations/"+org+"/tax-rules", nil, &rules); err != nil {
			p.failAPI(w, r, err)
			return
		}
		now := time.Now()
		for _, rule := range rules.Data {
			rule.Ended = rule.EffectiveUntil != nil && !rule.EffectiveUntil.After(now)
			out.Rules = append(out.Rules, rule)
			if rule.ID == r.URL.Query().Get("edit") && !rule.Ended {
				out.Form = adminTaxForm{Country: rule.Country, Region: rule.Region, Name: rule.Name, Rate: rule.RatePercent.String(),
					Inclusive: rule.Inclusive, ReverseCharge: rule.ReverseCharge, Supersedes: &rule}
			}
		}
		out.Fee = out.Settings.PlatformFeePercent.String()
	}
	if sent != nil {
		out.Form = *sent
	}
	if pr != nil && r.PostForm.Has("platform_fee_percent") {
		out.Fee = r.PostFormValue("platform_fee_percent")
	}
	p.render(w, r, status, "admin_tax", view{Title: "Tax and fees", Nav: "tax", Data: out, Problem: pr})
}

// adminDate reads a form's date (YYYY-MM-DD, midnight UTC); "" is nil.
func adminDate(s string) (*time.Time, bool) {
	if s = strings.TrimSpace(s); s == "" {
		return nil, true
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return nil, false
	}
	return &t, true
}

// adminCreateTaxRule adds a rule to an issuer. Changing a rule is adding
// one for the same country and region from a later date: it supersedes
// the earlier rule from then on, and invoices already taxed keep theirs.
func (p *portal) adminCreateTaxRule(w http.ResponseWriter, r *http.Request) {
	org := pathID(r)
	if org == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such organization.")
		return
	}
	f := adminTaxForm{
		Country: strings.TrimSpace(r.PostFormValue("country")), Region: strings.TrimSpace(r.PostFormValue("region")),
		Name: strings.TrimSpace(r.PostFormValue("name")), Rate: strings.TrimSpace(r.PostFormValue("rate_percent")),
		From: r.PostFormValue("effective_from"), Until: r.PostFormValue("effective_until"),
		Inclusive: r.PostFormValue("inclusive") == "1", ReverseCharge: r.PostFormValue("reverse_charge") == "1",
	}
	in := map[string]any{"country": f.Country, "region": f.Region, "name": f.Name, "inclusive": f.Inclusive, "reverse_charge": f.ReverseCharge}
	rate, err := decimal.NewFromString(f.Rate)
	if err != nil {
		p.showTax(w, r, org, http.StatusUnprocessableEntity, &f, adminInvalid("rate_percent", "must be a number such as 19 or 7.5"))
		return
	}
	in["rate_percent"] = rate.String()
	from, ok := adminDate(f.From)
	if !ok {
		p.showTax(w, r, org, http.StatusUnprocessableEntity, &f, adminInvalid("effective_from", "must be a date (YYYY-MM-DD)"))
		return
	}
	until, ok := adminDate(f.Until)
	if !ok {
		p.showTax(w, r, org, http.StatusUnprocessableEntity, &f, adminInvalid("effective_until", "must be a date (YYYY-MM-DD)"))
		return
	}
	if from != nil {
		in["effective_from"] = from
	}
	if until != nil {
		in["effective_until"] = until
	}
	if err := p.api.post(r, "/v1/organizations/"+org+"/tax-rules", idemOf(r), in, nil); err != nil {
		if pr, ok := adminFormProblem(err); ok {
			p.showTax(w, r, org, pr.Status, &f, pr)
			return
		}
		p.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/admin/tax?org="+org+"#rules", http.StatusSeeOther)
}

// adminDeleteTaxRule deletes a rule, or ends it now when an invoice may
// have used it (the API decides).
func (p *portal) adminDeleteTaxRule(w http.ResponseWriter, r *http.Request) {
	org, rule := pathID(r), chi.URLParam(r, "rule")
	if org == "" || !uuidPattern.MatchString(rule) {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such tax rule.")
		return
	}
	if err := p.api.delete(r, "/v1/organizations/"+org+"/tax-rules/"+rule); err != nil {
		if pr, ok := adminFormProblem(err); ok {
			p.showTax(w, r, org, pr.Status, nil, pr)
			return
		}
		p.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/admin/tax?org="+org+"#rules", http.StatusSeeOther)
}

// adminPlatformFee sets an issuer's platform fee.
func (p *portal) adminPlatformFee(w http.ResponseWriter, r *http.Request) {
	org := pathID(r)
	if org == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such organization.")
		return
	}
	fee, err := decimal.NewFromString(strings.TrimSpace(r.PostFormValue("platform_fee_percent")))
	if err != nil {
		p.showTax(w, r, org, http.StatusUnprocessableEntity, nil, adminInvalid("platform_fee_percent", "must be a number from 0 to 100"))
		return
	}
	if err := p.api.put(r, "/v1/admin/organizations/"+org+"/billing-settings", map[string]any{"platform_fee_percent": fee.String()}, nil); err != nil {
		if pr, ok := adminFormProblem(err); ok {
			p.showTax(w, r, org, pr.Status, nil, pr)
			return
		}
		p.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/admin/tax?org="+org+"#fee", http.StatusSeeOther)
}
