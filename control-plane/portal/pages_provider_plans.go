package portal

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/shopspring/decimal"
)

func (p *portal) providerPlanRoutes(r chi.Router) {
	r.Get("/apis/{id}/plans/new", p.newPlanPage)
	r.Post("/apis/{id}/plans", p.createPlan)
	r.Get("/plans/{id}", p.providerPlanPage)
	r.Post("/plans/{id}", p.editPlan)
	r.Post("/plans/{id}/versions", p.createPlanVersion)
}

// planVersionView is one version of a plan's terms, as the API answers it
// and takes it (its Terms are the body of a new version).
type planVersionView struct {
	ID         string    `json:"id"`
	Version    int       `json:"version"`
	Terms      termsView `json:"terms"`
	Source     string    `json:"source"`
	SourceFile *string   `json:"source_file"`
	CreatedBy  string    `json:"created_by"`
	CreatedAt  time.Time `json:"created_at"`
}

// termsView is a plan version's terms (subscriptions.Terms).
type termsView struct {
	Type          string          `json:"type"`
	Currency      string          `json:"currency"`
	Interval      string          `json:"interval"`
	BaseFee       decimal.Decimal `json:"base_fee"`
	TrialDays     int             `json:"trial_days"`
	QuotaRequests *int64          `json:"quota_requests"`
	QuotaHard     bool            `json:"quota_hard"`
	RatePerSecond *int            `json:"rate_per_second"`
	RatePerMinute *int            `json:"rate_per_minute"`
	IncludedUnits decimal.Decimal `json:"included_units"`
	Charges       []chargeView    `json:"charges"`
}

// chargeView prices one meter (pricing.Charge).
type chargeView struct {
	Meter         string           `json:"meter"`
	Model         string           `json:"model"`
	IncludedUnits decimal.Decimal  `json:"included_units"`
	UnitPrice     *decimal.Decimal `json:"unit_price"`
	PackageSize   *decimal.Decimal `json:"package_size"`
	Tiers         []tierView       `json:"tiers"`
	Quota         *decimal.Decimal `json:"quota"`
	QuotaHard     bool             `json:"quota_hard"`
}

// tierView is one step of a tiered charge (pricing.Tier).
type tierView struct {
	UpTo       *decimal.Decimal `json:"up_to"`
	UnitPrice  decimal.Decimal  `json:"unit_price"`
	FlatAmount decimal.Decimal  `json:"flat_amount"`
}

// The editor's blank rows: at least this many charges and tiers of each
// are offered, one more than the plan has; empty ones are ignored.
const (
	minChargeRows = 2
	minTierRows   = 5
	maxChargeRows = 50
	maxTierRows   = 20
)

// planForm is the plan editor's inputs, as typed.
type planForm struct {
	Name, Slug, Description, Status                     string
	Type, Currency, Interval, BaseFee, TrialDays, Quota string
	QuotaHard                                           bool
	RatePerSecond, RatePerMinute, IncludedUnits         string
	Charges                                             []chargeForm
}

type chargeForm struct {
	Meter, Model, IncludedUnits, UnitPrice, PackageSize, Quota string
	QuotaHard                                                  bool
	Tiers                                                      []tierForm
}

type tierForm struct{ UpTo, UnitPrice, FlatAmount string }

func decString(d *decimal.Decimal) string {
	if d == nil {
		return ""
	}
	return d.String()
}

func intString[T int | int64](n *T) string {
	if n == nil {
		return ""
	}
	return strconv.FormatInt(int64(*n), 10)
}

// termsForm fills the editor from terms (a new version starts from the
// current one).
func termsForm(f *planForm, t termsView) {
	f.Type, f.Currency, f.Interval = t.Type, t.Currency, t.Interval
	f.BaseFee, f.TrialDays, f.Quota, f.QuotaHard = t.BaseFee.String(), strconv.Itoa(t.TrialDays), intString(t.QuotaRequests), t.QuotaHard
	f.RatePerSecond, f.RatePerMinute, f.IncludedUnits = intString(t.RatePerSecond), intString(t.RatePerMinute), t.IncludedUnits.String()
	f.Charges = nil
	for _, c := range t.Charges {
		cf := chargeForm{Meter: c.Meter, Model: c.Model, IncludedUnits: c.IncludedUnits.String(), UnitPrice: decString(c.UnitPrice),
			PackageSize: decString(c.PackageSize), Quota: decString(c.Quota), QuotaHard: c.QuotaHard}
		for _, tr := range c.Tiers {
			cf.Tiers = append(cf.Tiers, tierForm{UpTo: decString(tr.UpTo), UnitPrice: tr.UnitPrice.String(), FlatAmount: tr.FlatAmount.String()})
		}
		f.Charges = append(f.Charges, cf)
	}
	padForm(f)
}

// padForm adds the blank rows the editor offers.
func padForm(f *planForm) {
	for len(f.Charges) < minChargeRows || (len(f.Charges) < maxChargeRows && !blankCharge(f.Charges[len(f.Charges)-1])) {
		f.Charges = append(f.Charges, chargeForm{Model: "graduated"})
	}
	for i := range f.Charges {
		c := &f.Charges[i]
		for len(c.Tiers) < minTierRows || (len(c.Tiers) < maxTierRows && c.Tiers[len(c.Tiers)-1] != (tierForm{})) {
			c.Tiers = append(c.Tiers, tierForm{})
		}
	}
}

func blankCharge(c chargeForm) bool {
	if c.Meter != "" || c.IncludedUnits != "" || c.UnitPrice != "" || c.PackageSize != "" || c.Quota != "" || c.QuotaHard {
		return false
	}
	return !slices.ContainsFunc(c.Tiers, func(t tierForm) bool { return t != tierForm{} })
}

// planFormFrom reads the editor's inputs: charge rows c0, c1, … and their
// tier rows c0.t0, c0.t1, … as many as the form sent.
func planFormFrom(r *http.Request) planForm {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	f := planForm{Name: v("name"), Slug: v("slug"), Description: v("description"), Status: v("status"),
		Type: v("type"), Currency: strings.ToUpper(v("currency")), Interval: v("interval"), BaseFee: v("base_fee"), TrialDays: v("trial_days"),
		Quota: v("quota_requests"), QuotaHard: r.PostFormValue("quota_hard") != "", RatePerSecond: v("rate_per_second"),
		RatePerMinute: v("rate_per_minute"), IncludedUnits: v("included_units")}
	for i := 0; i < maxChargeRows && r.PostForm.Has(fmt.Sprintf("c%d.meter", i)); i++ {
		c := fmt.Sprintf("c%d.", i)
		cf := chargeForm{Meter: v(c + "meter"), Model: v(c + "model"), IncludedUnits: v(c + "included_units"), UnitPrice: v(c + "unit_price"),
			PackageSize: v(c + "package_size"), Quota: v(c + "quota"), QuotaHard: r.PostFormValue(c+"quota_hard") != ""}
		for j := 0; j < maxTierRows && r.PostForm.Has(fmt.Sprintf("%st%d.up_to", c, j)); j++ {
			t := fmt.Sprintf("%st%d.", c, j)
			cf.Tiers = append(cf.Tiers, tierForm{UpTo: v(t + "up_to"), UnitPrice: v(t + "unit_price"), FlatAmount: v(t + "flat_amount")})
		}
		f.Charges = append(f.Charges, cf)
	}
	return f
}

// rowMap maps the API's indices of charges and tiers (the rows sent) to
// the editor's (the rows typed, blank ones left out).
type rowMap struct {
	charges []int
	tiers   [][]int
}

// terms reads the editor's terms; errs name fields as the API does
// (terms.charges[0].tiers[1].up_to), with the editor's row indices.
func (f planForm) terms() (t termsView, m rowMap, errs []FieldError) {
	bad := func(field, detail string) { errs = append(errs, FieldError{Field: field, Detail: detail}) }
	dec := func(field, s string, def string) decimal.Decimal {
		if s == "" {
			s = def
		}
		d, err := decimal.NewFromString(s)
		if err != nil {
			bad(field, "must be a number such as 12.50")
		}
		return d
	}
	optDec := func(field, s string) *decimal.Decimal {
		if s == "" {
			return nil
		}
		d := dec(field, s, "")
		return &d
	}
	optInt := func(field, s string) *int64 {
		if s == "" {
			return nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			bad(field, "must be a whole number")
			return nil
		}
		return &n
	}
	small := func(n *int64) *int {
		if n == nil {
			return nil
		}
		v := int(*n)
		return &v
	}
	t = termsView{Type: f.Type, Currency: f.Currency, Interval: f.Interval, BaseFee: dec("terms.base_fee", f.BaseFee, "0"),
		QuotaRequests: optInt("terms.quota_requests", f.Quota), QuotaHard: f.QuotaHard,
		RatePerSecond: small(optInt("terms.rate_per_second", f.RatePerSecond)), RatePerMinute: small(optInt("terms.rate_per_minute", f.RatePerMinute)),
		IncludedUnits: dec("terms.included_units", f.IncludedUnits, "0"), Charges: []chargeView{}}
	if trial := optInt("terms.trial_days", f.TrialDays); trial != nil {
		t.TrialDays = int(*trial)
	}
	for i, cf := range f.Charges {
		if blankCharge(cf) {
			continue
		}
		at := fmt.Sprintf("terms.charges[%d]", i)
		if cf.Meter == "" {
			bad(at+".meter", "choose the meter this charge prices")
		}
		c := chargeView{Meter: cf.Meter, Model: cf.Model, IncludedUnits: dec(at+".included_units", cf.IncludedUnits, "0"),
			UnitPrice: optDec(at+".unit_price", cf.UnitPrice), PackageSize: optDec(at+".package_size", cf.PackageSize),
			Quota: optDec(at+".quota", cf.Quota), QuotaHard: cf.QuotaHard}
		var rows []int
		for j, tf := range cf.Tiers {
			if tf == (tierForm{}) {
				continue
			}
			tat := fmt.Sprintf("%s.tiers[%d]", at, j)
			c.Tiers = append(c.Tiers, tierView{UpTo: optDec(tat+".up_to", tf.UpTo), UnitPrice: dec(tat+".unit_price", tf.UnitPrice, "0"),
				FlatAmount: dec(tat+".flat_amount", tf.FlatAmount, "0")})
			rows = append(rows, j)
		}
		t.Charges = append(t.Charges, c)
		m.charges = append(m.charges, i)
		m.tiers = append(m.tiers, rows)
	}
	return t, m, errs
}

var chargeField = regexp.MustCompile(`^terms\.charges\[(\d+)\](?:\.tiers\[(\d+)\])?`)

// rename names the API's errors about charges and tiers by the editor's
// rows.
func (m rowMap) rename(pr *Problem) {
	for i, e := range pr.Errors {
		s := chargeField.FindStringSubmatchIndex(e.Field)
		if s == nil {
			continue
		}
		c, _ := strconv.Atoi(e.Field[s[2]:s[3]])
		if c >= len(m.charges) {
			continue
		}
		name := fmt.Sprintf("terms.charges[%d]", m.charges[c])
		if s[4] >= 0 {
			t, _ := strconv.Atoi(e.Field[s[4]:s[5]])
			if t >= len(m.tiers[c]) {
				continue
			}
			name += fmt.Sprintf(".tiers[%d]", m.tiers[c][t])
		}
		pr.Errors[i].Field = name + e.Field[s[1]:]
	}
}

// planPage is the plan editor's page: a new plan of API (Plan nil), or a
// plan with its versions, its settings and a new version's terms.
type planPage struct {
	API      ownAPI
	Plan     *providerPlan
	Versions []planVersionView
	Meters   []meterView
	Form     planForm
	Idem     string
	// Sent is the form a problem belongs to: plan, settings or version.
	Sent    string
	Problem *Problem
	Options planOptions
}

type planOptions struct {
	Types, Intervals, Models, Statuses []string
}

var editorOptions = planOptions{
	Types:     []string{"subscription", "usage_based", "hybrid", "freemium"},
	Intervals: []string{"month", "year"},
	Models:    []string{"graduated", "volume", "per_unit", "package"},
	Statuses:  []string{"draft", "active", "archived"},
}

// Err is the API's detail for exactly field (the editor's rows have
// nested names, which view.FieldError would match by prefix).
func (pp planPage) Err(field string) string {
	if pp.Problem == nil {
		return ""
	}
	for _, e := range pp.Problem.Errors {
		if e.Field == field {
			return e.Detail
		}
	}
	return ""
}

// ChargeErr is the detail of an error about charge i as a whole.
func (pp planPage) ChargeErr(i int) string {
	if d := pp.Err(fmt.Sprintf("terms.charges[%d]", i)); d != "" {
		return d
	}
	return pp.Err(fmt.Sprintf("terms.charges[%d].tiers", i))
}

// Nth is i counted from 1, for labels.
func (planPage) Nth(i int) int { return i + 1 }

// Field is the name of charge i's input k, or of its tier j's when j ≥ 0.
func (planPage) Field(i, j int, k string) string {
	if j < 0 {
		return fmt.Sprintf("c%d.%s", i, k)
	}
	return fmt.Sprintf("c%d.t%d.%s", i, j, k)
}

// APIField is the API's name of the same input, for its errors.
func (planPage) APIField(i, j int, k string) string {
	if j < 0 {
		return fmt.Sprintf("terms.charges[%d].%s", i, k)
	}
	return fmt.Sprintf("terms.charges[%d].tiers[%d].%s", i, j, k)
}

func (p *portal) newPlanPage(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such API.")
		return
	}
	f := planForm{Status: "active", Type: "subscription", Currency: "USD", Interval: "month", BaseFee: "0", TrialDays: "0", IncludedUnits: "0"}
	padForm(&f)
	p.showPlanEditor(w, r, id, nil, http.StatusOK, f, "", nil)
}

// showPlanEditor renders the editor of a new plan of API apiID (plan nil)
// or of plan.
func (p *portal) showPlanEditor(w http.ResponseWriter, r *http.Request, apiID string, plan *providerPlan, status int, f planForm, sent string, pr *Problem) {
	out := planPage{Plan: plan, Form: f, Idem: formKey(), Sent: sent, Problem: pr, Options: editorOptions}
	if err := p.api.get(r, "/v1/apis/"+apiID, nil, &out.API); err != nil {
		p.failAPI(w, r, err)
		return
	}
	var meters page[meterView]
	if err := p.api.get(r, "/v1/apis/"+apiID+"/meters", nil, &meters); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Meters = meters.Data
	if plan != nil {
		var versions page[planVersionView]
		if err := p.api.get(r, "/v1/plans/"+plan.ID+"/versions", nil, &versions); err != nil {
			p.failAPI(w, r, err)
			return
		}
		out.Versions = versions.Data
		slices.Reverse(out.Versions)
	}
	title := "New plan"
	if plan != nil {
		title = plan.Name
	}
	p.render(w, r, status, "provider_plan", view{Title: title, Nav: "apis", Data: out, Problem: pr})
}

func (p *portal) createPlan(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such API.")
		return
	}
	f := planFormFrom(r)
	terms, rows, errs := f.terms()
	refused := func(pr *Problem) {
		padForm(&f)
		p.showPlanEditor(w, r, id, nil, pr.Status, f, "plan", pr)
	}
	if len(errs) > 0 {
		refused(invalid(errs...))
		return
	}
	in := map[string]any{"name": f.Name, "slug": f.Slug, "description": f.Description, "status": f.Status, "terms": terms}
	var out providerPlan
	if err := p.api.post(r, "/v1/apis/"+id+"/plans", idemOf(r), in, &out); err != nil {
		pr, ok := formProblem(err)
		if !ok {
			p.failAPI(w, r, err)
			return
		}
		rows.rename(pr)
		refused(pr)
		return
	}
	http.Redirect(w, r, "/provider/plans/"+out.ID, http.StatusSeeOther)
}

// loadPlan reads plan id.
func (p *portal) loadPlan(r *http.Request, id string) (providerPlan, error) {
	var pl providerPlan
	err := p.api.get(r, "/v1/plans/"+id, nil, &pl)
	return pl, err
}

func (p *portal) providerPlanPage(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such plan.")
		return
	}
	pl, err := p.loadPlan(r, id)
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	p.showPlan(w, r, pl, http.StatusOK, "", nil)
}

// showPlan renders plan pl's page; the editor starts from its current
// terms unless a refused form is shown again.
func (p *portal) showPlan(w http.ResponseWriter, r *http.Request, pl providerPlan, status int, sent string, pr *Problem) {
	f := planForm{Name: pl.Name, Slug: pl.Slug, Description: pl.Description, Status: pl.Status}
	termsForm(&f, pl.Current.Terms)
	switch {
	case pr != nil && sent == "version":
		typed := planFormFrom(r)
		typed.Name, typed.Slug, typed.Description, typed.Status = f.Name, f.Slug, f.Description, f.Status
		f = typed
		padForm(&f)
	case pr != nil && sent == "settings":
		f.Name, f.Description, f.Status = r.PostFormValue("name"), r.PostFormValue("description"), r.PostFormValue("status")
	}
	p.showPlanEditor(w, r, pl.APIID, &pl, status, f, sent, pr)
}

// ownPlan reads the path's plan for a change; a plan file's plan is
// refused here as the API would.
func (p *portal) ownPlan(w http.ResponseWriter, r *http.Request) (providerPlan, bool) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such plan.")
		return providerPlan{}, false
	}
	pl, err := p.loadPlan(r, id)
	if err != nil {
		p.failAPI(w, r, err)
		return providerPlan{}, false
	}
	return pl, true
}

// editPlan changes the plan's name, description or status.
func (p *portal) editPlan(w http.ResponseWriter, r *http.Request) {
	pl, ok := p.ownPlan(w, r)
	if !ok {
		return
	}
	in := map[string]any{}
	for k, cur := range map[string]string{"name": pl.Name, "description": pl.Description, "status": pl.Status} {
		if v := strings.TrimSpace(r.PostFormValue(k)); v != cur {
			in[k] = v
		}
	}
	if len(in) > 0 {
		if err := p.api.patch(r, "/v1/plans/"+pl.ID, in, nil); err != nil {
			pr, ok := formProblem(err)
			if !ok {
				p.failAPI(w, r, err)
				return
			}
			p.showPlan(w, r, pl, pr.Status, "settings", pr)
			return
		}
	}
	http.Redirect(w, r, "/provider/plans/"+pl.ID, http.StatusSeeOther)
}

// createPlanVersion adds a version of the plan's terms.
func (p *portal) createPlanVersion(w http.ResponseWriter, r *http.Request) {
	pl, ok := p.ownPlan(w, r)
	if !ok {
		return
	}
	terms, rows, errs := planFormFrom(r).terms()
	if len(errs) > 0 {
		p.showPlan(w, r, pl, http.StatusUnprocessableEntity, "version", invalid(errs...))
		return
	}
	if err := p.api.post(r, "/v1/plans/"+pl.ID+"/versions", idemOf(r), map[string]any{"terms": terms}, nil); err != nil {
		pr, ok := formProblem(err)
		if !ok {
			p.failAPI(w, r, err)
			return
		}
		rows.rename(pr)
		p.showPlan(w, r, pl, pr.Status, "version", pr)
		return
	}
	http.Redirect(w, r, "/provider/plans/"+pl.ID, http.StatusSeeOther)
}
