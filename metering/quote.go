package metering

import (
	"errors"
	"fmt"

	"github.com/shopspring/decimal"
)

// ErrUnknownMeter means usage was given for a meter the plan does not price.
var ErrUnknownMeter = errors.New("meter not priced by the plan")

// The kinds of quote line.
const (
	LineBaseFee = "base_fee"
	LineUsage   = "usage"
)

// PlanTerms is what a plan version charges in one period: a base fee and
// one charge per meter, in one currency.
type PlanTerms struct {
	Currency Currency
	// BaseFee is charged once per period, whatever the usage.
	BaseFee decimal.Decimal
	Charges []Charge
}

// QuoteLine is one line of a quote.
type QuoteLine struct {
	Kind string
	// Meter and Tier name what a usage line prices (Tier 0: untiered);
	// Meter also names the meter of a free_units discount.
	Meter string
	Tier  int
	// Promotion is the code of the promotion a discount line applies.
	Promotion string
	Quantity  decimal.Decimal
	UnitPrice decimal.Decimal
	// Amount is rounded once to the currency's minor unit.
	Amount decimal.Decimal
}

// Quote is what a period with the given usage costs under a plan.
type Quote struct {
	Currency string
	Lines    []QuoteLine
	// Subtotal is the sum of the base fee and usage lines, Discount what
	// the discount lines take off (a positive sum; zero without
	// promotions, see QuoteWithPromotions), Total the difference.
	Subtotal, Discount, Total decimal.Decimal
}

// Quote prices one period with usage (metered quantity per meter; a meter
// the plan prices and usage does not name counts zero). The base fee comes
// first, then each charge's lines in the plan's order.
func (p PlanTerms) Quote(usage map[string]decimal.Decimal) (Quote, error) {
	priced := make(map[string]bool, len(p.Charges))
	for _, c := range p.Charges {
		priced[c.Meter] = true
	}
	for meter := range usage {
		if !priced[meter] {
			return Quote{}, fmt.Errorf("quote: %w: %q", ErrUnknownMeter, meter)
		}
	}
	if p.BaseFee.IsNegative() {
		return Quote{}, fmt.Errorf("quote: %w: base fee %s below zero", ErrInvalidCharge, p.BaseFee)
	}
	q := Quote{Currency: p.Currency.Code, Subtotal: decimal.Zero, Discount: decimal.Zero}
	if p.BaseFee.IsPositive() {
		q.add(QuoteLine{Kind: LineBaseFee, Quantity: decimal.NewFromInt(1), UnitPrice: p.BaseFee, Amount: p.Currency.Round(p.BaseFee)})
	}
	for _, c := range p.Charges {
		lines, _, err := c.Rate(usage[c.Meter], p.Currency)
		if err != nil {
			return Quote{}, fmt.Errorf("quote: %w", err)
		}
		for _, l := range lines {
			q.add(QuoteLine{Kind: LineUsage, Meter: l.Meter, Tier: l.Tier, Quantity: l.Quantity, UnitPrice: l.UnitPrice, Amount: l.Amount})
		}
	}
	q.Total = q.Subtotal.Sub(q.Discount)
	return q, nil
}

func (q *Quote) add(l QuoteLine) {
	q.Lines = append(q.Lines, l)
	q.Subtotal = q.Subtotal.Add(l.Amount)
}
