package planfiles

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

var (
	apiSlugRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)
	planSlugRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	currencyRe = regexp.MustCompile(`^[A-Z]{3}$`)

	// The base fee's column is numeric(20, 6).
	maxAmount = decimal.New(1, 14)
)

// validate checks the decoded plan: the plan's own fields, its meters by
// metering.Meter.Validate, its charges and its type by the REST API's rules
// (control-plane/pricing), so a file and a request are held to the same.
func (d *decoder) validate() {
	p := d.plan
	req := func(field, value string, re *regexp.Regexp) {
		if value == "" {
			d.failAt(field, "is required")
		} else if !re.MatchString(value) {
			d.failAt(field, "must match %s", re)
		}
	}
	req("api", p.API, apiSlugRe)
	req("plan", p.Slug, planSlugRe)
	if n := utf8.RuneCountInString(strings.TrimSpace(p.Name)); n == 0 || n > 200 {
		d.failAt("name", "must be 1 to 200 characters")
	}
	p.Name = strings.TrimSpace(p.Name)
	if utf8.RuneCountInString(p.Description) > 5000 {
		d.failAt("description", "must be at most 5000 characters")
	}
	oneOf := func(field, value string, allowed ...string) {
		for _, a := range allowed {
			if value == a {
				return
			}
		}
		d.failAt(field, "must be %s", strings.Join(allowed, ", "))
	}
	oneOf("status", p.Status, "draft", "active", "archived")
	oneOf("type", p.Type, "usage_based", "subscription", "freemium", "hybrid")
	oneOf("interval", p.Interval, "month", "year")
	if !currencyRe.MatchString(p.Currency) {
		d.failAt("currency", "must be an ISO 4217 code such as USD")
	} else if _, err := metering.CurrencyOf(p.Currency); err != nil {
		d.failAt("currency", "%s is not a currency Veil prices in", p.Currency)
	}
	d.amount("base_fee", p.BaseFee, maxAmount, 6)
	d.validateCharges(d.validateMeters())
}

// amount checks a decimal against a column: zero or more, below max, at
// most scale decimals.
func (d *decoder) amount(field string, v decimal.Decimal, max decimal.Decimal, scale int32) {
	switch {
	case v.IsNegative():
		d.failAt(field, "must be zero or more")
	case v.GreaterThanOrEqual(max):
		d.failAt(field, "must be below %s", max)
	case v.Exponent() < -scale && !v.Equal(v.Truncate(scale)):
		d.failAt(field, "at most %d decimals", scale)
	}
}

func (d *decoder) validateMeters() map[string]bool {
	slugs := map[string]bool{}
	for i, m := range d.plan.Meters {
		path := fmt.Sprintf("meters[%d]", i)
		if err := m.Validate(); err != nil {
			field, msg := meterField(err)
			d.failAt(join(path, field), "%s", msg)
			continue
		}
		if slugs[m.Slug] {
			d.failAt(path+".slug", "meter %q is defined twice", m.Slug)
		}
		slugs[m.Slug] = true
	}
	return slugs
}

// meterField splits metering.Meter.Validate's "invalid meter: field:
// message" into its field and message.
func meterField(err error) (field, msg string) {
	s := strings.TrimPrefix(err.Error(), metering.ErrInvalidMeter.Error()+": ")
	field, msg, ok := strings.Cut(s, ": ")
	if !ok {
		return "", s
	}
	return field, msg
}

// validateCharges checks the charges by the rules of the REST API
// (pricing.ValidateCharges, pricing.ValidateType), and that each charges a
// meter the file defines.
func (d *decoder) validateCharges(meters map[string]bool) {
	p := d.plan
	for i, c := range p.Charges {
		if c.Meter != "" && !meters[c.Meter] {
			d.failAt(fmt.Sprintf("charges[%d].meter", i), "meter %q is not defined under meters", c.Meter)
		}
	}
	var v validation.Error
	pricing.ValidateCharges(&v, "charges", p.Charges)
	pricing.ValidateType(&v, "", p.Type, p.BaseFee, p.Charges)
	for _, f := range v.Fields {
		field := strings.TrimPrefix(f.Field, ".")
		if field == "charges" && len(p.Charges) == 0 {
			// No charges key to point at: the type is what is wrong.
			field = "type"
		}
		d.failAt(field, "%s", f.Detail)
	}
}
