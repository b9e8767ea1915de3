package metering

// The rating engine: what one charge of a plan version costs for a metered
// quantity. The semantics are fixed so that anyone can check a price by
// hand:
//
//   - billable = max(0, metered − included units);
//   - a tier's bound is an inclusive upper bound on the billable quantity;
//     the last tier may be unbounded;
//   - per_unit: billable × unit price, one line;
//   - package: ceil(billable / package size) packages × the price of a
//     package, one line;
//   - graduated: each unit at the price of its own tier, one line per tier
//     the quantity reaches, each adding that tier's flat amount;
//   - volume: every unit at the price of the tier that holds the whole
//     quantity, plus that tier's flat amount, one line;
//   - a billable quantity of zero reaches no tier: no line, nothing owed
//     (flat amounts included);
//   - each line is rounded once to the currency's minor unit, half away
//     from zero, and the charge's amount is the sum of its rounded lines.
//
// All arithmetic is exact (shopspring/decimal); nothing passes through a
// float.

import (
	"errors"
	"fmt"

	"github.com/shopspring/decimal"
)

// ChargeModel is how a charge turns a billable quantity into money.
type ChargeModel string

// The charge models.
const (
	ModelPerUnit   ChargeModel = "per_unit"
	ModelGraduated ChargeModel = "graduated"
	ModelVolume    ChargeModel = "volume"
	ModelPackage   ChargeModel = "package"
)

var (
	// ErrInvalidCharge wraps every reason a charge cannot be rated.
	ErrInvalidCharge = errors.New("invalid charge")
	// ErrBeyondTiers means the billable quantity is above the last tier's
	// bound and no tier is unbounded: the plan does not price it.
	ErrBeyondTiers = errors.New("quantity beyond the last tier")
	// ErrNegativeQuantity means a metered quantity below zero.
	ErrNegativeQuantity = errors.New("negative metered quantity")
)

// Tier is one step of a graduated or volume charge.
type Tier struct {
	// UpTo is the tier's inclusive upper bound on the billable quantity;
	// ignored when Unbounded.
	UpTo decimal.Decimal
	// Unbounded marks a last tier without an upper bound.
	Unbounded bool
	// UnitPrice is the price of one unit in this tier.
	UnitPrice decimal.Decimal
	// Flat is added once when the tier is reached (graduated) or holds the
	// quantity (volume).
	Flat decimal.Decimal
}

// Charge is how a plan version prices one meter.
type Charge struct {
	Meter string
	Model ChargeModel
	// Included units are free; only what lies above them is billable.
	Included decimal.Decimal
	// UnitPrice is the price of a unit (per_unit) or of a package
	// (package); unused by the tiered models.
	UnitPrice decimal.Decimal
	// PackageSize is the number of units in a package (package only).
	PackageSize decimal.Decimal
	// Tiers, in rising order of bound (graduated and volume only).
	Tiers []Tier
}

// Line is one priced line of a charge.
type Line struct {
	Meter string
	// Tier is the 1-based tier the line prices; 0 for untiered models.
	Tier int
	// Quantity is what the line prices: units, or packages for package.
	Quantity  decimal.Decimal
	UnitPrice decimal.Decimal
	// Flat is the tier's flat amount included in Amount.
	Flat decimal.Decimal
	// Amount is Quantity × UnitPrice + Flat, rounded once to the
	// currency's minor unit.
	Amount decimal.Decimal
}

// Validate reports whether c can be rated.
func (c Charge) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: meter %q: %s", ErrInvalidCharge, c.Meter, fmt.Sprintf(format, a...))
	}
	if c.Included.IsNegative() {
		return bad("included units %s below zero", c.Included)
	}
	switch c.Model {
	case ModelPerUnit, ModelPackage:
		if c.UnitPrice.IsNegative() {
			return bad("unit price %s below zero", c.UnitPrice)
		}
		if c.Model == ModelPackage && !c.PackageSize.IsPositive() {
			return bad("package size %s not above zero", c.PackageSize)
		}
		if len(c.Tiers) > 0 {
			return bad("%s takes no tiers", c.Model)
		}
	case ModelGraduated, ModelVolume:
		return validateTiers(c.Tiers, bad)
	default:
		return bad("unknown model %q", c.Model)
	}
	return nil
}

func validateTiers(tiers []Tier, bad func(string, ...any) error) error {
	if len(tiers) == 0 {
		return bad("a tiered charge needs tiers")
	}
	prev := decimal.Zero
	for i, t := range tiers {
		if t.UnitPrice.IsNegative() || t.Flat.IsNegative() {
			return bad("tier %d: price or flat amount below zero", i+1)
		}
		if t.Unbounded {
			if i != len(tiers)-1 {
				return bad("tier %d: only the last tier may be unbounded", i+1)
			}
			continue
		}
		if !t.UpTo.GreaterThan(prev) {
			return bad("tier %d: bound %s does not rise above %s", i+1, t.UpTo, prev)
		}
		prev = t.UpTo
	}
	return nil
}

// Billable is the part of metered that the charge prices: what lies above
// the included units, never below zero.
func (c Charge) Billable(metered decimal.Decimal) decimal.Decimal {
	b := metered.Sub(c.Included)
	if b.IsNegative() {
		return decimal.Zero
	}
	return b
}

// Rate prices metered units of c's meter in cur: its lines (none when
// nothing is billable) and their sum.
func (c Charge) Rate(metered decimal.Decimal, cur Currency) (lines []Line, total decimal.Decimal, err error) {
	if metered.IsNegative() {
		return nil, decimal.Zero, fmt.Errorf("rate meter %q: %w: %s", c.Meter, ErrNegativeQuantity, metered)
	}
	if err := c.Validate(); err != nil {
		return nil, decimal.Zero, err
	}
	billable := c.Billable(metered)
	if billable.IsZero() {
		return nil, decimal.Zero, nil
	}
	switch c.Model {
	case ModelPerUnit:
		lines = []Line{c.line(cur, 0, billable, c.UnitPrice, decimal.Zero)}
	case ModelPackage:
		// QuoRem is exact (Div would round to DivisionPrecision places):
		// a started package is a whole one.
		packages, rest := billable.QuoRem(c.PackageSize, 0)
		if rest.IsPositive() {
			packages = packages.Add(decimal.NewFromInt(1))
		}
		lines = []Line{c.line(cur, 0, packages, c.UnitPrice, decimal.Zero)}
	case ModelGraduated:
		lines, err = c.graduated(billable, cur)
	case ModelVolume:
		lines, err = c.volume(billable, cur)
	}
	if err != nil {
		return nil, decimal.Zero, fmt.Errorf("rate meter %q: %w", c.Meter, err)
	}
	total = decimal.Zero
	for _, l := range lines {
		total = total.Add(l.Amount)
	}
	return lines, total, nil
}

// graduated prices each part of billable at its own tier.
func (c Charge) graduated(billable decimal.Decimal, cur Currency) ([]Line, error) {
	lines := make([]Line, 0, len(c.Tiers))
	lower := decimal.Zero
	for i, t := range c.Tiers {
		upper := billable
		if !t.Unbounded && t.UpTo.LessThan(billable) {
			upper = t.UpTo
		}
		lines = append(lines, c.line(cur, i+1, upper.Sub(lower), t.UnitPrice, t.Flat))
		if upper.Equal(billable) {
			return lines, nil
		}
		lower = upper
	}
	return nil, fmt.Errorf("%w: %s above %s", ErrBeyondTiers, billable, lower)
}

// volume prices all of billable at the tier that holds it.
func (c Charge) volume(billable decimal.Decimal, cur Currency) ([]Line, error) {
	for i, t := range c.Tiers {
		if t.Unbounded || billable.LessThanOrEqual(t.UpTo) {
			return []Line{c.line(cur, i+1, billable, t.UnitPrice, t.Flat)}, nil
		}
	}
	return nil, fmt.Errorf("%w: %s above %s", ErrBeyondTiers, billable, c.Tiers[len(c.Tiers)-1].UpTo)
}

func (c Charge) line(cur Currency, tier int, qty, price, flat decimal.Decimal) Line {
	return Line{
		Meter: c.Meter, Tier: tier, Quantity: qty, UnitPrice: price, Flat: flat,
		Amount: cur.Round(qty.Mul(price).Add(flat)),
	}
}
