package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
)

// Invoice statuses. Overdue is not one: an open invoice past its due date
// is overdue (Invoice.Overdue).
const (
	StatusDraft         = "draft"
	StatusOpen          = "open"
	StatusPaid          = "paid"
	StatusVoid          = "void"
	StatusUncollectible = "uncollectible"
)

// Webhook event types of invoices.
const (
	EventInvoiceFinalized = "invoice.finalized"
	EventInvoiceVoided    = "invoice.voided"
	EventInvoiceOverdue   = "invoice.overdue"
)

// Sentinel errors; the HTTP layer maps each to one problem type.
var (
	// ErrInvoiceNotFound: no such invoice the actor may see.
	ErrInvoiceNotFound = errors.New("invoice not found")
	// ErrInvoiceState: the invoice's status does not allow the change
	// (finalizing what is not a draft, voiding what is not open, …).
	ErrInvoiceState = errors.New("invalid invoice status transition")
	// ErrEarlierDraft: a subscription's invoices are finalized in the
	// order of their periods, and an earlier one is still a draft.
	ErrEarlierDraft = errors.New("an earlier period of the subscription has a draft invoice")
	// ErrCustomerNotFound: the organization is not a customer of the
	// issuer the actor may act for.
	ErrCustomerNotFound = errors.New("customer not found")
	// ErrSubscriptionNotFound: no such subscription the actor may see.
	ErrSubscriptionNotFound = errors.New("subscription not found")
	// ErrPeriodNotFound: no such billing period of the subscription.
	ErrPeriodNotFound = errors.New("billing period not found")
)

// Invoice is an invoice and its lines. Amounts are rounded to the
// currency's minor unit, each line once; the totals are sums of lines.
type Invoice struct {
	ID              uuid.UUID  `json:"id"`
	IssuerID        uuid.UUID  `json:"issuer_id"`
	CustomerID      uuid.UUID  `json:"customer_id"`
	SubscriptionID  uuid.UUID  `json:"subscription_id"`
	BillingPeriodID *uuid.UUID `json:"billing_period_id"`
	Status          string     `json:"status"`
	// Overdue: open past its due date.
	Overdue bool `json:"overdue"`
	// Number is <PREFIX>-<YYYY>-<NNNNNN>, null while a draft.
	Number        *string         `json:"number"`
	Currency      string          `json:"currency"`
	PeriodStart   time.Time       `json:"period_start"`
	PeriodEnd     time.Time       `json:"period_end"`
	Subtotal      decimal.Decimal `json:"subtotal"`
	Discount      decimal.Decimal `json:"discount"`
	Tax           decimal.Decimal `json:"tax"`
	CreditApplied decimal.Decimal `json:"credit_applied"`
	Total         decimal.Decimal `json:"total"`
	AmountDue     decimal.Decimal `json:"amount_due"`
	NetDays       int             `json:"net_days"`
	// Cites is what the invoice was computed from (Cites).
	Cites       json.RawMessage `json:"cites"`
	FinalizedAt *time.Time      `json:"finalized_at"`
	DueAt       *time.Time      `json:"due_at"`
	PaidAt      *time.Time      `json:"paid_at"`
	VoidedAt    *time.Time      `json:"voided_at"`
	OverdueAt   *time.Time      `json:"overdue_at"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
	Lines       []Line          `json:"lines"`
}

// Line is one invoice line.
type Line struct {
	Position      int             `json:"position"`
	Kind          string          `json:"kind"`
	Description   string          `json:"description"`
	PlanVersionID *uuid.UUID      `json:"plan_version_id"`
	Meter         *string         `json:"meter"`
	Tier          int             `json:"tier"`
	Quantity      decimal.Decimal `json:"quantity"`
	UnitPrice     decimal.Decimal `json:"unit_price"`
	Amount        decimal.Decimal `json:"amount"`
	Reference     string          `json:"reference"`
}

// canSee reports whether actor may read inv: its issuer's providers, its
// customer's members, admins.
func (inv Invoice) canSee(a identity.Actor) bool {
	return a.IsAdmin() || a.OrgID == inv.IssuerID || a.OrgID == inv.CustomerID
}

func toInvoice(r db.Invoice, now time.Time) Invoice {
	return Invoice{
		ID: r.ID, IssuerID: r.IssuerID, CustomerID: r.CustomerID, SubscriptionID: r.SubscriptionID, BillingPeriodID: r.BillingPeriodID,
		Status: string(r.Status), Overdue: r.Status == db.InvoiceStatusOpen && r.DueAt != nil && now.After(*r.DueAt),
		Number: r.Number, Currency: r.Currency, PeriodStart: r.PeriodStart, PeriodEnd: r.PeriodEnd, Subtotal: r.Subtotal,
		Discount: r.Discount, Tax: r.Tax, CreditApplied: r.CreditApplied, Total: r.Total, AmountDue: r.AmountDue,
		NetDays: int(r.NetDays), Cites: r.Cites, FinalizedAt: r.FinalizedAt, DueAt: r.DueAt, PaidAt: r.PaidAt,
		VoidedAt: r.VoidedAt, OverdueAt: r.OverdueAt, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, Lines: []Line{},
	}
}

// loadInvoice reads an invoice and its lines through q.
func loadInvoice(ctx context.Context, q *db.Queries, id uuid.UUID, now time.Time) (Invoice, error) {
	row, err := q.InvoiceGet(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Invoice{}, ErrInvoiceNotFound
	}
	if err != nil {
		return Invoice{}, fmt.Errorf("read invoice: %w", err)
	}
	inv := toInvoice(row, now)
	lines, err := q.InvoiceLines(ctx, id)
	if err != nil {
		return Invoice{}, fmt.Errorf("read invoice lines: %w", err)
	}
	for _, l := range lines {
		inv.Lines = append(inv.Lines, Line{
			Position: int(l.Position), Kind: string(l.Kind), Description: l.Description, PlanVersionID: l.PlanVersionID,
			Meter: l.MeterSlug, Tier: int(l.Tier), Quantity: l.Quantity, UnitPrice: l.UnitPrice, Amount: l.Amount, Reference: l.Reference,
		})
	}
	return inv, nil
}

// Invoice returns an invoice with its lines, to its issuer's providers,
// its customer and admins; to anyone else it is not found.
func (s *Service) Invoice(ctx context.Context, actor identity.Actor, id uuid.UUID) (Invoice, error) {
	inv, err := loadInvoice(ctx, db.New(s.pool), id, s.now())
	if err != nil {
		return Invoice{}, err
	}
	if !inv.canSee(actor) {
		return Invoice{}, ErrInvoiceNotFound
	}
	return inv, nil
}

// InvoiceByNumber is Invoice by the invoice's number.
func (s *Service) InvoiceByNumber(ctx context.Context, actor identity.Actor, number string) (Invoice, error) {
	id, err := db.New(s.pool).InvoiceGetByNumber(ctx, &number)
	if errors.Is(err, pgx.ErrNoRows) {
		return Invoice{}, ErrInvoiceNotFound
	}
	if err != nil {
		return Invoice{}, fmt.Errorf("read invoice: %w", err)
	}
	return s.Invoice(ctx, actor, id)
}
