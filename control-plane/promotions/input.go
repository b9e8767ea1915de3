package promotions

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// Bounds of a promotion's input, within its columns.
const (
	maxPlans       = 100
	maxLimit       = 1_000_000_000
	maxPriority    = 1000
	maxPeriods     = 120
	maxTrialDays   = 365
	maxDescription = 5000
	// MaxCodes bounds the codes of one quote or subscription.
	MaxCodes = 10
)

var (
	codeRe = regexp.MustCompile(`^[A-Za-z0-9_-]{3,64}$`)
	// maxValue bounds a value: the column is numeric(20, 6).
	maxValue = decimal.New(1, 14)
)

// PromotionInput creates a promotion.
type PromotionInput struct {
	Code        string          `json:"code"`
	Description string          `json:"description"`
	Kind        string          `json:"kind"`
	Value       decimal.Decimal `json:"value"`
	// Currency is required for amount_off, refused for the other kinds.
	Currency *string `json:"currency"`
	// Meter is the slug of the meter whose units free_units makes free.
	Meter *string `json:"meter"`
	// Duration is once (default), repeating or forever.
	Duration        string `json:"duration"`
	DurationPeriods *int   `json:"duration_periods"`
	// ValidFrom defaults to now.
	ValidFrom      *time.Time `json:"valid_from"`
	ValidUntil     *time.Time `json:"valid_until"`
	MaxRedemptions *int       `json:"max_redemptions"`
	MaxPerCustomer *int       `json:"max_per_customer"`
	Priority       int        `json:"priority"`
	Stackable      bool       `json:"stackable"`
	// Enabled defaults to true.
	Enabled *bool       `json:"enabled"`
	PlanIDs []uuid.UUID `json:"plan_ids"`
}

// Validate checks in, filling defaults (now is ValidFrom's).
func (in *PromotionInput) Validate(now time.Time) error {
	var v validation.Error
	if !codeRe.MatchString(in.Code) {
		v.Add("code", "must be 3 to 64 letters, digits, _ or -")
	}
	if utf8.RuneCountInString(in.Description) > maxDescription {
		v.Add("description", "must be at most %d characters", maxDescription)
	}
	in.validateValue(&v)
	if in.Duration == "" {
		in.Duration = DurationOnce
	}
	switch in.Duration {
	case DurationRepeating:
		if in.DurationPeriods == nil || *in.DurationPeriods < 1 || *in.DurationPeriods > maxPeriods {
			v.Add("duration_periods", "must be 1 to %d for a repeating promotion", maxPeriods)
		}
	case DurationOnce, DurationForever:
		if in.DurationPeriods != nil {
			v.Add("duration_periods", "is only for a repeating promotion")
		}
	default:
		v.Add("duration", "must be once, repeating or forever")
	}
	if in.ValidFrom == nil {
		in.ValidFrom = &now
	}
	if in.ValidUntil != nil && !in.ValidUntil.After(*in.ValidFrom) {
		v.Add("valid_until", "must be after valid_from")
	}
	limit(&v, "max_redemptions", in.MaxRedemptions)
	limit(&v, "max_per_customer", in.MaxPerCustomer)
	if in.Priority < -maxPriority || in.Priority > maxPriority {
		v.Add("priority", "must be -%d to %d", maxPriority, maxPriority)
	}
	if in.Enabled == nil {
		enabled := true
		in.Enabled = &enabled
	}
	planIDs(&v, in.PlanIDs)
	return v.Err()
}

// validateValue checks the kind, its value and what the kind needs: the
// kinds' rules are metering.Promotion.Validate's, the bounds of the columns
// and of what Veil knows (currencies, meter slugs, a year of trial) are
// checked here.
func (in *PromotionInput) validateValue(v *validation.Error) {
	value := in.Value
	// Sane first: the comparisons after it would rescale a huge exponent.
	if !validation.Sane(value) || value.Exponent() < -6 || value.GreaterThanOrEqual(maxValue) {
		v.Add("value", "must be above zero and below 10^14, with at most 6 decimals")
		return
	}
	p := metering.Promotion{Code: in.Code, Kind: in.Kind, Value: value, Currency: deref(in.Currency), Meter: deref(in.Meter)}
	var pe *metering.PromotionError
	if err := p.Validate(); errors.As(err, &pe) {
		v.Add(pe.Field, "%s", pe.Detail)
	}
	switch {
	case in.Kind == metering.PromotionAmountOff && in.Currency != nil:
		cur, err := metering.CurrencyOf(*in.Currency)
		if err != nil {
			v.Add("currency", "must be an ISO 4217 code Veil prices in, such as USD")
		} else if !value.Equal(cur.Round(value)) {
			v.Add("value", "must have at most %d decimals in %s", cur.Exponent, cur.Code)
		}
	case in.Kind == metering.PromotionFreeUnits && in.Meter != nil:
		if !metering.MeterSlugRe.MatchString(*in.Meter) {
			v.Add("meter", "is required for free_units: a meter's slug")
		}
	case in.Kind == metering.PromotionTrialExtension:
		if value.GreaterThan(decimal.NewFromInt(maxTrialDays)) {
			v.Add("value", "must be a whole number of days, at most %d", maxTrialDays)
		}
	}
	if in.Currency != nil && in.Kind != metering.PromotionAmountOff {
		v.Add("currency", "is only for amount_off")
	}
	if in.Meter != nil && in.Kind != metering.PromotionFreeUnits {
		v.Add("meter", "is only for free_units")
	}
}

func limit(v *validation.Error, field string, n *int) {
	if n != nil && (*n < 1 || *n > maxLimit) {
		v.Add(field, "must be 1 to %d, or null for no limit", maxLimit)
	}
}

func planIDs(v *validation.Error, ids []uuid.UUID) {
	if len(ids) > maxPlans {
		v.Add("plan_ids", "must list at most %d plans", maxPlans)
		return
	}
	seen := make(map[uuid.UUID]bool, len(ids))
	for i, id := range ids {
		if seen[id] || id == uuid.Nil {
			v.Add("plan_ids["+strconv.Itoa(i)+"]", "must be a plan id listed once")
		}
		seen[id] = true
	}
}

// Optional is a member of a patch that may be left out, set, or set to
// null: Set reports whether it was given, Value is nil for null.
type Optional[T any] struct {
	Set   bool
	Value *T
}

// UnmarshalJSON records that the member was given.
func (o *Optional[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if bytes.Equal(b, []byte("null")) {
		o.Value = nil
		return nil
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	o.Value = &v
	return nil
}

// PromotionPatch changes what may change of a promotion (see the package
// doc); members left out stay.
type PromotionPatch struct {
	Description *string `json:"description"`
	Enabled     *bool   `json:"enabled"`
	// ValidUntil null: no end.
	ValidUntil Optional[time.Time] `json:"valid_until"`
	// MaxRedemptions and MaxPerCustomer null: no limit.
	MaxRedemptions Optional[int] `json:"max_redemptions"`
	MaxPerCustomer Optional[int] `json:"max_per_customer"`
	PlanIDs        *[]uuid.UUID  `json:"plan_ids"`
}

// apply validates p against before and returns the promotion it makes.
func (p PromotionPatch) apply(before Promotion) (Promotion, error) {
	var v validation.Error
	after := before
	if p.Description != nil {
		after.Description = *p.Description
		if utf8.RuneCountInString(after.Description) > maxDescription {
			v.Add("description", "must be at most %d characters", maxDescription)
		}
	}
	if p.Enabled != nil {
		after.Enabled = *p.Enabled
	}
	if p.ValidUntil.Set {
		after.ValidUntil = p.ValidUntil.Value
		if after.ValidUntil != nil && !after.ValidUntil.After(after.ValidFrom) {
			v.Add("valid_until", "must be after valid_from")
		}
	}
	for _, l := range []struct {
		field string
		patch Optional[int]
		dst   **int
	}{{"max_redemptions", p.MaxRedemptions, &after.MaxRedemptions}, {"max_per_customer", p.MaxPerCustomer, &after.MaxPerCustomer}} {
		if !l.patch.Set {
			continue
		}
		limit(&v, l.field, l.patch.Value)
		old := *l.dst
		*l.dst = l.patch.Value
		// Once redeemed, a limit only rises: customers may hold on to
		// what it allowed when they redeemed.
		if before.Redemptions > 0 && l.patch.Value != nil && (old == nil || *l.patch.Value < *old) {
			v.Add(l.field, "may only rise (or be null for no limit) once the promotion is redeemed")
		}
	}
	if after.MaxRedemptions != nil && *after.MaxRedemptions < before.Redemptions {
		v.Add("max_redemptions", "must be at least the %d redemptions made", before.Redemptions)
	}
	if p.PlanIDs != nil {
		// An empty list would make the promotion apply to every plan of
		// the provider; a patch narrows or moves it, never widens it so.
		if len(*p.PlanIDs) == 0 {
			v.Add("plan_ids", "must list at least one plan (leave it out or null to keep the plans)")
		}
		planIDs(&v, *p.PlanIDs)
		after.PlanIDs = *p.PlanIDs
	}
	return after, v.Err()
}

// codeKey is how codes compare: case-insensitively.
func codeKey(code string) string { return strings.ToLower(code) }
