package httpapi

import (
	"net/http"

	"github.com/veil-platform/veil/control-plane/identity"
)

// paymentLimit limits, per organization, the calls that make the provider
// charge a card or set one up (pay now, card setup). Each is a
// PaymentIntent or a SetupIntent on the platform's single Stripe account:
// a consumer or a stolen token trying cards through them would get that
// account restricted, for every issuer. The token limit is per subject,
// so it is no bound for an organization with many members or tokens.
func (a *api) paymentLimit() func(http.Handler) http.Handler {
	if a.cfg.RateLimiter == nil {
		return func(next http.Handler) http.Handler { return next }
	}
	return a.cfg.RateLimiter.Middleware("payment", a.cfg.PaymentRate, func(r *http.Request) string {
		p, _ := identity.FromContext(r.Context())
		if p.Org != "" {
			return "org:" + p.Org
		}
		return "subject:" + p.Subject
	})
}
