package pricing

import (
	"fmt"
	"strings"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// Bounds of a version's charges: the column scales of plan_version_charges
// and charge_tiers (units and amounts numeric(20, 6), unit prices
// numeric(24, 12)) and counts that keep a version's terms small.
const (
	MaxCharges     = 50
	MaxTiers       = 20
	unitsScale     = 6
	unitPriceScale = 12
)

var (
	maxUnits     = decimal.New(1, 14) // below 10^14: numeric(20, 6)
	maxUnitPrice = decimal.New(1, 12) // below 10^12: numeric(24, 12)
	// maxQuota bounds a charge's quota: at a units meter's scale (micro-
	// units) it stays below enforcement.MaxMeterQuota, 2^53-1, up to which
	// the gateway's counting script compares a quota exactly.
	maxQuota = decimal.New(9, 9)
)

// Tier is one step of a graduated or volume charge, as the API shows and
// takes it.
type Tier struct {
	// UpTo is the tier's inclusive upper bound on the billable quantity;
	// null is unbounded (the last tier only).
	UpTo       *decimal.Decimal `json:"up_to"`
	UnitPrice  decimal.Decimal  `json:"unit_price"`
	FlatAmount decimal.Decimal  `json:"flat_amount"`
}

// Charge is how a plan version prices one meter of its API, as the API
// shows and takes it.
type Charge struct {
	// Meter is the slug of a meter of the plan's API.
	Meter         string               `json:"meter"`
	Model         metering.ChargeModel `json:"model"`
	IncludedUnits decimal.Decimal      `json:"included_units"`
	// UnitPrice is the price of a unit (per_unit) or of a package
	// (package); null for the tiered models.
	UnitPrice *decimal.Decimal `json:"unit_price"`
	// PackageSize is the units in a package; package only.
	PackageSize *decimal.Decimal `json:"package_size"`
	Tiers       []Tier           `json:"tiers"`
	// Quota bounds the meter per period; null is unlimited.
	Quota *decimal.Decimal `json:"quota"`
	// QuotaHard blocks the subscription once the quota is reached; false
	// bills what lies over it.
	QuotaHard bool `json:"quota_hard"`
}

// Rating is the charge as metering rates it.
func (c Charge) Rating() metering.Charge {
	out := metering.Charge{Meter: c.Meter, Model: c.Model, Included: c.IncludedUnits}
	if c.UnitPrice != nil {
		out.UnitPrice = *c.UnitPrice
	}
	if c.PackageSize != nil {
		out.PackageSize = *c.PackageSize
	}
	for _, t := range c.Tiers {
		mt := metering.Tier{UnitPrice: t.UnitPrice, Flat: t.FlatAmount, Unbounded: t.UpTo == nil}
		if t.UpTo != nil {
			mt.UpTo = *t.UpTo
		}
		out.Tiers = append(out.Tiers, mt)
	}
	return out
}

// within reports whether d is zero or more, below max (at most 10^14),
// with at most scale decimals: what its column holds.
func within(d decimal.Decimal, scale int32, max decimal.Decimal) bool {
	return validation.Sane(d) && d.Exponent() >= -scale && !d.IsNegative() && d.LessThan(max)
}

// ValidateCharges checks a version's charges on their own (the meters'
// existence needs the database: WriteCharges checks it), naming each wrong
// field under prefix (e.g. "terms.charges").
func ValidateCharges(v *validation.Error, prefix string, charges []Charge) {
	if len(charges) > MaxCharges {
		v.Add(prefix, "at most %d charges", MaxCharges)
		return
	}
	seen := make(map[string]bool, len(charges))
	for i, c := range charges {
		at := fmt.Sprintf("%s[%d]", prefix, i)
		before := len(v.Fields)
		switch {
		case !metering.MeterSlugRe.MatchString(c.Meter):
			v.Add(at+".meter", "must be the slug of a meter of the plan's API")
		case seen[c.Meter]:
			v.Add(at+".meter", "meter %q is charged twice; one charge per meter", c.Meter)
		}
		seen[c.Meter] = true
		if !within(c.IncludedUnits, unitsScale, maxUnits) {
			v.Add(at+".included_units", "must be zero or more and below 10^14, with at most 6 decimals")
		}
		if c.Quota != nil && (!c.Quota.IsPositive() || !within(*c.Quota, unitsScale, maxUnits) || c.Quota.GreaterThan(maxQuota)) {
			v.Add(at+".quota", "must be above zero and at most 9000000000, with at most 6 decimals, or null for unlimited")
		}
		if c.Quota == nil && c.QuotaHard {
			v.Add(at+".quota_hard", "a hard quota needs a quota")
		}
		validateModel(v, at, c)
		if len(v.Fields) > before {
			continue
		}
		// The rating engine's own check, which the fields above already
		// cover; kept so that nothing it refuses is ever stored.
		if err := c.Rating().Validate(); err != nil {
			v.Add(at, "%s", strings.TrimPrefix(err.Error(), metering.ErrInvalidCharge.Error()+": "))
		}
	}
}

func validateModel(v *validation.Error, at string, c Charge) {
	untiered := c.Model == metering.ModelPerUnit || c.Model == metering.ModelPackage
	switch c.Model {
	case metering.ModelPerUnit, metering.ModelPackage, metering.ModelGraduated, metering.ModelVolume:
	default:
		v.Add(at+".model", "must be per_unit, graduated, volume or package")
		return
	}
	switch {
	case untiered && c.UnitPrice == nil:
		v.Add(at+".unit_price", "%s needs a unit price", c.Model)
	case !untiered && c.UnitPrice != nil:
		v.Add(at+".unit_price", "%s prices by its tiers; leave unit_price null", c.Model)
	case c.UnitPrice != nil && !within(*c.UnitPrice, unitPriceScale, maxUnitPrice):
		v.Add(at+".unit_price", "must be zero or more and below 10^12, with at most 12 decimals")
	}
	switch {
	case c.Model == metering.ModelPackage && c.PackageSize == nil:
		v.Add(at+".package_size", "package needs a package size")
	case c.Model != metering.ModelPackage && c.PackageSize != nil:
		v.Add(at+".package_size", "only package takes a package size")
	case c.PackageSize != nil && (!c.PackageSize.IsPositive() || !within(*c.PackageSize, unitsScale, maxUnits)):
		v.Add(at+".package_size", "must be above zero and below 10^14, with at most 6 decimals")
	}
	if untiered {
		if len(c.Tiers) > 0 {
			v.Add(at+".tiers", "%s takes no tiers", c.Model)
		}
		return
	}
	validateTiers(v, at, c.Tiers)
}

func validateTiers(v *validation.Error, at string, tiers []Tier) {
	if len(tiers) == 0 || len(tiers) > MaxTiers {
		v.Add(at+".tiers", "a tiered charge needs 1 to %d tiers", MaxTiers)
		return
	}
	prev := decimal.Zero
	for j, t := range tiers {
		tat := fmt.Sprintf("%s.tiers[%d]", at, j)
		switch {
		case t.UpTo == nil && j != len(tiers)-1:
			v.Add(tat+".up_to", "only the last tier may be unbounded (null)")
		case t.UpTo != nil && !within(*t.UpTo, unitsScale, maxUnits):
			v.Add(tat+".up_to", "must be below 10^14, with at most 6 decimals")
		case t.UpTo != nil && !t.UpTo.GreaterThan(prev):
			v.Add(tat+".up_to", "must rise above %s", prev)
		}
		if t.UpTo != nil {
			prev = *t.UpTo
		}
		if !within(t.UnitPrice, unitPriceScale, maxUnitPrice) {
			v.Add(tat+".unit_price", "must be zero or more and below 10^12, with at most 12 decimals")
		}
		if !within(t.FlatAmount, unitsScale, maxUnits) {
			v.Add(tat+".flat_amount", "must be zero or more and below 10^14, with at most 6 decimals")
		}
	}
}

// The plan types.
const (
	TypeUsageBased   = "usage_based"
	TypeSubscription = "subscription"
	TypeFreemium     = "freemium"
	TypeHybrid       = "hybrid"
)

// ValidateType checks that a version's base fee and charges are what its
// type says it charges, so that the type never contradicts the price:
//
//   - subscription: the base fee only; no charges (a fee plus usage is
//     hybrid);
//   - usage_based: usage only; no base fee, at least one charge;
//   - hybrid: both; a base fee above zero and at least one charge;
//   - freemium: free to enter; no base fee, and every charge gives part of
//     its meter free: included units above zero, or a first tier priced
//     zero with no flat amount. A freemium version without charges is a
//     free plan bounded by its limits.
//
// Fields are named under prefix (e.g. "terms").
func ValidateType(v *validation.Error, prefix, typ string, baseFee decimal.Decimal, charges []Charge) {
	switch typ {
	case TypeSubscription:
		if len(charges) > 0 {
			v.Add(prefix+".charges", "a subscription plan charges its base fee only; a fee plus usage is a hybrid plan")
		}
	case TypeUsageBased:
		if baseFee.IsPositive() {
			v.Add(prefix+".base_fee", "a usage_based plan has no base fee; a fee plus usage is a hybrid plan")
		}
		if len(charges) == 0 {
			v.Add(prefix+".charges", "a usage_based plan needs at least one charge")
		}
	case TypeHybrid:
		if !baseFee.IsPositive() {
			v.Add(prefix+".base_fee", "a hybrid plan has a base fee above zero; usage alone is a usage_based plan")
		}
		if len(charges) == 0 {
			v.Add(prefix+".charges", "a hybrid plan needs at least one charge; a base fee alone is a subscription plan")
		}
	case TypeFreemium:
		if baseFee.IsPositive() {
			v.Add(prefix+".base_fee", "a freemium plan has no base fee")
		}
		for i, c := range charges {
			if !freeAllowance(c) {
				v.Add(fmt.Sprintf("%s.charges[%d]", prefix, i),
					"a freemium charge gives part of its meter free: included_units above zero, or a first tier with unit_price 0 and flat_amount 0")
			}
		}
	}
}

func freeAllowance(c Charge) bool {
	if c.IncludedUnits.IsPositive() {
		return true
	}
	if (c.Model == metering.ModelGraduated || c.Model == metering.ModelVolume) && len(c.Tiers) > 0 {
		return c.Tiers[0].UnitPrice.IsZero() && c.Tiers[0].FlatAmount.IsZero()
	}
	return false
}
