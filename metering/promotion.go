package metering

// Promotions in a quote. The order of application, fixed so that a
// discount can be checked by hand:
//
//  1. Choose: when any of the promotions is exclusive, the exclusive one
//     of highest priority applies alone (a tie goes to the code first in
//     lower-case byte order) and every other is dropped; otherwise every
//     promotion applies.
//  2. free_units: the meter's metered quantity is reduced by the units
//     (never below zero) before rating. The usage lines still show the
//     metered quantity; the promotion's discount line is what the
//     reduction saves: the charge at the metered quantity minus the
//     charge at the reduced one, or zero when the reduced quantity costs
//     more (a volume charge's dearer lower tier): a discount line is never
//     positive. Several on one meter reduce it in turn.
//     A free_units promotion for a meter the plan does not price has no
//     line.
//  3. amount_off: the amount, rounded to the currency's minor unit, comes
//     off what remains. Only in the plan's currency: another currency is
//     refused (ErrPromotionCurrency), never converted.
//  4. percent_off: the percentage of what remains after the amounts,
//     rounded once to the minor unit, half away from zero. Several
//     compound: each takes its share of what the previous ones left.
//  5. trial_extension changes no quote: it lengthens a trial when it is
//     redeemed.
//
// Within one kind the promotions apply in order of priority, highest
// first, ties by code. A discount never takes more than what remains, so
// the total is never below zero. Each promotion that applies is one line
// of kind discount with a negative amount; the quote's Discount is the sum
// of those amounts as a positive number and Total is Subtotal − Discount.

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/shopspring/decimal"
)

// The kinds of promotion.
const (
	PromotionPercentOff     = "percent_off"
	PromotionAmountOff      = "amount_off"
	PromotionFreeUnits      = "free_units"
	PromotionTrialExtension = "trial_extension"
)

// LineDiscount is the kind of a quote line a promotion takes off.
const LineDiscount = "discount"

var (
	// ErrInvalidPromotion wraps every reason a promotion cannot apply.
	ErrInvalidPromotion = errors.New("invalid promotion")
	// ErrPromotionCurrency means an amount_off promotion in another
	// currency than the plan's.
	ErrPromotionCurrency = errors.New("promotion currency differs from the plan's")
)

// Promotion is a promotion as a quote applies it.
type Promotion struct {
	ID, Code string
	// Kind is percent_off, amount_off, free_units or trial_extension.
	Kind string
	// Value is a percentage (0–100], an amount, a number of units or a
	// number of days, by Kind.
	Value decimal.Decimal
	// Currency is the amount's currency (amount_off only).
	Currency string
	// Meter is the slug of the meter whose units are free (free_units only).
	Meter string
	// Priority orders promotions: highest first.
	Priority int
	// Stackable promotions apply together; an exclusive one applies alone.
	Stackable bool
}

// PromotionError is why a promotion cannot apply: Field names the member
// that is wrong (value, currency, meter or kind), so that an input check
// can report it as its own field. It wraps ErrInvalidPromotion.
type PromotionError struct {
	Code, Field, Detail string
}

func (e *PromotionError) Error() string {
	return fmt.Sprintf("%s: %q: %s: %s", ErrInvalidPromotion, e.Code, e.Field, e.Detail)
}

// Unwrap makes errors.Is(err, ErrInvalidPromotion) hold.
func (e *PromotionError) Unwrap() error { return ErrInvalidPromotion }

// Validate reports whether p can apply: the rules of each kind, the one
// place they are written (promotions' input check calls it). The error is
// a *PromotionError.
func (p Promotion) Validate() error {
	bad := func(field, format string, a ...any) error {
		return &PromotionError{Code: p.Code, Field: field, Detail: fmt.Sprintf(format, a...)}
	}
	if !p.Value.IsPositive() {
		return bad("value", "must be above zero")
	}
	switch p.Kind {
	case PromotionPercentOff:
		if p.Value.GreaterThan(decimal.NewFromInt(100)) {
			return bad("value", "a percentage must be at most 100")
		}
	case PromotionAmountOff:
		if p.Currency == "" {
			return bad("currency", "is required for amount_off")
		}
	case PromotionFreeUnits:
		if p.Meter == "" {
			return bad("meter", "is required for free_units: a meter's slug")
		}
	case PromotionTrialExtension:
		if !p.Value.Equal(p.Value.Truncate(0)) {
			return bad("value", "must be a whole number of days")
		}
	default:
		return bad("kind", "must be percent_off, amount_off, free_units or trial_extension")
	}
	return nil
}

// before orders promotions: priority highest first, then code.
func (p Promotion) before(o Promotion) bool {
	if p.Priority != o.Priority {
		return p.Priority > o.Priority
	}
	return strings.ToLower(p.Code) < strings.ToLower(o.Code)
}

// ApplyingPromotions returns those of promos that apply together, in the
// order they apply within a kind: the best exclusive one alone when there
// is one, else all of them, by priority then code.
func ApplyingPromotions(promos []Promotion) []Promotion {
	out := slices.Clone(promos)
	slices.SortStableFunc(out, func(a, b Promotion) int {
		switch {
		case a.before(b):
			return -1
		case b.before(a):
			return 1
		}
		return 0
	})
	for _, p := range out {
		if !p.Stackable {
			return []Promotion{p}
		}
	}
	return out
}

// QuoteWithPromotions prices one period with usage as Quote does, then
// applies promos in the order the file's comment gives. Quote is the case
// without promotions. The promotions are applied by applyPromotions, as
// BuildInvoice applies them: a quote is an invoice of one segment.
func (p PlanTerms) QuoteWithPromotions(usage map[string]decimal.Decimal, promos []Promotion) (Quote, error) {
	q, err := p.Quote(usage)
	if err != nil || len(promos) == 0 {
		return q, err
	}
	cost := func(meter string, free decimal.Decimal) (decimal.Decimal, bool, error) {
		i := slices.IndexFunc(p.Charges, func(c Charge) bool { return c.Meter == meter })
		if i < 0 {
			return decimal.Zero, false, nil
		}
		_, total, err := p.Charges[i].Rate(decimal.Max(decimal.Zero, usage[meter].Sub(free)), p.Currency)
		return total, true, err
	}
	applied, err := applyPromotions(promos, p.Currency, q.Subtotal, cost)
	if err != nil {
		return Quote{}, fmt.Errorf("quote: %w", err)
	}
	for _, a := range applied {
		q.discount(a.promotion, a.meter, a.off)
	}
	q.Total = q.Subtotal.Sub(q.Discount)
	return q, nil
}

// meterCost is what a meter's usage costs when its first free units are
// free (the units used first); priced is false when nothing prices the
// meter.
type meterCost func(meter string, free decimal.Decimal) (cost decimal.Decimal, priced bool, err error)

// appliedPromotion is the discount one promotion takes: off is positive,
// in minor units; meter is a free_units promotion's.
type appliedPromotion struct {
	promotion Promotion
	meter     string
	off       decimal.Decimal
}

// applyPromotions applies promos to prices summing to subtotal, in the
// order the file's comment gives, and returns each applying promotion's
// discount: the one implementation of promotions, for quotes and
// invoices alike, so that the two cannot price a promotion differently.
// cost prices a meter with free units, for free_units. A discount never
// takes more than what remains (nothing when subtotal is zero or less, a
// downgrade's credit) and never charges: free units of a volume charge
// that fall back to a dearer tier save nothing.
func applyPromotions(promos []Promotion, cur Currency, subtotal decimal.Decimal, cost meterCost) ([]appliedPromotion, error) {
	if err := validatePromotions(promos, cur); err != nil {
		return nil, err
	}
	applying := ApplyingPromotions(promos)
	out := make([]appliedPromotion, 0, len(applying))
	discount := decimal.Zero
	remaining := func() decimal.Decimal { return decimal.Max(decimal.Zero, subtotal.Sub(discount)) }
	take := func(pr Promotion, meter string, off decimal.Decimal) {
		off = decimal.Max(decimal.Zero, decimal.Min(off, remaining()))
		out = append(out, appliedPromotion{promotion: pr, meter: meter, off: off})
		discount = discount.Add(off)
	}
	// Several free_units promotions on one meter reduce it in turn: each
	// saves what its units save on top of the ones before it.
	free := make(map[string]decimal.Decimal)
	for _, pr := range applying {
		if pr.Kind != PromotionFreeUnits {
			continue
		}
		full, priced, err := cost(pr.Meter, free[pr.Meter])
		if err != nil {
			return nil, err
		}
		if !priced {
			continue
		}
		free[pr.Meter] = free[pr.Meter].Add(pr.Value)
		less, _, err := cost(pr.Meter, free[pr.Meter])
		if err != nil {
			return nil, err
		}
		// Both are sums of rounded lines: the difference is in minor
		// units already.
		take(pr, pr.Meter, full.Sub(less))
	}
	for _, kind := range []string{PromotionAmountOff, PromotionPercentOff} {
		for _, pr := range applying {
			switch {
			case pr.Kind != kind:
			case kind == PromotionAmountOff:
				take(pr, "", cur.Round(pr.Value))
			default:
				take(pr, "", cur.Round(remaining().Mul(pr.Value).Shift(-2)))
			}
		}
	}
	return out, nil
}

// validatePromotions refuses an invalid promotion, a code given twice
// and an amount in another currency than cur (never converted).
func validatePromotions(promos []Promotion, cur Currency) error {
	seen := make(map[string]bool, len(promos))
	for _, pr := range promos {
		if err := pr.Validate(); err != nil {
			return err
		}
		code := strings.ToLower(pr.Code)
		if seen[code] {
			return fmt.Errorf("%w: %q given twice", ErrInvalidPromotion, pr.Code)
		}
		seen[code] = true
		if pr.Kind == PromotionAmountOff && pr.Currency != cur.Code {
			return fmt.Errorf("%w: %q is in %s, the prices in %s", ErrPromotionCurrency, pr.Code, pr.Currency, cur.Code)
		}
	}
	return nil
}

// discount adds a promotion's line of off (positive, in minor units): one
// unit priced at the negative amount.
func (q *Quote) discount(pr Promotion, meter string, off decimal.Decimal) {
	q.Lines = append(q.Lines, QuoteLine{
		Kind: LineDiscount, Meter: meter, Promotion: pr.Code, Quantity: decimal.NewFromInt(1), UnitPrice: off.Neg(), Amount: off.Neg(),
	})
	q.Discount = q.Discount.Add(off)
}
