package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/metering"
)

// Explanation is a stored invoice beside the invoice its cites compute
// again, and how they differ (no Diffs: it reproduces).
type Explanation struct {
	Invoice    Invoice
	Stored     metering.Invoice
	Recomputed metering.Invoice
	Diffs      []metering.LineDiff
}

// Explain rebuilds an invoice from what it cites alone (its usage
// snapshot, the terms of the plan versions, the promotions and
// adjustments it names, its tax treatment and the credit it could use)
// with metering.BuildInvoice, and compares it with the stored one, line by
// line and total by total. It reads as the platform: it is an operator's
// tool (veil billing explain) and the tests' check.
func (s *Service) Explain(ctx context.Context, id uuid.UUID) (Explanation, error) {
	q := db.New(s.pool)
	inv, err := loadInvoice(ctx, q, id, s.now())
	if err != nil {
		return Explanation{}, err
	}
	row, err := q.InvoiceGet(ctx, id)
	if err != nil {
		return Explanation{}, fmt.Errorf("read invoice: %w", err)
	}
	var c Cites
	if err := json.Unmarshal(row.Cites, &c); err != nil {
		return Explanation{}, fmt.Errorf("decode cites of invoice %s: %w", id, err)
	}
	out := Explanation{Invoice: inv, Stored: storedInvoice(inv, c)}
	b := &basis{segments: map[uuid.UUID]periodSegments{}, customer: c.Customer, taxRule: c.TaxRuleID, tax: c.Tax}
	periods := []uuid.UUID{c.BillingPeriodID}
	for _, a := range c.Adjustments {
		if a.BillingPeriodID != nil {
			periods = append(periods, *a.BillingPeriodID)
		}
	}
	if err := s.loadSegments(ctx, b, periods); err != nil {
		return Explanation{}, err
	}
	in, err := s.inputFrom(ctx, q, row, c, b)
	if err != nil {
		return Explanation{}, err
	}
	if out.Recomputed, err = metering.BuildInvoice(in); err != nil {
		out.Diffs = []metering.LineDiff{{Field: "input", Recomputed: err.Error()}}
		return out, nil
	}
	out.Diffs = metering.Explain(out.Stored, in)
	return out, nil
}

// storedInvoice is a stored invoice as metering computes one.
func storedInvoice(inv Invoice, c Cites) metering.Invoice {
	out := metering.Invoice{
		Currency: inv.Currency, Lines: make([]metering.InvoiceLine, len(inv.Lines)), Subtotal: inv.Subtotal, Discount: inv.Discount,
		Tax: inv.Tax, Total: inv.Total, CreditApplied: inv.CreditApplied, AmountDue: inv.AmountDue, CreditIssued: c.CreditIssued,
	}
	for i, l := range inv.Lines {
		ml := metering.InvoiceLine{
			Kind: l.Kind, Description: l.Description, Tier: l.Tier, Quantity: l.Quantity, UnitPrice: l.UnitPrice, Amount: l.Amount,
			Reference: l.Reference,
		}
		if l.PlanVersionID != nil {
			ml.PlanVersionID = l.PlanVersionID.String()
		}
		if l.Meter != nil {
			ml.Meter = *l.Meter
		}
		out.Lines[i] = ml
	}
	return out
}

// Write prints the explanation: the stored and the recomputed invoice
// side by side, line by line and total by total, then the differences
// (or that there is none).
func (e Explanation) Write(w io.Writer) error {
	number := "draft"
	if e.Invoice.Number != nil {
		number = *e.Invoice.Number
	}
	fmt.Fprintf(w, "invoice %s (%s), %s, period %s to %s\n\n", e.Invoice.ID, number, e.Invoice.Status,
		e.Invoice.PeriodStart.UTC().Format("2006-01-02T15:04:05Z"), e.Invoice.PeriodEnd.UTC().Format("2006-01-02T15:04:05Z"))
	m := func(d decimal.Decimal) string { return money(e.Invoice.Currency, d) }
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "#\tkind\tdescription\tquantity\tstored\trecomputed\t")
	n := max(len(e.Stored.Lines), len(e.Recomputed.Lines))
	for i := range n {
		var kind, desc, qty, stored, again string
		if i < len(e.Stored.Lines) {
			l := e.Stored.Lines[i]
			kind, desc, qty, stored = l.Kind, l.Description, l.Quantity.String(), m(l.Amount)
		}
		if i < len(e.Recomputed.Lines) {
			l := e.Recomputed.Lines[i]
			if kind == "" {
				kind, desc, qty = l.Kind, l.Description, l.Quantity.String()
			}
			again = m(l.Amount)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t\n", i+1, kind, desc, qty, stored, again)
	}
	for _, t := range []struct {
		name          string
		stored, again string
	}{
		{"subtotal", m(e.Stored.Subtotal), m(e.Recomputed.Subtotal)},
		{"discount", m(e.Stored.Discount), m(e.Recomputed.Discount)},
		{"tax", m(e.Stored.Tax), m(e.Recomputed.Tax)},
		{"total", m(e.Stored.Total), m(e.Recomputed.Total)},
		{"credit applied", m(e.Stored.CreditApplied), m(e.Recomputed.CreditApplied)},
		{"amount due", m(e.Stored.AmountDue), m(e.Recomputed.AmountDue)},
		{"credit issued", m(e.Stored.CreditIssued), m(e.Recomputed.CreditIssued)},
	} {
		fmt.Fprintf(tw, "\t%s\t\t\t%s\t%s\t\n", t.name, t.stored, t.again)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write explanation: %w", err)
	}
	if len(e.Diffs) == 0 {
		_, err := fmt.Fprintf(w, "\ndifference: none (%s %s reproduced from its cites)\n", e.Invoice.Currency, m(e.Stored.AmountDue))
		return err
	}
	fmt.Fprintf(w, "\ndifferences: %d\n", len(e.Diffs))
	for _, d := range e.Diffs {
		fmt.Fprintf(w, "  line %d %s: stored %q, recomputed %q\n", d.Position, d.Field, d.Stored, d.Recomputed)
	}
	return nil
}

// money writes an amount with the decimals of its currency's minor unit
// (JPY 1500, EUR 12.50, KWD 1.250), as invoices print it; an unknown code
// (which no invoice has) gets two.
func money(code string, d decimal.Decimal) string {
	c, err := metering.CurrencyOf(code)
	if err != nil {
		return d.StringFixed(2)
	}
	return c.Format(d)
}

// ExplainAll explains every invoice of a billing period in the database
// and returns those that differ from what their cites compute (none: all
// reproduce). Tests call it when they end, so that every invoice they
// built is checked.
func (s *Service) ExplainAll(ctx context.Context) ([]Explanation, error) {
	ids, err := db.New(s.pool).InvoiceIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list invoices: %w", err)
	}
	var differ []Explanation
	for _, id := range ids {
		ex, err := s.Explain(ctx, id)
		if err != nil {
			return differ, fmt.Errorf("explain invoice %s: %w", id, err)
		}
		if len(ex.Diffs) > 0 {
			differ = append(differ, ex)
		}
	}
	return differ, nil
}
