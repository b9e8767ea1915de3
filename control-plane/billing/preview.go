package billing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/metering"
)

// ErrPreviewUnavailable: the preview needs ClickHouse's usage, and the
// control plane runs without it.
var ErrPreviewUnavailable = errors.New("usage store unavailable for the preview")

// Preview is the invoice the subscription's current period would get were
// it to end with the usage counted so far: the period's plan-version
// segments (base fee and proration as the invoice will have them), the
// usage from ClickHouse up to now, the active promotions, pending
// adjustments, the credit balance and the customer's tax treatment. It is
// a draft that is never stored (no id, no number); the invoice of the
// period is built when it closes. The subscriber's members, the API's
// provider and admins may see it; anyone else gets not found.
func (s *Service) Preview(ctx context.Context, actor identity.Actor, subID uuid.UUID) (Invoice, error) {
	q := db.New(s.pool)
	sub, err := q.PreviewSubscription(ctx, subID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Invoice{}, ErrSubscriptionNotFound
	}
	if err != nil {
		return Invoice{}, fmt.Errorf("read subscription: %w", err)
	}
	if !(parties{sub.IssuerID, sub.CustomerID}).canSee(actor) {
		return Invoice{}, ErrSubscriptionNotFound
	}
	if s.cfg.ClickHouse == nil {
		return Invoice{}, ErrPreviewUnavailable
	}
	now := s.now().UTC()
	p, err := s.buildPreview(ctx, q, sub, now)
	if err != nil {
		return Invoice{}, err
	}
	return previewInvoice(sub, p.out, now), nil
}

// preview is a computed preview: the invoice's input, with the usage
// counted up to now, and the invoice built from it.
type preview struct {
	in  metering.InvoiceInput
	out metering.Invoice
}

// buildPreview builds sub's preview at now, exactly as its period's
// invoice would be built were the period to end now.
func (s *Service) buildPreview(ctx context.Context, q *db.Queries, sub db.PreviewSubscriptionRow, now time.Time) (preview, error) {
	start, end := sub.CurrentPeriodStart.UTC(), sub.CurrentPeriodEnd.UTC()
	segs, err := s.liveSegments(ctx, sub, now)
	if err != nil {
		return preview{}, err
	}
	inv := db.Invoice{IssuerID: sub.IssuerID, CustomerID: sub.CustomerID, SubscriptionID: sub.ID, PeriodStart: start, PeriodEnd: end}
	var c Cites
	if err := s.chooseTax(ctx, inv, &c); err != nil {
		return preview{}, err
	}
	in := metering.InvoiceInput{
		Currency: segs[0].Terms.Currency, PeriodStart: start, PeriodEnd: end, Segments: segs, Tax: c.Tax.treatment(),
		Trial: sub.TrialEndsAt != nil && !sub.TrialEndsAt.Before(end), CreditAvailable: decimal.Zero,
	}
	if !in.Trial {
		if err := s.previewExtras(ctx, q, inv, &in); err != nil {
			return preview{}, err
		}
	}
	out, err := metering.BuildInvoice(in)
	if err != nil {
		return preview{}, fmt.Errorf("preview invoice: %w", err)
	}
	return preview{in: in, out: out}, nil
}

// liveSegments are the current period's segments with the usage counted
// from their start (or the trial's end) to now.
func (s *Service) liveSegments(ctx context.Context, sub db.PreviewSubscriptionRow, now time.Time) ([]metering.Segment, error) {
	hist, err := s.histories(ctx, []uuid.UUID{sub.ID})
	if err != nil {
		return nil, err
	}
	gs := segmentsOf(hist[sub.ID], sub.CurrentPeriodStart.UTC(), sub.CurrentPeriodEnd.UTC(), sub.TrialEndsAt, sub.CanceledAt)
	versions := make([]uuid.UUID, len(gs))
	for i, g := range gs {
		versions[i] = g.version
	}
	meters, err := s.versionMeters(ctx, versions)
	if err != nil {
		return nil, err
	}
	windows := make([]metering.MeterWindow, len(gs))
	for i, g := range gs {
		from, to := g.window()
		windows[i] = metering.MeterWindow{Subject: sub.ID.String(), Meters: meters[g.version], From: from, To: minTime(to, now)}
	}
	// As the period's snapshot counts (snapshot.go): the same figures
	// either way, the roll-up's whole hours faster.
	count := metering.MeterTotalsRollupMany
	if s.cfg.SnapshotBaseTable {
		count = metering.MeterTotalsMany
	}
	totals, err := count(ctx, s.cfg.ClickHouse, windows)
	if err != nil {
		return nil, fmt.Errorf("count usage so far: %w", err)
	}
	out := make([]metering.Segment, len(gs))
	for i, g := range gs {
		terms, err := pricing.TermsForVersion(ctx, s.pool, g.version)
		if err != nil {
			return nil, fmt.Errorf("load terms of plan version %s: %w", g.version, err)
		}
		out[i] = g.metered(terms, totals[i])
	}
	return out, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// previewExtras adds what a charged period's invoice applies besides its
// usage: active promotions, pending adjustments and the credit balance.
func (s *Service) previewExtras(ctx context.Context, q *db.Queries, inv db.Invoice, in *metering.InvoiceInput) error {
	// The invoice's filter: an amount off in another currency is left
	// for an invoice in that currency, not refused.
	promos, err := activePromotionsIn(ctx, q, inv.SubscriptionID, inv.PeriodEnd, in.Currency.Code)
	if err != nil {
		return err
	}
	if in.Promotions, err = citedPromotions(ctx, q, promos); err != nil {
		return err
	}
	adjs, err := s.pendingAdjustments(ctx, q, inv.SubscriptionID, inv.PeriodStart, in.Currency.Code)
	if err != nil {
		return err
	}
	if in.Adjustments, err = s.citedAdjustments(ctx, q, adjs); err != nil {
		return err
	}
	in.CreditAvailable, err = q.CreditBalanceGet(ctx, db.CreditBalanceGetParams{
		IssuerID: inv.IssuerID, CustomerID: inv.CustomerID, Currency: in.Currency.Code,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		in.CreditAvailable, err = decimal.Zero, nil
	}
	if err != nil {
		return fmt.Errorf("read credit balance: %w", err)
	}
	return nil
}

// previewInvoice is a computed preview as an Invoice: a draft without id
// or number, its lines numbered in order.
func previewInvoice(sub db.PreviewSubscriptionRow, out metering.Invoice, now time.Time) Invoice {
	inv := Invoice{
		IssuerID: sub.IssuerID, CustomerID: sub.CustomerID, SubscriptionID: sub.ID, Status: StatusDraft, Currency: out.Currency,
		PeriodStart: sub.CurrentPeriodStart, PeriodEnd: sub.CurrentPeriodEnd, Subtotal: out.Subtotal, Discount: out.Discount,
		Tax: out.Tax, CreditApplied: out.CreditApplied, Total: out.Total, AmountDue: out.AmountDue, NetDays: int(sub.NetDays),
		Cites: []byte("{}"), CreatedAt: now, UpdatedAt: now, Lines: make([]Line, len(out.Lines)),
	}
	for i, l := range out.Lines {
		line := Line{Position: i + 1, Kind: l.Kind, Description: l.Description, Tier: l.Tier, Quantity: l.Quantity,
			UnitPrice: l.UnitPrice, Amount: l.Amount, Reference: l.Reference}
		if v, err := uuid.Parse(l.PlanVersionID); err == nil {
			line.PlanVersionID = &v
		}
		if l.Meter != "" {
			line.Meter = &l.Meter
		}
		inv.Lines[i] = line
	}
	return inv
}
