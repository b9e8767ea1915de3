package planfiles

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/metering"
)

var (
	apiSlugRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)
	planSlugRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	currencyRe = regexp.MustCompile(`^[A-Z]{3}$`)

	// The columns' bounds: amounts and units are numeric(20, 6), unit
	// prices numeric(24, 12).
	maxAmount    = decimal.New(1, 14)
	maxUnitPrice = decimal.New(1, 12)
)

// validate checks the decoded plan: the plan's own fields, its meters by
// metering.Meter.Validate, its charges by the rules of the columns and by
// metering.Charge.Validate, and that its type matches what it charges.
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
	meters := d.validateMeters()
	d.validateCharges(meters)
	d.validateType()
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

func (d *decoder) validateCharges(meters map[string]bool) {
	seen := map[string]bool{}
	for i, c := range d.plan.Charges {
		path := fmt.Sprintf("charges[%d]", i)
		before := len(d.errs)
		switch {
		case c.Meter == "":
			d.failAt(path+".meter", "is required")
		case !meters[c.Meter]:
			d.failAt(path+".meter", "meter %q is not defined under meters", c.Meter)
		case seen[c.Meter]:
			d.failAt(path+".meter", "meter %q is charged twice", c.Meter)
		}
		seen[c.Meter] = true
		d.amount(path+".included_units", c.IncludedUnits, maxAmount, 6)
		if c.Quota != nil {
			d.amount(path+".quota", *c.Quota, maxAmount, 6)
		}
		d.validateModel(path, c)
		if len(d.errs) > before {
			continue
		}
		// The engine's own check backs the rules above: a charge it could
		// not rate never reaches the database.
		if err := c.Rating().Validate(); err != nil {
			d.failAt(path, "%s", strings.TrimPrefix(err.Error(), metering.ErrInvalidCharge.Error()+": "))
		}
	}
}

func (d *decoder) validateModel(path string, c Charge) {
	untiered := c.Model == metering.ModelPerUnit || c.Model == metering.ModelPackage
	switch c.Model {
	case metering.ModelPerUnit, metering.ModelPackage, metering.ModelGraduated, metering.ModelVolume:
	case "":
		d.failAt(path+".model", "is required: per_unit, graduated, volume or package")
		return
	default:
		d.failAt(path+".model", "must be per_unit, graduated, volume or package")
		return
	}
	if untiered {
		if c.UnitPrice == nil {
			d.failAt(path+".unit_price", "is required for %s", c.Model)
		} else {
			d.amount(path+".unit_price", *c.UnitPrice, maxUnitPrice, 12)
		}
		if c.Tiers != nil {
			d.failAt(path+".tiers", "%s takes no tiers", c.Model)
		}
	} else {
		if c.UnitPrice != nil {
			d.failAt(path+".unit_price", "%s prices by its tiers: put unit_price on each tier", c.Model)
		}
		d.validateTiers(path+".tiers", c.Tiers)
	}
	switch {
	case c.Model == metering.ModelPackage && c.PackageSize == nil:
		d.failAt(path+".package_size", "is required for package")
	case c.Model == metering.ModelPackage:
		if !c.PackageSize.IsPositive() {
			d.failAt(path+".package_size", "must be above zero")
		} else {
			d.amount(path+".package_size", *c.PackageSize, maxAmount, 6)
		}
	case c.PackageSize != nil:
		d.failAt(path+".package_size", "only package charges have a package size")
	}
}

func (d *decoder) validateTiers(path string, tiers []metering.Tier) {
	if len(tiers) == 0 {
		d.failAt(path, "a tiered charge needs at least one tier")
		return
	}
	prev := decimal.Zero
	for i, t := range tiers {
		field := fmt.Sprintf("%s[%d]", path, i)
		d.amount(field+".unit_price", t.UnitPrice, maxUnitPrice, 12)
		d.amount(field+".flat_amount", t.Flat, maxAmount, 6)
		if t.Unbounded {
			if i != len(tiers)-1 {
				d.failAt(field+".up_to", "only the last tier may be unlimited")
			}
			continue
		}
		if !t.UpTo.GreaterThan(prev) {
			d.failAt(field+".up_to", "must rise above %s", prev)
			continue
		}
		d.amount(field+".up_to", t.UpTo, maxAmount, 6)
		prev = t.UpTo
	}
}

// errTypeMismatch is the reason of the type rules, for the message.
var errTypeMismatch = errors.New("contradicts the plan's charges")

// validateType holds the plan's type to what it charges: usage_based
// charges usage and no base fee; subscription a base fee and no usage;
// freemium charges usage above something free (included units, or a
// first tier priced at zero) and no base fee; hybrid both a base fee and
// usage.
func (d *decoder) validateType() {
	p := d.plan
	charges, fee := len(p.Charges) > 0, p.BaseFee.IsPositive()
	bad := func(field, msg string) { d.failAt(field, "%v: %s", errTypeMismatch, msg) }
	switch p.Type {
	case "usage_based":
		if !charges {
			bad("type", "a usage_based plan needs charges")
		}
		if fee {
			bad("base_fee", "a usage_based plan has no base fee (make it hybrid)")
		}
	case "subscription":
		if charges {
			bad("type", "a subscription plan charges no usage (make it hybrid)")
		}
	case "freemium":
		if fee {
			bad("base_fee", "a freemium plan has no base fee")
		}
		if !charges || !p.hasFreeAllowance() {
			bad("type", "a freemium plan charges usage above free units: give a charge included_units or a first tier at price 0")
		}
	case "hybrid":
		if !fee || !charges {
			bad("type", "a hybrid plan has both a base fee and charges")
		}
	}
}

func (p *Plan) hasFreeAllowance() bool {
	for _, c := range p.Charges {
		if c.IncludedUnits.IsPositive() {
			return true
		}
		if len(c.Tiers) > 0 && c.Tiers[0].UnitPrice.IsZero() && c.Tiers[0].Flat.IsZero() {
			return true
		}
	}
	return false
}
