package stripepay

import (
	"fmt"
	"strings"

	"github.com/veil-platform/veil/metering"
)

// stripeShift holds the currencies whose Stripe API amount is not in ISO
// 4217 minor units: Stripe kept ISK a two-decimal currency in its API when
// card networks made it whole krónur only (2023), so 1 ISK is 100 and the
// amount must be a multiple of 100.
var stripeShift = map[string]int64{"ISK": 100}

// toStripeAmount converts Veil's minor units to the amount and lower-case
// currency Stripe's API takes. Zero-decimal currencies (JPY, KRW, CLP,
// VND) are the same integer; three-decimal currencies (KWD, BHD, JOD,
// OMR, TND) are in thousandths, but Stripe's payment partners need the
// last digit to be 0, so an amount such as KWD 5.125 is refused here
// rather than rounded: an invoice states what it collects.
func toStripeAmount(m metering.Money) (int64, string, error) {
	c, err := metering.CurrencyOf(m.Currency)
	if err != nil {
		return 0, "", fmt.Errorf("convert amount for Stripe: %w", err)
	}
	if m.Minor < 0 {
		return 0, "", fmt.Errorf("%w: %s is negative", metering.ErrAmountNotRepresentable, m)
	}
	if c.Exponent == 3 && m.Minor%10 != 0 {
		return 0, "", fmt.Errorf("%w: Stripe takes %s only in multiples of 0.010, not %s",
			metering.ErrAmountNotRepresentable, m.Currency, m)
	}
	n := m.Minor
	if f, ok := stripeShift[c.Code]; ok {
		if n > (1<<63-1)/f {
			return 0, "", fmt.Errorf("%w: %s overflows", metering.ErrAmountNotRepresentable, m)
		}
		n *= f
	}
	return n, strings.ToLower(c.Code), nil
}

// fromStripeAmount is the inverse of toStripeAmount for what Stripe
// reports. A currency Veil does not price in keeps Stripe's integer.
func fromStripeAmount(n int64, currency string) metering.Money {
	code := strings.ToUpper(currency)
	if f, ok := stripeShift[code]; ok {
		n /= f
	}
	return metering.Money{Minor: n, Currency: code}
}
