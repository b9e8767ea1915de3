package payments

import (
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// mismatch logs and counts a provider object that names a Veil object it
// does not match: another integration's, a forgery, or a bug to find, in
// Config.Metrics.
func (s *Service) mismatch(kind string, args ...any) {
	s.cfg.Metrics.GetOrCreateCounter(mismatchedName(kind)).Inc()
	s.log.Error("a provider "+kind+" does not match the Veil object it names: nothing changed", args...)
}

// mismatchedName is the counter of mismatched provider objects of a kind.
func mismatchedName(kind string) string {
	return `veil_controlplane_payment_mismatched_total{kind="` + kind + `"}`
}

// sameCharge reports whether the provider's payment is the attempt's own
// charge: the payment's amount and currency, of the attempt's customer.
// A payment in the provider's account can name any invoice in its
// metadata (another integration, a staging deployment sharing the
// account, a person in the dashboard); only these make it this one.
func (s *Service) sameCharge(p db.Payment, att db.PaymentAttempt, amount metering.Money, customer, pi string) bool {
	if amount == (metering.Money{Minor: p.Amount, Currency: p.Currency}) && customer == att.ProviderCustomerID {
		return true
	}
	s.mismatch("payment", "payment", p.ID, "attempt", att.ID, "provider_payment", pi,
		"amount", amount.String(), "want_amount", metering.Money{Minor: p.Amount, Currency: p.Currency}.String(),
		"customer", customer, "want_customer", att.ProviderCustomerID)
	return false
}
