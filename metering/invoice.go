package metering

import (
	"errors"
	"time"

	"github.com/shopspring/decimal"
)

// The kinds of invoice line besides base_fee, usage and discount (the
// quote's), as the invoice_line_kind type of the billing schema names them.
const (
	LineProrationCredit = "proration_credit"
	LineProrationCharge = "proration_charge"
	LineAdjustment      = "adjustment"
	LineCredit          = "credit"
	LineTax             = "tax"
)

// ErrInvalidInvoice wraps every reason an invoice cannot be built from its
// input.
var ErrInvalidInvoice = errors.New("invalid invoice input")

// InvoiceInput is everything an invoice is computed from: what the invoice
// cites, so that the same input always yields the same invoice.
type InvoiceInput struct {
	Currency Currency
	// PeriodStart and PeriodEnd bound the billing period [start, end).
	PeriodStart, PeriodEnd time.Time
	// Trial marks a period wholly inside a trial: nothing of it is charged.
	Trial bool
	// Segments cover the period in order, without gaps: the part of it
	// each plan version was in force, and what was metered then.
	Segments []Segment
	// Promotions are the subscription's promotions active for the period.
	Promotions []Promotion
	// Adjustments are the pending adjustments the invoice bills.
	Adjustments []Adjustment
	// CreditAvailable is the customer's credit balance with the issuer in
	// the invoice's currency.
	CreditAvailable decimal.Decimal
	// Tax is the tax treatment of the customer at the period's end; the
	// zero value charges no tax and adds no tax line.
	Tax TaxTreatment
}

// Segment is the part [From, To) of a billing period one plan version was
// in force, and what each meter metered in it.
type Segment struct {
	PlanVersionID string
	From, To      time.Time
	Terms         PlanTerms
	// Usage is the metered quantity per meter slug.
	Usage map[string]decimal.Decimal
}

// Adjustment is a correction or late usage billed on this invoice, for
// an earlier period: either a quantity of a meter (HasQuantity) priced
// under that period's terms, or an amount.
type Adjustment struct {
	ID, Description, Meter string
	Quantity, Amount       decimal.Decimal
	HasQuantity            bool
	// Terms are the plan terms of the period the adjustment concerns.
	Terms PlanTerms
	// Billed is what that period already billed for Meter: the quantity
	// is priced on top of it, so tiers continue where the period stopped.
	Billed decimal.Decimal
}

// TaxTreatment is how tax applies to an invoice.
type TaxTreatment struct {
	// Name is the tax's name as the invoice shows it (VAT, GST, …).
	Name string
	// RatePercent is the rate in percent (20 for 20%).
	RatePercent decimal.Decimal
	// Inclusive means the prices already include the tax.
	Inclusive bool
	// ReverseCharge means the customer accounts for the tax: none is
	// charged and the invoice carries Mention.
	ReverseCharge bool
	// Mention is the legal mention a reverse-charged invoice carries.
	Mention string
}

// InvoiceLine is one line of an invoice, as invoice_lines stores it.
type InvoiceLine struct {
	Kind, Description, PlanVersionID, Meter string
	// Tier is the 1-based tier a usage line prices; 0 otherwise.
	Tier                        int
	Quantity, UnitPrice, Amount decimal.Decimal
	// Reference names what a line comes from: a promotion, an
	// adjustment, the credit balance.
	Reference string
}

// Invoice is a computed invoice: its lines in order and their totals.
type Invoice struct {
	Currency string
	Lines    []InvoiceLine
	// Subtotal, Discount, Tax, Total, CreditApplied, AmountDue and
	// CreditIssued: see the package documentation.
	Subtotal, Discount, Tax, Total, CreditApplied, AmountDue, CreditIssued decimal.Decimal
}

// LineDiff is one difference between a stored invoice and the invoice its
// input recomputes.
type LineDiff struct {
	// Position is the 1-based position of the line that differs; 0 for
	// the invoice's own fields (currency and totals).
	Position int
	// Field names what differs: a line's field, "line" when a line is
	// missing or extra, a total's name, or "input" when the input does not
	// compute at all.
	Field string
	// Stored and Recomputed are the two values as text ("" for a missing
	// side).
	Stored, Recomputed string
}

// BuildInvoice computes the invoice of in.
func BuildInvoice(in InvoiceInput) (Invoice, error) {
	return Invoice{}, errors.New("build invoice: not implemented yet")
}

// Explain recomputes the invoice of in and lists how stored differs from
// it: empty when stored reproduces.
func Explain(stored Invoice, in InvoiceInput) []LineDiff {
	return nil
}
