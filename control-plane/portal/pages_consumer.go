package portal

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// consumerRoutes are the consumers' pages beyond the catalog and their
// subscriptions: a subscription's usage, budgets and billing.
func (p *portal) consumerRoutes(r chi.Router) {
	r.Get("/subscriptions/{id}/usage", p.usagePage)

	r.Get("/budgets", p.budgetsPage)
	r.Post("/budgets", p.createBudget)
	r.Get("/budgets/{id}", p.budgetPage)
	r.Post("/budgets/{id}", p.updateBudget)
	r.Post("/budgets/{id}/delete", p.deleteBudget)

	r.Get("/billing", p.billingPage)
	r.Get("/billing/invoices/{id}", p.invoicePage)
	r.Get("/billing/invoices/{id}/pdf", p.invoicePDF)
	r.Post("/billing/invoices/{id}/pay", p.payInvoice)
	r.Get("/billing/profile", p.profilePage)
	r.Post("/billing/profile", p.saveProfile)
	r.Post("/billing/payment-methods/setup", p.setupPaymentMethod)
}

// webhookRoutes are the webhook endpoints' pages, for consumers and
// providers.
func (p *portal) webhookRoutes(r chi.Router) {
	r.Get("/webhooks", p.webhooksPage)
	r.Post("/webhooks", p.createWebhook)
	r.Get("/webhooks/{id}", p.webhookPage)
	r.Post("/webhooks/{id}/{action}", p.webhookAction)
	r.Get("/webhooks/{id}/deliveries/{delivery}", p.deliveryPage)
	r.Post("/webhooks/{id}/deliveries/{delivery}/redeliver", p.redeliver)
}

// consumerRefusal says whether err is the API's refusal of what a form sent
// (shown on the form again, next to its fields), rather than a page to
// fail with: 4xx other than 401, 403 and 404.
func consumerRefusal(err error) (*Problem, bool) {
	pr, ok := asProblem(err)
	if !ok || pr.Status < 400 || pr.Status > 499 {
		return nil, false
	}
	switch pr.Status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return nil, false
	}
	return pr, true
}

// noSuch renders the 404 page for a path id that is not a UUID.
func (p *portal) noSuch(w http.ResponseWriter, r *http.Request, what string) {
	p.fail(w, r, http.StatusNotFound, "Page not found", "There is no such "+what+".")
}

// consumerMe is GET /v1/me: the signed-in user's organization id.
type consumerMe struct {
	OrganizationID string `json:"organization_id"`
}
