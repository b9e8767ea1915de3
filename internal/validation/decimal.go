package validation

import "github.com/shopspring/decimal"

// Sane reports whether d's exponent is at most 14, which any decimal
// below 10^15 can be written with. Checked before anything compares or
// stores a decimal from a request or a plan file, so that no comparison
// rescales by more than a few digits (decoding already refuses exponents
// above 10000, which still rescale to ten thousand digits).
func Sane(d decimal.Decimal) bool {
	return d.Exponent() <= 14
}
