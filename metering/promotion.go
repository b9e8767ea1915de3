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
// without promotions.
func (p PlanTerms) QuoteWithPromotions(usage map[string]decimal.Decimal, promos []Promotion) (Quote, error) {
	q, err := p.Quote(usage)
	if err != nil || len(promos) == 0 {
		return q, err
	}
	seen := make(map[string]bool, len(promos))
	for _, pr := range promos {
		if err := pr.Validate(); err != nil {
			return Quote{}, fmt.Errorf("quote: %w", err)
		}
		code := strings.ToLower(pr.Code)
		if seen[code] {
			return Quote{}, fmt.Errorf("quote: %w: %q given twice", ErrInvalidPromotion, pr.Code)
		}
		seen[code] = true
		if pr.Kind == PromotionAmountOff && pr.Currency != p.Currency.Code {
			return Quote{}, fmt.Errorf("quote: %w: %q is in %s, the plan in %s", ErrPromotionCurrency, pr.Code, pr.Currency, p.Currency.Code)
		}
	}
	applying := ApplyingPromotions(promos)
	if err := p.freeUnits(&q, usage, applying); err != nil {
		return Quote{}, err
	}
	for _, kind := range []string{PromotionAmountOff, PromotionPercentOff} {
		for _, pr := range applying {
			if pr.Kind != kind {
				continue
			}
			remaining := q.Subtotal.Sub(q.Discount)
			var off decimal.Decimal
			if kind == PromotionAmountOff {
				off = p.Currency.Round(pr.Value)
			} else {
				off = p.Currency.Round(remaining.Mul(pr.Value).Shift(-2))
			}
			q.discount(pr, "", decimal.Min(off, remaining))
		}
	}
	q.Total = q.Subtotal.Sub(q.Discount)
	return q, nil
}

// freeUnits adds the lines of the free_units promotions: what each saves
// by reducing its meter's quantity before rating.
func (p PlanTerms) freeUnits(q *Quote, usage map[string]decimal.Decimal, applying []Promotion) error {
	left := make(map[string]decimal.Decimal)
	for _, pr := range applying {
		if pr.Kind != PromotionFreeUnits {
			continue
		}
		i := slices.IndexFunc(p.Charges, func(c Charge) bool { return c.Meter == pr.Meter })
		if i < 0 {
			continue
		}
		c := p.Charges[i]
		metered, ok := left[c.Meter]
		if !ok {
			metered = usage[c.Meter]
		}
		reduced := decimal.Max(decimal.Zero, metered.Sub(pr.Value))
		_, full, err := c.Rate(metered, p.Currency)
		if err != nil {
			return fmt.Errorf("quote: %w", err)
		}
		_, less, err := c.Rate(reduced, p.Currency)
		if err != nil {
			return fmt.Errorf("quote: %w", err)
		}
		left[c.Meter] = reduced
		// Both totals are sums of rounded lines: their difference is in
		// minor units already, and never above what remains. It is below
		// zero when the reduced quantity falls into a dearer volume tier:
		// a discount never charges, so the line is then zero (as
		// BuildInvoice's).
		saved := decimal.Min(full.Sub(less), q.Subtotal.Sub(q.Discount))
		q.discount(pr, c.Meter, decimal.Max(decimal.Zero, saved))
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
