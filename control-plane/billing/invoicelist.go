package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/pagination"
	"github.com/veil-platform/veil/internal/validation"
)

// InvoiceFilter narrows an invoice list. Zero fields do not filter.
type InvoiceFilter struct {
	// Status is one of draft, open, paid, void, uncollectible.
	Status string
	// SubscriptionID keeps one subscription's invoices.
	SubscriptionID *uuid.UUID
	// From and To keep the invoices whose period starts in [From, To).
	From, To *time.Time
	// After is the cursor of the page before; Limit the page size
	// (1..200, default 50).
	After string
	Limit int
}

// Validate checks the filter's values.
func (f *InvoiceFilter) Validate() error {
	var v validation.Error
	switch f.Status {
	case "", StatusDraft, StatusOpen, StatusPaid, StatusVoid, StatusUncollectible:
	default:
		v.Add("status", "must be draft, open, paid, void or uncollectible")
	}
	if f.From != nil && f.To != nil && !f.To.After(*f.From) {
		v.Add("to", "must be after from")
	}
	return v.Err()
}

// ListInvoices pages through the invoices the actor may see, oldest
// first: those its organization issued (as a provider) or received (as a
// customer); every one for an admin. Lines are left out (Invoice has
// them); Lines is empty.
func (s *Service) ListInvoices(ctx context.Context, actor identity.Actor, f InvoiceFilter) ([]Invoice, string, error) {
	if err := f.Validate(); err != nil {
		return nil, "", err
	}
	cur, err := pagination.Decode(f.After)
	if err != nil {
		return nil, "", err
	}
	limit := pagination.Limit(f.Limit)
	p := db.InvoiceListParams{
		Every: actor.IsAdmin(), OrgID: actor.OrgID, SubscriptionID: f.SubscriptionID, PeriodFrom: f.From, PeriodTo: f.To,
		AfterAt: cur.Time(), AfterID: cur.ID, RowLimit: int32(limit + 1),
	}
	if f.Status != "" {
		st := db.InvoiceStatus(f.Status)
		p.Status = &st
	}
	rows, err := db.New(s.pool).InvoiceList(ctx, p)
	if err != nil {
		return nil, "", fmt.Errorf("list invoices: %w", err)
	}
	now := s.now()
	out := make([]Invoice, len(rows))
	for i, r := range rows {
		out[i] = toInvoice(r, now)
	}
	page, next := pagination.Page(out, limit, func(inv Invoice) pagination.Cursor {
		return pagination.Cursor{At: inv.CreatedAt, ID: inv.ID}
	})
	return page, next, nil
}
