package portal

import "github.com/go-chi/chi/v5"

// consumerRoutes are the consumers' pages beyond the catalog and their
// subscriptions: budgets and billing.
func (p *portal) consumerRoutes(r chi.Router) {
}

// webhookRoutes are the webhook endpoints' pages, for consumers and
// providers.
func (p *portal) webhookRoutes(r chi.Router) {
}
