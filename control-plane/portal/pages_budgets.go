package portal

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// budgetView is a budget as the API answers it.
type budgetView struct {
	ID                string    `json:"id"`
	SubscriptionID    *string   `json:"subscription_id"`
	Currency          string    `json:"currency"`
	Amount            string    `json:"amount"`
	Thresholds        []int     `json:"thresholds"`
	Hard              bool      `json:"hard"`
	Enforced          *bool     `json:"enforced"`
	NotEnforcedReason string    `json:"not_enforced_reason"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// ThresholdList is the thresholds as the form writes them: "50, 80, 100".
func (b budgetView) ThresholdList() string {
	s := make([]string, len(b.Thresholds))
	for i, t := range b.Thresholds {
		s[i] = strconv.Itoa(t)
	}
	return strings.Join(s, ", ")
}

// budgetForm is what a budget form sent (or shows of a budget).
type budgetForm struct {
	Scope, Currency, Amount, Thresholds string
	Hard                                bool
}

type budgetRow struct {
	Budget budgetView
	// Scope names the budget's subscription (its API), or is "" for an
	// organization-wide one.
	Scope string
}

type budgetsPage struct {
	Budgets []budgetRow
	// Subscriptions offers the subscriptions a budget can be set on.
	Subscriptions []subscriptionRow
	Form          budgetForm
	Idem          string
}

func (p *portal) budgetsPage(w http.ResponseWriter, r *http.Request) {
	p.showBudgets(w, r, http.StatusOK, budgetForm{Thresholds: "50, 80, 100"}, nil)
}

// showBudgets renders the budgets with the create form holding form,
// and the problem of the form that was sent.
func (p *portal) showBudgets(w http.ResponseWriter, r *http.Request, status int, form budgetForm, pr *Problem) {
	var list page[budgetView]
	if err := p.api.get(r, "/v1/budgets", url.Values{"limit": {"100"}}, &list); err != nil {
		p.failAPI(w, r, err)
		return
	}
	var subs page[subscriptionView]
	if err := p.api.get(r, "/v1/subscriptions", url.Values{"limit": {"100"}}, &subs); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out := budgetsPage{Form: form, Idem: formKey()}
	names := map[string]string{}
	for _, s := range subs.Data {
		name, ok := names[s.APIID]
		if !ok {
			var a apiView
			if err := p.api.get(r, "/v1/apis/"+s.APIID, nil, &a); err == nil {
				name = a.Name
			}
			names[s.APIID] = name
		}
		out.Subscriptions = append(out.Subscriptions, subscriptionRow{Sub: s, APIName: name})
	}
	for _, b := range list.Data {
		row := budgetRow{Budget: b}
		if b.SubscriptionID != nil {
			row.Scope = *b.SubscriptionID
			for _, s := range out.Subscriptions {
				if s.Sub.ID == *b.SubscriptionID && s.APIName != "" {
					row.Scope = s.APIName
				}
			}
		}
		out.Budgets = append(out.Budgets, row)
	}
	p.render(w, r, status, "budgets", view{Title: "Budgets", Nav: "budgets", Data: out, Problem: pr})
}

// sentBudget reads a budget form.
func sentBudget(r *http.Request) budgetForm {
	return budgetForm{
		Scope: r.PostFormValue("scope"), Currency: strings.ToUpper(strings.TrimSpace(r.PostFormValue("currency"))),
		Amount: strings.TrimSpace(r.PostFormValue("amount")), Thresholds: strings.TrimSpace(r.PostFormValue("thresholds")),
		Hard: r.PostFormValue("hard") == "on",
	}
}

// thresholdsOf parses "50, 80, 100" (commas or spaces); nil when it is
// empty (the API's default). A word that is no whole decimalFloat is the form's
// own refusal, next to the field; the API judges the numbers.
func thresholdsOf(s string) ([]int, *Problem) {
	fields := strings.FieldsFunc(s, func(c rune) bool { return c == ',' || c == ' ' || c == ';' })
	if len(fields) == 0 {
		return nil, nil
	}
	out := make([]int, 0, len(fields))
	for _, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil || len(fields) > 20 {
			return nil, &Problem{Status: http.StatusUnprocessableEntity, Title: "Invalid Request",
				Detail: "The thresholds are not a list of percents.",
				Errors: []FieldError{{Field: "thresholds", Detail: "must be whole percents separated by commas, such as 50, 80, 100"}}}
		}
		out = append(out, n)
	}
	return out, nil
}

// createBudget sets a budget on a subscription or on the whole
// organization.
func (p *portal) createBudget(w http.ResponseWriter, r *http.Request) {
	form := sentBudget(r)
	in := map[string]any{"amount": form.Amount, "hard": form.Hard}
	if form.Scope != "" && form.Scope != "organization" {
		in["subscription_id"] = form.Scope
	}
	if form.Currency != "" {
		in["currency"] = form.Currency
	}
	th, pr := thresholdsOf(form.Thresholds)
	if pr != nil {
		p.showBudgets(w, r, pr.Status, form, pr)
		return
	}
	if th != nil {
		in["thresholds"] = th
	}
	if err := p.api.post(r, "/v1/budgets", idemOf(r), in, nil); err != nil {
		if pr, ok := consumerRefusal(err); ok {
			p.showBudgets(w, r, pr.Status, form, pr)
			return
		}
		p.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/budgets", http.StatusSeeOther)
}

type budgetPage struct {
	Budget budgetView
	Scope  string
	Form   budgetForm
}

func (p *portal) budgetPage(w http.ResponseWriter, r *http.Request) {
	p.showBudget(w, r, http.StatusOK, nil, nil)
}

// showBudget renders a budget's edit form, with what a refused form sent.
func (p *portal) showBudget(w http.ResponseWriter, r *http.Request, status int, sent *budgetForm, pr *Problem) {
	id := pathID(r)
	if id == "" {
		p.noSuch(w, r, "budget")
		return
	}
	var out budgetPage
	if err := p.api.get(r, "/v1/budgets/"+id, nil, &out.Budget); err != nil {
		p.failAPI(w, r, err)
		return
	}
	if s := out.Budget.SubscriptionID; s != nil {
		out.Scope = *s
		var sub subscriptionView
		var a apiView
		if p.api.get(r, "/v1/subscriptions/"+*s, nil, &sub) == nil && p.api.get(r, "/v1/apis/"+sub.APIID, nil, &a) == nil {
			out.Scope = a.Name
		}
	}
	out.Form = budgetForm{Amount: out.Budget.Amount, Thresholds: out.Budget.ThresholdList(), Hard: out.Budget.Hard}
	if sent != nil {
		out.Form = *sent
	}
	p.render(w, r, status, "budgets_edit", view{Title: "Budget", Nav: "budgets", Data: out, Problem: pr})
}

// updateBudget changes a budget's amount, thresholds and hardness.
func (p *portal) updateBudget(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.noSuch(w, r, "budget")
		return
	}
	form := sentBudget(r)
	th, pr := thresholdsOf(form.Thresholds)
	if pr != nil {
		p.showBudget(w, r, pr.Status, &form, pr)
		return
	}
	in := map[string]any{"amount": form.Amount, "hard": form.Hard}
	if th != nil {
		in["thresholds"] = th
	}
	if err := p.api.put(r, "/v1/budgets/"+id, in, nil); err != nil {
		if pr, ok := consumerRefusal(err); ok {
			p.showBudget(w, r, pr.Status, &form, pr)
			return
		}
		p.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/budgets", http.StatusSeeOther)
}

func (p *portal) deleteBudget(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.noSuch(w, r, "budget")
		return
	}
	if err := p.api.delete(r, "/v1/budgets/"+id); err != nil {
		p.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/budgets", http.StatusSeeOther)
}
