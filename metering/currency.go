package metering

import (
	"errors"
	"fmt"

	"github.com/shopspring/decimal"
)

// ErrUnknownCurrency means a currency code is not one Veil prices in.
var ErrUnknownCurrency = errors.New("unknown currency")

// Currency is an ISO 4217 currency and the exponent of its minor unit:
// amounts in it are rounded to that many decimal places.
type Currency struct {
	Code     string
	Exponent int32
}

// minorUnits holds the ISO 4217 exponents of the currencies Veil prices
// in. Currencies with two decimals are the rule; the others are listed
// because getting them wrong is a hundredfold error on an invoice.
var minorUnits = map[string]int32{
	"AUD": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2,
	"HKD": 2, "INR": 2, "MXN": 2, "NOK": 2, "NZD": 2, "PLN": 2, "SEK": 2, "SGD": 2, "USD": 2, "ZAR": 2,
	"CLP": 0, "ISK": 0, "JPY": 0, "KRW": 0, "VND": 0,
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}

// CurrencyOf returns the currency with that ISO 4217 code.
func CurrencyOf(code string) (Currency, error) {
	exp, ok := minorUnits[code]
	if !ok {
		return Currency{}, fmt.Errorf("%w: %q", ErrUnknownCurrency, code)
	}
	return Currency{Code: code, Exponent: exp}, nil
}

// Round rounds d to the currency's minor unit, half away from zero: the
// one rounding an amount gets, once per line.
func (c Currency) Round(d decimal.Decimal) decimal.Decimal {
	return d.Round(c.Exponent)
}

// Format writes an amount as the currency shows it, with exactly the minor
// unit's decimals (JPY 1500, USD 12.50, KWD 1.250), rounded as Round does:
// the one way quotes, and invoices when billing writes them, print money.
func (c Currency) Format(d decimal.Decimal) string {
	return d.StringFixed(c.Exponent)
}
