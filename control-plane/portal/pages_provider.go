package portal

import "github.com/go-chi/chi/v5"

// providerRoutes are the providers' pages, under /provider.
func (p *portal) providerRoutes(r chi.Router) {
}
