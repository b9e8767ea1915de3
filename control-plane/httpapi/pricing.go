package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// PromotionQuoter prices a quote with promotion codes: it resolves the
// codes for the plan (without redeeming them) and applies them to terms.
// A code that cannot be applied is a validation error naming it, the same
// whatever the reason.
type PromotionQuoter interface {
	QuoteWithCodes(ctx context.Context, planID uuid.UUID, terms metering.PlanTerms,
		usage map[string]decimal.Decimal, codes []string) (metering.Quote, error)
}

// Bounds of a quote request.
const (
	maxQuoteMeters = 100
	maxQuoteCodes  = 10
)

// usageRe is a quoted quantity: a decimal of at most 14 integer digits and
// 6 decimals, never negative or in exponent notation.
var usageRe = regexp.MustCompile(`^[0-9]{1,14}(\.[0-9]{1,6})?$`)

type quoteInput struct {
	// Usage is each meter's metered quantity for the period, by slug.
	Usage          map[string]string `json:"usage"`
	PromotionCodes []string          `json:"promotion_codes"`
	// Version quotes that version of the plan; absent or 0 the current one.
	Version int `json:"version"`
}

type quoteLine struct {
	Kind      string  `json:"kind"`
	Meter     *string `json:"meter"`
	Tier      *int    `json:"tier"`
	Quantity  string  `json:"quantity"`
	UnitPrice string  `json:"unit_price"`
	Amount    string  `json:"amount"`
	// Promotion is the code a discount line applies.
	Promotion *string `json:"promotion"`
}

type quoteAnswer struct {
	PlanID   uuid.UUID   `json:"plan_id"`
	Version  int         `json:"version"`
	Currency string      `json:"currency"`
	Lines    []quoteLine `json:"lines"`
	Subtotal string      `json:"subtotal"`
	Discount string      `json:"discount"`
	Total    string      `json:"total"`
}

// readQuote decodes and checks a quote request.
func readQuote(r *http.Request) (quoteInput, map[string]decimal.Decimal, error) {
	var in quoteInput
	if err := decode(r, &in); err != nil {
		return in, nil, err
	}
	var v validation.Error
	if in.Version < 0 || in.Version > 1_000_000 {
		v.Add("version", "must be a version number of the plan, or 0 for the current one")
	}
	if len(in.Usage) > maxQuoteMeters {
		v.Add("usage", "at most %d meters", maxQuoteMeters)
	}
	if len(in.PromotionCodes) > maxQuoteCodes {
		v.Add("promotion_codes", "at most %d codes", maxQuoteCodes)
	}
	if err := v.Err(); err != nil {
		return in, nil, err
	}
	slugs := make([]string, 0, len(in.Usage))
	for slug := range in.Usage {
		slugs = append(slugs, slug)
	}
	sort.Strings(slugs)
	usage := make(map[string]decimal.Decimal, len(in.Usage))
	for _, slug := range slugs {
		if !metering.MeterSlugRe.MatchString(slug) {
			v.Add("usage", "%.70q is not a meter slug", slug)
			continue
		}
		q := in.Usage[slug]
		if !usageRe.MatchString(q) {
			v.Add("usage."+slug, "must be a decimal string, zero or more and below 10^14, with at most 6 decimals")
			continue
		}
		usage[slug] = decimal.RequireFromString(q)
	}
	return in, usage, v.Err()
}

// quote prices one period of a plan's version for the usage asked about.
func (a *api) quote(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	in, usage, err := readQuote(r)
	if err != nil {
		return err
	}
	actor := actorFrom(r)
	terms, version, err := a.cfg.Subscriptions.QuoteTerms(r.Context(), actor, id, in.Version)
	if err != nil {
		return err
	}
	priced := make(map[string]bool, len(terms.Charges))
	for _, c := range terms.Charges {
		priced[c.Meter] = true
	}
	var v validation.Error
	for slug := range usage {
		if !priced[slug] {
			v.Add("usage."+slug, "the plan version does not price meter %q", slug)
		}
	}
	if err := v.Err(); err != nil {
		return err
	}
	var q metering.Quote
	switch {
	case len(in.PromotionCodes) == 0:
		q, err = terms.Quote(usage)
	case a.cfg.Promotions == nil:
		return validation.One("promotion_codes[0]", fmt.Sprintf("promotion code %.70q cannot be applied to this plan", in.PromotionCodes[0]))
	default:
		q, err = a.cfg.Promotions.QuoteWithCodes(r.Context(), id, terms, usage, in.PromotionCodes)
	}
	if errors.Is(err, metering.ErrBeyondTiers) {
		return validation.One("usage", err.Error())
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toQuoteAnswer(id, version, terms.Currency, q))
	return nil
}

// toQuoteAnswer writes amounts with exactly the currency's minor-unit
// decimals (JPY 0, USD 2, KWD 3), quantities and unit prices as they are.
func toQuoteAnswer(planID uuid.UUID, version int, cur metering.Currency, q metering.Quote) quoteAnswer {
	money := cur.Format
	out := quoteAnswer{
		PlanID: planID, Version: version, Currency: cur.Code, Lines: make([]quoteLine, 0, len(q.Lines)),
		Subtotal: money(q.Subtotal), Discount: money(q.Discount), Total: money(q.Total),
	}
	for _, l := range q.Lines {
		ql := quoteLine{Kind: l.Kind, Quantity: l.Quantity.String(), UnitPrice: l.UnitPrice.String(), Amount: money(l.Amount)}
		if l.Meter != "" {
			ql.Meter = &l.Meter
		}
		if l.Tier > 0 {
			ql.Tier = &l.Tier
		}
		if l.Promotion != "" {
			ql.Promotion = &l.Promotion
		}
		out.Lines = append(out.Lines, ql)
	}
	return out
}
