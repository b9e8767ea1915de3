package portal

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/shopspring/decimal"
)

func (p *portal) providerPromotionRoutes(r chi.Router) {
	r.Get("/promotions", p.promotionsPage)
	r.Post("/promotions", p.createPromotion)
	r.Post("/promotions/{id}/end", p.endPromotion)
}

// promotionView is a promotion code of the provider.
type promotionView struct {
	ID              string          `json:"id"`
	Code            string          `json:"code"`
	Description     string          `json:"description"`
	Kind            string          `json:"kind"`
	Value           decimal.Decimal `json:"value"`
	Currency        *string         `json:"currency"`
	Meter           *string         `json:"meter"`
	Duration        string          `json:"duration"`
	DurationPeriods *int            `json:"duration_periods"`
	ValidFrom       time.Time       `json:"valid_from"`
	ValidUntil      *time.Time      `json:"valid_until"`
	MaxRedemptions  *int            `json:"max_redemptions"`
	MaxPerCustomer  *int            `json:"max_per_customer"`
	Redemptions     int             `json:"redemptions"`
	Stackable       bool            `json:"stackable"`
	Enabled         bool            `json:"enabled"`
	PlanIDs         []string        `json:"plan_ids"`
}

// Live says whether the code can still be redeemed as far as its own
// terms go: enabled and not past its end.
func (pv promotionView) Live() bool {
	return pv.Enabled && (pv.ValidUntil == nil || pv.ValidUntil.After(time.Now()))
}

// Off is what the promotion gives, in words.
func (pv promotionView) Off() string {
	switch pv.Kind {
	case "percent_off":
		return pv.Value.String() + "% off"
	case "amount_off":
		cur := ""
		if pv.Currency != nil {
			cur = " " + *pv.Currency
		}
		return pv.Value.String() + cur + " off"
	case "free_units":
		m := ""
		if pv.Meter != nil {
			m = " of " + *pv.Meter
		}
		return pv.Value.String() + " free units" + m
	case "trial_extension":
		return pv.Value.String() + " more trial days"
	}
	return pv.Kind + " " + pv.Value.String()
}

// For is how long a redemption lasts, in words.
func (pv promotionView) For() string {
	switch pv.Duration {
	case "repeating":
		if pv.DurationPeriods != nil {
			return "for " + strconv.Itoa(*pv.DurationPeriods) + " periods"
		}
	case "forever":
		return "forever"
	}
	return "once"
}

// promotionForm is the create form's inputs, as typed.
type promotionForm struct {
	Code, Description, Kind, Value, Currency, Meter, Duration, Periods string
	ValidUntil, MaxRedemptions, MaxPerCustomer                         string
	Stackable                                                          bool
	Plans                                                              []string
}

type planChoice struct {
	ID, Label string
}

type promotionsPage struct {
	Promotions []promotionView
	Plans      []planChoice
	PlanNames  map[string]string
	Form       promotionForm
	Idem       string
	Kinds      []string
	Durations  []string
}

// Chosen says whether the form chose plan id.
func (f promotionForm) Chosen(id string) bool {
	for _, p := range f.Plans {
		if p == id {
			return true
		}
	}
	return false
}

func (p *portal) promotionsPage(w http.ResponseWriter, r *http.Request) {
	p.showPromotions(w, r, http.StatusOK, promotionForm{Kind: "percent_off", Duration: "once"}, nil)
}

func (p *portal) showPromotions(w http.ResponseWriter, r *http.Request, status int, form promotionForm, pr *Problem) {
	out := promotionsPage{Form: form, Idem: formKey(), PlanNames: map[string]string{},
		Kinds: []string{"percent_off", "amount_off", "free_units", "trial_extension"}, Durations: []string{"once", "repeating", "forever"}}
	var list page[promotionView]
	if err := p.api.get(r, "/v1/promotions", url.Values{"limit": {"200"}}, &list); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Promotions = list.Data
	apis, err := p.ownAPIs(r)
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	for _, a := range apis {
		names, err := p.planNames(r, a.ID)
		if err != nil {
			p.failAPI(w, r, err)
			return
		}
		for id, name := range names {
			out.Plans = append(out.Plans, planChoice{ID: id, Label: a.Name + " · " + name})
			out.PlanNames[id] = a.Name + " · " + name
		}
	}
	p.render(w, r, status, "provider_promotions", view{Title: "Promotions", Nav: "promotions", Data: out, Problem: pr})
}

func (p *portal) createPromotion(w http.ResponseWriter, r *http.Request) {
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	_ = r.ParseForm()
	form := promotionForm{Code: v("code"), Description: v("description"), Kind: v("kind"), Value: v("value"), Currency: strings.ToUpper(v("currency")),
		Meter: v("meter"), Duration: v("duration"), Periods: v("duration_periods"), ValidUntil: v("valid_until"),
		MaxRedemptions: v("max_redemptions"), MaxPerCustomer: v("max_per_customer"), Stackable: v("stackable") != "", Plans: r.PostForm["plan_ids"]}
	var errs []FieldError
	in := map[string]any{"code": form.Code, "description": form.Description, "kind": form.Kind, "duration": form.Duration, "stackable": form.Stackable}
	if d, err := decimal.NewFromString(form.Value); err != nil {
		errs = append(errs, FieldError{Field: "value", Detail: "must be a number such as 20"})
	} else {
		in["value"] = d
	}
	// Each kind takes its own companion field; the others are left out.
	switch form.Kind {
	case "amount_off":
		in["currency"] = form.Currency
	case "free_units":
		in["meter"] = form.Meter
	}
	if form.Duration == "repeating" {
		n, err := strconv.Atoi(form.Periods)
		if err != nil {
			errs = append(errs, FieldError{Field: "duration_periods", Detail: "must be a whole number of periods"})
		}
		in["duration_periods"] = n
	}
	for field, s := range map[string]string{"max_redemptions": form.MaxRedemptions, "max_per_customer": form.MaxPerCustomer} {
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			errs = append(errs, FieldError{Field: field, Detail: "must be a whole number, or empty for no limit"})
		}
		in[field] = n
	}
	if form.ValidUntil != "" {
		// A date input: the code ends at the end of that day, UTC.
		d, err := time.Parse(time.DateOnly, form.ValidUntil)
		if err != nil {
			errs = append(errs, FieldError{Field: "valid_until", Detail: "must be a date such as 2026-12-31"})
		}
		in["valid_until"] = d.Add(24 * time.Hour)
	}
	var plans []string
	for _, id := range form.Plans {
		if uuidPattern.MatchString(id) {
			plans = append(plans, id)
		}
	}
	if len(plans) > 0 {
		in["plan_ids"] = plans
	}
	if len(errs) > 0 {
		p.showPromotions(w, r, http.StatusUnprocessableEntity, form, invalid(errs...))
		return
	}
	if err := p.api.post(r, "/v1/promotions", idemOf(r), in, nil); err != nil {
		pr, ok := formProblem(err)
		if !ok {
			p.failAPI(w, r, err)
			return
		}
		p.showPromotions(w, r, pr.Status, form, pr)
		return
	}
	http.Redirect(w, r, "/provider/promotions", http.StatusSeeOther)
}

// endPromotion ends a code: disabled, and its validity ending now, so
// that no later redemption takes it; redemptions made keep their terms.
func (p *portal) endPromotion(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such promotion.")
		return
	}
	var pv promotionView
	if err := p.api.get(r, "/v1/promotions/"+id, nil, &pv); err != nil {
		p.failAPI(w, r, err)
		return
	}
	in := map[string]any{"enabled": false}
	if now := time.Now().UTC(); now.After(pv.ValidFrom) && (pv.ValidUntil == nil || pv.ValidUntil.After(now)) {
		in["valid_until"] = now
	}
	if err := p.api.patch(r, "/v1/promotions/"+id, in, nil); err != nil {
		pr, ok := formProblem(err)
		if !ok {
			p.failAPI(w, r, err)
			return
		}
		p.showPromotions(w, r, pr.Status, promotionForm{Kind: "percent_off", Duration: "once"}, pr)
		return
	}
	http.Redirect(w, r, "/provider/promotions", http.StatusSeeOther)
}
