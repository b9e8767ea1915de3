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

func (p *portal) providerSubscriberRoutes(r chi.Router) {
	r.Get("/apis/{id}/subscribers", p.subscribersPage)
	r.Get("/subscriptions/{id}", p.subscriberPage)
	r.Post("/subscriptions/{id}/credits", p.creditQuota)
	r.Post("/subscriptions/{id}/corrections", p.correctUsage)
}

// subscriberView is a subscription to one of the provider's APIs.
type subscriberView struct {
	subscriptionView
	OrganizationID string `json:"organization_id"`
	Subscriber     string `json:"subscriber"`
}

// quotaHealthView is one row of the provider analytics' quota health.
type quotaHealthView struct {
	SubscriptionID   string          `json:"subscription_id"`
	OrganizationName string          `json:"organization_name"`
	Meter            string          `json:"meter"`
	Used             decimal.Decimal `json:"used"`
	Quota            decimal.Decimal `json:"quota"`
	Percent          decimal.Decimal `json:"percent"`
	State            string          `json:"state"`
	RunsOutAt        *time.Time      `json:"runs_out_at"`
}

type subscriberRow struct {
	Sub      subscriberView
	PlanName string
	// Quota is nil when it could not be read.
	Quota  *quotaView
	Health []quotaHealthView
}

type subscribersPage struct {
	API  ownAPI
	Rows []subscriberRow
	// HealthProblem says why the analytics' quota health is missing.
	HealthProblem string
}

// planNames maps an API's plans' ids to their names.
func (p *portal) planNames(r *http.Request, apiID string) (map[string]string, error) {
	var plans page[providerPlan]
	if err := p.api.get(r, "/v1/apis/"+apiID+"/plans", url.Values{"limit": {"100"}}, &plans); err != nil {
		return nil, err
	}
	names := map[string]string{}
	for _, pl := range plans.Data {
		names[pl.ID] = pl.Name
	}
	return names, nil
}

// problemText is what a failed read of an optional part of a page shows.
func problemText(err error) string {
	if pr, ok := asProblem(err); ok {
		if pr.Detail != "" {
			return pr.Title + ": " + pr.Detail
		}
		return pr.Title
	}
	return "it could not be read"
}

func (p *portal) subscribersPage(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such API.")
		return
	}
	var out subscribersPage
	if err := p.api.get(r, "/v1/apis/"+id, nil, &out.API); err != nil {
		p.failAPI(w, r, err)
		return
	}
	// The analytics view answers the API's own organization only: it is
	// what tells another provider's API from this provider's.
	var an struct {
		QuotaHealth []quotaHealthView `json:"quota_health"`
	}
	health := map[string][]quotaHealthView{}
	if err := p.api.get(r, "/v1/apis/"+id+"/analytics", url.Values{"top": {"1"}}, &an); err != nil {
		if pr, ok := asProblem(err); ok && (pr.Status == http.StatusNotFound || pr.Status == http.StatusForbidden) {
			p.failAPI(w, r, err)
			return
		}
		out.HealthProblem = problemText(err)
	}
	for _, h := range an.QuotaHealth {
		health[h.SubscriptionID] = append(health[h.SubscriptionID], h)
	}
	names, err := p.planNames(r, id)
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	var subs page[subscriberView]
	if err := p.api.get(r, "/v1/subscriptions", url.Values{"api_id": {id}, "limit": {"200"}}, &subs); err != nil {
		p.failAPI(w, r, err)
		return
	}
	for _, s := range subs.Data {
		row := subscriberRow{Sub: s, PlanName: names[s.PlanID], Health: health[s.ID]}
		if s.Status != "canceled" {
			var q quotaView
			if err := p.api.get(r, "/v1/subscriptions/"+s.ID+"/quota", nil, &q); err == nil {
				row.Quota = &q
			}
		}
		out.Rows = append(out.Rows, row)
	}
	p.render(w, r, http.StatusOK, "provider_subscribers", view{Title: "Subscribers of " + out.API.Name, Nav: "apis", Data: out})
}

// adjustmentView is a usage correction or late usage of a subscription.
type adjustmentView struct {
	Kind      string           `json:"kind"`
	Meter     *string          `json:"meter"`
	Quantity  *decimal.Decimal `json:"quantity"`
	Amount    *decimal.Decimal `json:"amount"`
	Currency  *string          `json:"currency"`
	Reason    string           `json:"reason"`
	Actor     string           `json:"actor"`
	InvoiceID *string          `json:"invoice_id"`
	CreatedAt time.Time        `json:"created_at"`
}

// periodView is a closed billing period of the subscription, read from
// its invoices, for a correction of a meter's quantity.
type periodView struct {
	ID                     string
	PeriodStart, PeriodEnd time.Time
	Number                 string
}

type subscriberPage struct {
	Sub         subscriberView
	API         ownAPI
	Plan        providerPlan
	Quota       *quotaView
	QuotaError  string
	Adjustments []adjustmentView
	Periods     []periodView
	Meters      []meterView
	// Sent is the form a problem belongs to: credit or correction.
	Sent                                                       string
	Requests, CreditReason                                     string
	Kind, Amount, Currency, Meter, Quantity, Period, FixReason string
}

func (p *portal) subscriberPage(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such subscription.")
		return
	}
	p.showSubscriber(w, r, id, http.StatusOK, "", nil)
}

// showSubscriber renders a subscription to one of the provider's APIs,
// with the problem of a credit or correction form.
func (p *portal) showSubscriber(w http.ResponseWriter, r *http.Request, id string, status int, sent string, pr *Problem) {
	out := subscriberPage{Sent: sent, Kind: "amount"}
	if err := p.api.get(r, "/v1/subscriptions/"+id, nil, &out.Sub); err != nil {
		p.failAPI(w, r, err)
		return
	}
	if err := p.api.get(r, "/v1/apis/"+out.Sub.APIID, nil, &out.API); err != nil {
		p.failAPI(w, r, err)
		return
	}
	// Only the API's own organization manages its subscribers; a
	// subscriber's own provider page is the consumer's business. The
	// transitions answer the API's organization alone.
	if err := p.api.get(r, "/v1/apis/"+out.Sub.APIID+"/transitions", nil, nil); err != nil {
		p.failAPI(w, r, err)
		return
	}
	if err := p.api.get(r, "/v1/plans/"+out.Sub.PlanID, nil, &out.Plan); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Currency = out.Plan.Current.Terms.Currency
	var q quotaView
	if err := p.api.get(r, "/v1/subscriptions/"+id+"/quota", nil, &q); err != nil {
		out.QuotaError = problemText(err)
	} else {
		out.Quota = &q
	}
	var adj page[adjustmentView]
	if err := p.api.get(r, "/v1/subscriptions/"+id+"/adjustments", nil, &adj); err == nil {
		out.Adjustments = adj.Data
	}
	var invoices page[struct {
		BillingPeriodID *string   `json:"billing_period_id"`
		Number          *string   `json:"number"`
		PeriodStart     time.Time `json:"period_start"`
		PeriodEnd       time.Time `json:"period_end"`
	}]
	if err := p.api.get(r, "/v1/invoices", url.Values{"subscription_id": {id}, "limit": {"24"}}, &invoices); err == nil {
		for _, inv := range invoices.Data {
			if inv.BillingPeriodID == nil {
				continue
			}
			pv := periodView{ID: *inv.BillingPeriodID, PeriodStart: inv.PeriodStart, PeriodEnd: inv.PeriodEnd}
			if inv.Number != nil {
				pv.Number = *inv.Number
			}
			out.Periods = append(out.Periods, pv)
		}
	}
	var meters page[meterView]
	if err := p.api.get(r, "/v1/apis/"+out.Sub.APIID+"/meters", nil, &meters); err == nil {
		out.Meters = meters.Data
	}
	if pr != nil {
		v := func(k string) string { return r.PostFormValue(k) }
		switch sent {
		case "credit":
			out.Requests, out.CreditReason = v("requests"), v("reason")
		case "correction":
			out.Kind, out.Amount, out.Currency, out.Meter, out.Quantity, out.Period, out.FixReason =
				v("kind"), v("amount"), v("currency"), v("meter"), v("quantity"), v("billing_period_id"), v("reason")
		}
	}
	p.render(w, r, status, "provider_subscriber", view{Title: "Subscriber of " + out.API.Name, Nav: "apis", Data: out, Problem: pr})
}

// creditQuota adds requests to the subscription's quota this period.
func (p *portal) creditQuota(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such subscription.")
		return
	}
	n, err := strconv.ParseInt(strings.TrimSpace(r.PostFormValue("requests")), 10, 64)
	if err != nil {
		p.showSubscriber(w, r, id, http.StatusUnprocessableEntity, "credit", invalid(FieldError{Field: "requests", Detail: "must be a whole number of calls"}))
		return
	}
	in := map[string]any{"requests": n, "reason": strings.TrimSpace(r.PostFormValue("reason"))}
	if err := p.api.post(r, "/v1/subscriptions/"+id+"/quota/credits", idemOf(r), in, nil); err != nil {
		pr, ok := formProblem(err)
		if !ok {
			p.failAPI(w, r, err)
			return
		}
		p.showSubscriber(w, r, id, pr.Status, "credit", pr)
		return
	}
	http.Redirect(w, r, "/provider/subscriptions/"+id, http.StatusSeeOther)
}

// correctUsage records a usage correction for the subscription's next
// invoice: an amount, or a quantity of a meter in a closed period.
func (p *portal) correctUsage(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such subscription.")
		return
	}
	v := func(k string) string { return strings.TrimSpace(r.PostFormValue(k)) }
	in := map[string]any{"reason": v("reason")}
	var errs []FieldError
	number := func(field string) decimal.Decimal {
		d, err := decimal.NewFromString(v(field))
		if err != nil {
			errs = append(errs, FieldError{Field: field, Detail: "must be a number such as -12.50"})
		}
		return d
	}
	if v("kind") == "quantity" {
		in["meter"], in["quantity"] = v("meter"), number("quantity")
		if period := v("billing_period_id"); uuidPattern.MatchString(period) {
			in["billing_period_id"] = period
		} else {
			errs = append(errs, FieldError{Field: "billing_period_id", Detail: "choose the closed period the quantity belongs to"})
		}
	} else {
		in["amount"], in["currency"] = number("amount"), strings.ToUpper(v("currency"))
	}
	if len(errs) > 0 {
		p.showSubscriber(w, r, id, http.StatusUnprocessableEntity, "correction", invalid(errs...))
		return
	}
	if err := p.api.post(r, "/v1/subscriptions/"+id+"/adjustments", idemOf(r), in, nil); err != nil {
		pr, ok := formProblem(err)
		if !ok {
			p.failAPI(w, r, err)
			return
		}
		p.showSubscriber(w, r, id, pr.Status, "correction", pr)
		return
	}
	http.Redirect(w, r, "/provider/subscriptions/"+id+"#corrections", http.StatusSeeOther)
}
