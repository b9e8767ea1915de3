package billing

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

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
