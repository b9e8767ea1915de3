package portal

import "github.com/go-chi/chi/v5"

// adminRoutes are the admins' pages, under /admin.
func (p *portal) adminRoutes(r chi.Router) {
}
