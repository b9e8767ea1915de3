package metering

// Invoices: what a billing period costs, from what the invoice cites (the
// usage snapshot split by plan-version segment, the plan versions' terms,
// the promotions, the adjustments, the credit balance and the tax
// treatment), so that anyone holding those can recompute it to the last
// digit (Explain). The order of the lines and their semantics:
//
//  1. Fees. The base fee of the first segment's version, in full. When a
//     trial ends inside the period (Segment.ChargedFrom), the fee of the
//     version in force at the trial's end instead, prorated: fee × (the
//     time from the trial's end to the period's end) / period; changes of
//     version during the trial have no lines. At each later
//     change of version, two lines on the time left from the change to the
//     period's end: a proration_credit of −(old fee × left / period) and a
//     proration_charge of +(new fee × left / period). left and period are
//     exact durations, to the second the history records and finer; the
//     fraction is never rounded, only the line's amount is, once (such a
//     line is 1 × its amount; its description gives the seconds).
//     Upgrades and downgrades alike; with several changes each has its
//     pair. A version without a base fee has no line. Adjacent segments of
//     one version are one segment.
//  2. Usage. Usage goes on across segments: a segment's quantity q of a
//     meter is priced by its own version's charge v on top of what the
//     period used of that meter in the segments before it (before):
//     rate_v(before + q) − rate_v(before), the rule adjustments follow.
//     Included units and tiers are the period's, not a segment's, so
//     changing plans back and forth grants no included units again and
//     restarts no tier. The lines are Rate(before + q)'s less
//     Rate(before)'s, tier by tier (a volume charge: one line at the tier
//     of before + q, its unit price the average when before was at
//     another). A meter a segment's version does not price must have no
//     usage in it.
//  3. Promotions, applied as a quote's (promotion.go's applyPromotions)
//     on the fees and usage: free_units take the period's first units of
//     the meter off, segment by segment, and save the meter's usage
//     priced as in 2 less the same without those units (one discount
//     line per promotion, nothing when they save nothing, as free units
//     of a volume charge that fall back to a dearer tier); then amounts,
//     then percentages of what remains. A discount never takes more than
//     what remains, and nothing when the fees and usage sum to zero or
//     less (a downgrade's credit).
//  4. Adjustments, in the given order: a quantity of a meter is priced
//     under the terms of the period it concerns, on top of what that
//     period billed: rate(billed + quantity) − rate(billed), so tiers go on
//     where the period stopped (a negative quantity gives back; the line's
//     unit price is the average, for the reader); an amount is billed as
//     it is, rounded. Adjustments are not discounted. Billed is the
//     caller's: control-plane/billing counts in it all the period billed
//     of the meter, every segment's usage and the adjustments billed
//     before (whatever segment they concern) or earlier on the invoice,
//     and prices the quantity by the terms of the segment it concerns.
//     The period's invoice priced all its segments before any adjustment
//     of it, so late units of an earlier segment are priced at the top,
//     after the later segments' units: where the period's versions price
//     the meter alike, the period's usage lines and adjustments sum to the
//     rate of all its usage (60 and 30 calls of two segments, then 30
//     late calls of the first and 40 of the second cost rate(160) −
//     rate(90)); where they differ, the units are priced at the segment's
//     terms past everything billed, so no included unit or tier is
//     granted twice.
//  5. Tax on the taxable amount, the sum of the lines so far (zero when
//     that is negative). Exclusive: a tax line of taxable × rate / 100.
//     Inclusive: a tax line of amount 0 stating the tax the prices include,
//     taxable × rate / (100 + rate); Invoice.Tax is that amount. Reverse
//     charge: a tax line of 0 carrying the legal mention. No line when
//     the treatment is the zero value (no tax rule).
//  6. Credit. Total is the sum of the lines so far. When it is positive,
//     the customer's credit (in whole minor units) pays for it up to the
//     total: a credit line of −CreditApplied. When it is negative, the excess goes to the
//     customer's credit balance: a credit line of +CreditIssued, so that
//     AmountDue is never below zero.
//
// AmountDue is the sum of all lines. Subtotal is the sum of the fee, usage
// and adjustment lines, Discount the discount lines' as a positive amount,
// Tax the tax charged or included, so that Total = Subtotal − Discount +
// the tax line. A trial period has no fee, usage or discount lines: its
// total is zero unless adjustments of earlier periods are billed on it.
// Every line is rounded once to the currency's minor unit, half away from
// zero; quantities and unit prices are exact, within what invoice_lines
// holds (6 and 12 decimals), so that a stored invoice reproduces.

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
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
	// ChargedFrom is where the segment's billable time begins: the zero
	// time (or From) for all of it; a later time when a trial ends inside
	// it; To or later when it lies wholly in the trial. The time before
	// it is charged no fee, and its usage must not be counted.
	ChargedFrom time.Time
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

// The largest magnitudes invoice_lines holds (numeric(20, 6) amounts and
// quantities, numeric(24, 12) unit prices): a line beyond them could not be
// stored as computed, so it could not be reproduced either.
var (
	maxStoredAmount    = decimal.New(1, 14)
	maxStoredUnitPrice = decimal.New(1, 12)
)

// maxPeriod bounds a billing period: plans bill by month or year, and a
// longer span is a wrong input, not a period.
const maxPeriod = 400 * 24 * time.Hour

// BuildInvoice computes the invoice of in, as the file's comment says.
func BuildInvoice(in InvoiceInput) (Invoice, error) {
	if err := in.validate(); err != nil {
		return Invoice{}, fmt.Errorf("build invoice: %w", err)
	}
	b := &invoiceBuilder{cur: in.Currency, inv: Invoice{
		Currency: in.Currency.Code, Lines: make([]InvoiceLine, 0, in.lineCapacity()), Subtotal: decimal.Zero, Discount: decimal.Zero, Tax: decimal.Zero, Total: decimal.Zero,
		CreditApplied: decimal.Zero, AmountDue: decimal.Zero, CreditIssued: decimal.Zero,
	}}
	if !in.Trial {
		segs := mergeSegments(in.Segments)
		b.fees(segs, in.PeriodStart, in.PeriodEnd)
		if err := b.usage(segs); err != nil {
			return Invoice{}, fmt.Errorf("build invoice: %w", err)
		}
		if err := b.promotions(segs, in.Promotions); err != nil {
			return Invoice{}, fmt.Errorf("build invoice: %w", err)
		}
	}
	for i, a := range in.Adjustments {
		if err := b.adjustment(a); err != nil {
			return Invoice{}, fmt.Errorf("build invoice: adjustment %d (%s): %w", i+1, a.ID, err)
		}
	}
	b.tax(in.Tax)
	b.credit(in.CreditAvailable)
	if err := b.inv.checkStorable(); err != nil {
		return Invoice{}, fmt.Errorf("build invoice: %w", err)
	}
	return b.inv, nil
}

// lineCapacity is about how many lines the invoice of in has, so that its
// lines are allocated once: a base fee, two per change, a line per tier
// of each charge, one per promotion and adjustment, tax and credit.
func (in InvoiceInput) lineCapacity() int {
	n := 3 + 2*len(in.Segments) + len(in.Promotions) + len(in.Adjustments)
	for _, s := range in.Segments {
		for _, c := range s.Terms.Charges {
			n += max(1, len(c.Tiers))
		}
	}
	return n
}

// validate checks what BuildInvoice relies on: a known currency, a period,
// segments that cover it in order (unless a trial), terms in the invoice's
// currency, a credit balance not below zero and a tax rate in [0, 100].
func (in InvoiceInput) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidInvoice, fmt.Sprintf(format, a...))
	}
	if cur, err := CurrencyOf(in.Currency.Code); err != nil {
		return err
	} else if cur != in.Currency {
		return bad("currency %s with %d decimals, not %d", cur.Code, in.Currency.Exponent, cur.Exponent)
	}
	period := in.PeriodEnd.Sub(in.PeriodStart)
	if period <= 0 || period > maxPeriod {
		return bad("period [%s, %s) empty or longer than %s", in.PeriodStart, in.PeriodEnd, maxPeriod)
	}
	if in.CreditAvailable.IsNegative() {
		return bad("credit available %s below zero", in.CreditAvailable)
	}
	if r := in.Tax.RatePercent; r.IsNegative() || r.GreaterThan(decimal.NewFromInt(100)) {
		return bad("tax rate %s%% outside [0, 100]", r)
	}
	if in.Trial {
		return nil
	}
	if len(in.Segments) == 0 {
		return bad("no segment covers the period")
	}
	at := in.PeriodStart
	for i, s := range in.Segments {
		if !s.From.Equal(at) || !s.To.After(s.From) {
			return bad("segment %d [%s, %s) does not follow on at %s", i+1, s.From, s.To, at)
		}
		if err := s.Terms.validate(in.Currency); err != nil {
			return fmt.Errorf("segment %d (%s): %w", i+1, s.PlanVersionID, err)
		}
		at = s.To
	}
	if !at.Equal(in.PeriodEnd) {
		return bad("the segments end at %s, the period at %s", at, in.PeriodEnd)
	}
	return nil
}

// validate checks terms an invoice in cur can price: in cur, a base fee
// not below zero, one charge per meter.
func (p PlanTerms) validate(cur Currency) error {
	if p.Currency != cur {
		return fmt.Errorf("%w: terms in %s, the invoice in %s", ErrInvalidInvoice, p.Currency.Code, cur.Code)
	}
	if p.BaseFee.IsNegative() {
		return fmt.Errorf("%w: base fee %s below zero", ErrInvalidCharge, p.BaseFee)
	}
	for i, c := range p.Charges {
		if slices.ContainsFunc(p.Charges[:i], func(o Charge) bool { return o.Meter == c.Meter }) {
			return fmt.Errorf("%w: meter %q charged twice", ErrInvalidCharge, c.Meter)
		}
	}
	return nil
}

// mergeSegments joins adjacent segments of one plan version: one version's
// included units and tiers apply once to its whole stretch of the period.
func mergeSegments(segs []Segment) []Segment {
	out := make([]Segment, 0, len(segs))
	for _, s := range segs {
		n := len(out)
		if n == 0 || out[n-1].PlanVersionID != s.PlanVersionID {
			out = append(out, s)
			continue
		}
		usage := make(map[string]decimal.Decimal, len(s.Usage))
		for _, u := range []map[string]decimal.Decimal{out[n-1].Usage, s.Usage} {
			for m, q := range u {
				usage[m] = usage[m].Add(q)
			}
		}
		if !out[n-1].chargedStart().Before(out[n-1].To) {
			// The first stretch lies wholly in the trial: the joined
			// segment is charged from where the second one is.
			out[n-1].ChargedFrom = s.chargedStart()
		}
		out[n-1].To, out[n-1].Usage = s.To, usage
	}
	return out
}

type invoiceBuilder struct {
	cur Currency
	inv Invoice
}

func (b *invoiceBuilder) add(l InvoiceLine) {
	b.inv.Lines = append(b.inv.Lines, l)
	switch l.Kind {
	case LineDiscount:
		b.inv.Discount = b.inv.Discount.Sub(l.Amount)
	case LineTax, LineCredit:
	default:
		b.inv.Subtotal = b.inv.Subtotal.Add(l.Amount)
	}
}

// chargedStart is where s's billable time begins: ChargedFrom, or From
// when that is earlier.
func (s Segment) chargedStart() time.Time {
	if s.ChargedFrom.After(s.From) {
		return s.ChargedFrom
	}
	return s.From
}

// fees adds the base fee of the version in force when the period's
// billable time begins and the proration lines of each change of version
// after that. The fee is in full when the whole period is billable, and
// prorated by the second from a trial's end otherwise.
func (b *invoiceBuilder) fees(segs []Segment, start, end time.Time) {
	first := slices.IndexFunc(segs, func(s Segment) bool { return s.chargedStart().Before(s.To) })
	if first < 0 {
		return // wholly in the trial
	}
	period := decimal.NewFromInt(int64(end.Sub(start)))
	from := segs[first].chargedStart()
	if fee := segs[first].Terms.BaseFee; fee.IsPositive() {
		line := InvoiceLine{Kind: LineBaseFee, Description: "Base fee", PlanVersionID: segs[first].PlanVersionID, Quantity: decimal.NewFromInt(1)}
		if from.After(start) {
			left := decimal.NewFromInt(int64(end.Sub(from)))
			line.Amount = roundQuo(b.cur, fee.Mul(left), period)
			line.Description = fmt.Sprintf("Base fee from the end of the trial: %s of %s s from %s",
				left.Shift(-9), period.Shift(-9), from.UTC().Format(time.RFC3339))
		} else {
			line.Amount = b.cur.Round(fee)
		}
		line.UnitPrice = line.Amount
		b.add(line)
	}
	for i := first + 1; i < len(segs); i++ {
		prev, next := segs[i-1], segs[i]
		left := decimal.NewFromInt(int64(end.Sub(next.From)))
		share := fmt.Sprintf("%s of %s s from %s", left.Shift(-9), period.Shift(-9), next.From.UTC().Format(time.RFC3339))
		if fee := prev.Terms.BaseFee; fee.IsPositive() {
			amount := roundQuo(b.cur, fee.Mul(left).Neg(), period)
			b.add(InvoiceLine{Kind: LineProrationCredit, Description: "Unused time of the previous plan version: " + share,
				PlanVersionID: prev.PlanVersionID, Quantity: decimal.NewFromInt(1), UnitPrice: amount, Amount: amount})
		}
		if fee := next.Terms.BaseFee; fee.IsPositive() {
			amount := roundQuo(b.cur, fee.Mul(left), period)
			b.add(InvoiceLine{Kind: LineProrationCharge, Description: "Remaining time of the new plan version: " + share,
				PlanVersionID: next.PlanVersionID, Quantity: decimal.NewFromInt(1), UnitPrice: amount, Amount: amount})
		}
	}
}

// roundQuo is num / den rounded once to cur's minor unit, half away from
// zero, exactly: Div would first round the quotient to 16 places, and a
// quotient such as x.xx4999999999999999… would then round up twice.
func roundQuo(cur Currency, num, den decimal.Decimal) decimal.Decimal {
	q, r := num.QuoRem(den, cur.Exponent)
	// num = den × q + r with |r| < |den| × 10^−exp and r of num's sign:
	// the quotient is half a minor unit or more past q when 2|r| ≥ that.
	if r.Abs().Mul(decimal.NewFromInt(2)).GreaterThanOrEqual(den.Abs().Shift(-cur.Exponent)) {
		step := decimal.New(1, -cur.Exponent)
		if num.Sign()*den.Sign() < 0 {
			step = step.Neg()
		}
		q = q.Add(step)
	}
	return q
}

// usage adds each segment's usage lines: its quantity of each meter
// priced by its own version on top of what the period used of that meter
// before it (rateOnTop), so that included units and tiers are the
// period's: changing plans back and forth does not grant included units
// again or restart the tiers.
func (b *invoiceBuilder) usage(segs []Segment) error {
	before := make(map[string]decimal.Decimal)
	for i, s := range segs {
		for meter, q := range s.Usage {
			if !q.IsZero() && !slices.ContainsFunc(s.Terms.Charges, func(c Charge) bool { return c.Meter == meter }) {
				return fmt.Errorf("segment %d (%s): %w: %q", i+1, s.PlanVersionID, ErrUnknownMeter, meter)
			}
		}
		for _, c := range s.Terms.Charges {
			q := s.Usage[c.Meter]
			lines, err := c.rateOnTop(before[c.Meter], q, b.cur)
			if err != nil {
				return fmt.Errorf("segment %d (%s): %w", i+1, s.PlanVersionID, err)
			}
			before[c.Meter] = before[c.Meter].Add(q)
			for _, l := range lines {
				b.add(InvoiceLine{Kind: LineUsage, Description: usageDescription(l), PlanVersionID: s.PlanVersionID,
					Meter: l.Meter, Tier: l.Tier, Quantity: l.Quantity, UnitPrice: l.UnitPrice, Amount: l.Amount})
			}
		}
	}
	return nil
}

// rateOnTop prices q units of c's meter used after before units: the
// lines of Rate(before + q) less those of Rate(before), tier by tier, so
// that they sum to rate(before + q) − rate(before). A volume charge is one
// line at the tier of before + q; when before was priced at another tier,
// its unit price is the average, for the reader (the amount reprices the
// earlier units at the new tier, as the model does).
func (c Charge) rateOnTop(before, q decimal.Decimal, cur Currency) ([]Line, error) {
	was, _, err := c.Rate(before, cur)
	if err != nil {
		return nil, err
	}
	now, _, err := c.Rate(before.Add(q), cur)
	if err != nil || len(was) == 0 {
		return now, err
	}
	if c.Model == ModelVolume {
		l := now[0]
		l.Quantity, l.Amount, l.Flat = l.Quantity.Sub(was[0].Quantity), l.Amount.Sub(was[0].Amount), l.Flat.Sub(was[0].Flat)
		if was[0].Tier != l.Tier && !l.Quantity.IsZero() {
			l.UnitPrice = l.Amount.DivRound(l.Quantity, 12)
		}
		if l.Quantity.IsZero() && l.Amount.IsZero() {
			return nil, nil
		}
		return []Line{l}, nil
	}
	out := make([]Line, 0, len(now))
	for _, l := range now {
		for _, w := range was {
			if w.Tier == l.Tier {
				l.Quantity, l.Amount, l.Flat = l.Quantity.Sub(w.Quantity), l.Amount.Sub(w.Amount), l.Flat.Sub(w.Flat)
			}
		}
		if !l.Quantity.IsZero() || !l.Amount.IsZero() {
			out = append(out, l)
		}
	}
	return out, nil
}

func usageDescription(l Line) string {
	if l.Tier == 0 {
		return l.Meter
	}
	return l.Meter + ", tier " + strconv.Itoa(l.Tier)
}

// promotions adds the discount lines, applied by applyPromotions (as a
// quote's) on the fee and usage lines: free units are the period's first
// units of their meter, and what they save is the meter's usage priced
// as usage prices it, less the same with those units taken off.
func (b *invoiceBuilder) promotions(segs []Segment, promos []Promotion) error {
	if len(promos) == 0 {
		return nil
	}
	cost := func(meter string, free decimal.Decimal) (decimal.Decimal, bool, error) {
		total, before, priced := decimal.Zero, decimal.Zero, false
		for _, s := range segs {
			q := s.Usage[meter]
			cut := decimal.Min(free, q)
			free, q = free.Sub(cut), q.Sub(cut)
			i := slices.IndexFunc(s.Terms.Charges, func(c Charge) bool { return c.Meter == meter })
			if i < 0 {
				continue
			}
			priced = true
			lines, err := s.Terms.Charges[i].rateOnTop(before, q, b.cur)
			if err != nil {
				return decimal.Zero, false, err
			}
			for _, l := range lines {
				total = total.Add(l.Amount)
			}
			before = before.Add(q)
		}
		return total, priced, nil
	}
	applied, err := applyPromotions(promos, b.cur, b.inv.Subtotal, cost)
	if err != nil {
		return err
	}
	for _, a := range applied {
		off := a.off.Neg()
		b.add(InvoiceLine{Kind: LineDiscount, Description: "Promotion " + a.promotion.Code, Meter: a.meter,
			Quantity: decimal.NewFromInt(1), UnitPrice: off, Amount: off, Reference: a.promotion.ID})
	}
	return nil
}

// adjustment adds a's line: a quantity priced on top of what its period
// billed, or an amount.
func (b *invoiceBuilder) adjustment(a Adjustment) error {
	desc := a.Description
	if desc == "" {
		desc = "Adjustment"
	}
	if !a.HasQuantity {
		if a.Meter != "" || !a.Quantity.IsZero() {
			return fmt.Errorf("%w: an amount adjustment with a meter or quantity", ErrInvalidInvoice)
		}
		amount := b.cur.Round(a.Amount)
		b.add(InvoiceLine{Kind: LineAdjustment, Description: desc, Quantity: decimal.NewFromInt(1), UnitPrice: amount, Amount: amount, Reference: a.ID})
		return nil
	}
	if !a.Amount.IsZero() {
		return fmt.Errorf("%w: a quantity adjustment with an amount", ErrInvalidInvoice)
	}
	if err := a.Terms.validate(b.cur); err != nil {
		return err
	}
	i := slices.IndexFunc(a.Terms.Charges, func(c Charge) bool { return c.Meter == a.Meter })
	if i < 0 {
		return fmt.Errorf("%w: %q", ErrUnknownMeter, a.Meter)
	}
	c := a.Terms.Charges[i]
	_, before, err := c.Rate(a.Billed, b.cur)
	if err != nil {
		return err
	}
	_, after, err := c.Rate(a.Billed.Add(a.Quantity), b.cur)
	if err != nil {
		return err
	}
	// Both totals are sums of rounded lines: their difference is in minor
	// units already. The unit price is the average, for the reader only.
	amount, price := after.Sub(before), decimal.Zero
	if !a.Quantity.IsZero() {
		price = amount.DivRound(a.Quantity, 12)
	}
	b.add(InvoiceLine{Kind: LineAdjustment, Description: desc, Meter: a.Meter, Quantity: a.Quantity, UnitPrice: price, Amount: amount, Reference: a.ID})
	return nil
}

// tax adds the tax line of t on the lines so far.
func (b *invoiceBuilder) tax(t TaxTreatment) {
	if t.Name == "" && t.Mention == "" && !t.Inclusive && !t.ReverseCharge && t.RatePercent.IsZero() {
		return
	}
	taxable := decimal.Max(decimal.Zero, b.inv.Subtotal.Sub(b.inv.Discount))
	rate := t.RatePercent.String() + "%"
	l := InvoiceLine{Kind: LineTax, Quantity: taxable, UnitPrice: decimal.Zero, Amount: decimal.Zero, Reference: t.Name}
	switch {
	case t.ReverseCharge:
		l.Description = t.Mention
		if l.Description == "" {
			l.Description = "Reverse charge"
		}
	case t.Inclusive:
		hundred := decimal.NewFromInt(100)
		b.inv.Tax = roundQuo(b.cur, taxable.Mul(t.RatePercent), hundred.Add(t.RatePercent))
		l.Description = fmt.Sprintf("%s %s included: %s", t.Name, rate, b.inv.Tax.StringFixed(b.cur.Exponent))
	default:
		l.UnitPrice = t.RatePercent.Shift(-2)
		l.Amount = b.cur.Round(taxable.Mul(l.UnitPrice))
		b.inv.Tax = l.Amount
		l.Description = fmt.Sprintf("%s %s", t.Name, rate)
	}
	b.add(l)
}

// credit closes the invoice: Total, then the credit applied to it or
// issued from it, and AmountDue.
func (b *invoiceBuilder) credit(available decimal.Decimal) {
	inv := &b.inv
	inv.Total = inv.Subtotal.Sub(inv.Discount)
	if n := len(inv.Lines); n > 0 && inv.Lines[n-1].Kind == LineTax {
		inv.Total = inv.Total.Add(inv.Lines[n-1].Amount)
	}
	if inv.Total.IsNegative() {
		inv.CreditIssued = inv.Total.Neg()
		b.add(InvoiceLine{Kind: LineCredit, Description: "Credit to the customer's balance",
			Quantity: decimal.NewFromInt(1), UnitPrice: inv.CreditIssued, Amount: inv.CreditIssued, Reference: "issued"})
	} else if applied := decimal.Min(available.Truncate(b.cur.Exponent), inv.Total); applied.IsPositive() {
		inv.CreditApplied = applied
		b.add(InvoiceLine{Kind: LineCredit, Description: "Credit applied from the customer's balance",
			Quantity: decimal.NewFromInt(1), UnitPrice: applied.Neg(), Amount: applied.Neg(), Reference: "applied"})
	}
	inv.AmountDue = inv.Total.Sub(inv.CreditApplied).Add(inv.CreditIssued)
}

// checkStorable refuses an invoice invoice_lines could not hold exactly.
func (inv Invoice) checkStorable() error {
	for i, l := range inv.Lines {
		if !fits(l.Quantity, maxStoredAmount, 6) || !fits(l.UnitPrice, maxStoredUnitPrice, 12) || !fits(l.Amount, maxStoredAmount, 6) {
			return fmt.Errorf("%w: line %d (%s %s): quantity %s, unit price %s or amount %s beyond what an invoice line holds",
				ErrInvalidInvoice, i+1, l.Kind, l.Meter, l.Quantity, l.UnitPrice, l.Amount)
		}
	}
	for _, v := range []decimal.Decimal{inv.Subtotal, inv.Discount, inv.Total, inv.AmountDue} {
		if !fits(v, maxStoredAmount, 6) {
			return fmt.Errorf("%w: total %s beyond what an invoice holds", ErrInvalidInvoice, v)
		}
	}
	return nil
}

// fits reports whether v is below limit in magnitude with at most places
// decimals (trailing zeros aside).
func fits(v, limit decimal.Decimal, places int32) bool {
	if v.Sign() < 0 {
		v = v.Neg()
	}
	if v.Cmp(limit) >= 0 {
		return false
	}
	return v.Exponent() >= -places || v.Equal(v.Truncate(places))
}

// Explain recomputes the invoice of in and lists how stored differs from
// it, line by line then in its totals: empty when stored reproduces.
// Amounts compare as numbers (12.5 is 12.500000). Descriptions are
// wording, not money, and are not compared.
func Explain(stored Invoice, in InvoiceInput) []LineDiff {
	want, err := BuildInvoice(in)
	if err != nil {
		return []LineDiff{{Field: "input", Recomputed: err.Error()}}
	}
	var diffs []LineDiff
	for i := range max(len(stored.Lines), len(want.Lines)) {
		switch {
		case i >= len(stored.Lines):
			diffs = append(diffs, LineDiff{Position: i + 1, Field: "line", Recomputed: want.Lines[i].String()})
		case i >= len(want.Lines):
			diffs = append(diffs, LineDiff{Position: i + 1, Field: "line", Stored: stored.Lines[i].String()})
		default:
			diffs = append(diffs, lineDiffs(i+1, stored.Lines[i], want.Lines[i])...)
		}
	}
	if stored.Currency != want.Currency {
		diffs = append(diffs, LineDiff{Field: "currency", Stored: stored.Currency, Recomputed: want.Currency})
	}
	for _, f := range []struct {
		name      string
		got, want decimal.Decimal
	}{
		{"subtotal", stored.Subtotal, want.Subtotal}, {"discount", stored.Discount, want.Discount},
		{"tax", stored.Tax, want.Tax}, {"total", stored.Total, want.Total},
		{"credit_applied", stored.CreditApplied, want.CreditApplied}, {"amount_due", stored.AmountDue, want.AmountDue},
		{"credit_issued", stored.CreditIssued, want.CreditIssued},
	} {
		if !f.got.Equal(f.want) {
			diffs = append(diffs, LineDiff{Field: f.name, Stored: f.got.String(), Recomputed: f.want.String()})
		}
	}
	return diffs
}

func lineDiffs(pos int, got, want InvoiceLine) []LineDiff {
	var diffs []LineDiff
	text := func(field, g, w string) {
		if g != w {
			diffs = append(diffs, LineDiff{Position: pos, Field: field, Stored: g, Recomputed: w})
		}
	}
	num := func(field string, g, w decimal.Decimal) {
		if !g.Equal(w) {
			diffs = append(diffs, LineDiff{Position: pos, Field: field, Stored: g.String(), Recomputed: w.String()})
		}
	}
	text("kind", got.Kind, want.Kind)
	text("plan_version_id", got.PlanVersionID, want.PlanVersionID)
	text("meter", got.Meter, want.Meter)
	text("tier", fmt.Sprint(got.Tier), fmt.Sprint(want.Tier))
	num("quantity", got.Quantity, want.Quantity)
	num("unit_price", got.UnitPrice, want.UnitPrice)
	num("amount", got.Amount, want.Amount)
	text("reference", got.Reference, want.Reference)
	return diffs
}

// String shows a line as explain prints it.
func (l InvoiceLine) String() string {
	return fmt.Sprintf("%s %s %s tier %d: %s × %s = %s (%s)", l.Kind, l.PlanVersionID, l.Meter, l.Tier, l.Quantity, l.UnitPrice, l.Amount, l.Reference)
}
