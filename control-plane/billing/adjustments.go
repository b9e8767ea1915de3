package billing

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// Adjustment kinds.
const (
	// AdjustmentCorrection is a usage correction a provider or an admin
	// makes, with a reason.
	AdjustmentCorrection = "correction"
	// AdjustmentLateUsage is what a recount of an invoiced period found
	// after its invoice.
	AdjustmentLateUsage = "late_usage"
)

// ErrBelowZero: a negative correction would take a period's billed
// quantity of a meter below zero.
var ErrBelowZero = errors.New("correction would take the period's usage below zero")

// Adjustment is a correction or late usage, billed on the subscription's
// next invoice (InvoiceID once billed), never by changing a finalized one.
type Adjustment struct {
	ID              uuid.UUID  `json:"id"`
	SubscriptionID  uuid.UUID  `json:"subscription_id"`
	BillingPeriodID *uuid.UUID `json:"billing_period_id"`
	Kind            string     `json:"kind"`
	// Meter and Quantity, or Amount and Currency.
	Meter    *string          `json:"meter"`
	Quantity *decimal.Decimal `json:"quantity"`
	Amount   *decimal.Decimal `json:"amount"`
	Currency *string          `json:"currency"`
	// PlanVersionID and SegmentStart name the plan-version segment of
	// the period a quantity concerns (late usage); null: the last one.
	PlanVersionID *uuid.UUID `json:"plan_version_id"`
	SegmentStart  *time.Time `json:"segment_start"`
	Reason        string     `json:"reason"`
	Actor         string     `json:"actor"`
	InvoiceID     *uuid.UUID `json:"invoice_id"`
	CreatedAt     time.Time  `json:"created_at"`
}

func toAdjustment(r db.BillingAdjustment) Adjustment {
	return Adjustment{
		ID: r.ID, SubscriptionID: r.SubscriptionID, BillingPeriodID: r.BillingPeriodID, Kind: string(r.Kind), Meter: r.MeterSlug,
		Quantity: r.Quantity, Amount: r.Amount, Currency: r.Currency, PlanVersionID: r.PlanVersionID, SegmentStart: r.SegmentStart,
		Reason: r.Reason, Actor: r.Actor, InvoiceID: r.InvoiceID, CreatedAt: r.CreatedAt,
	}
}

// AdjustmentInput is a usage correction: a quantity of a meter for a
// closed period (priced by that period's plan version, tiers continuing
// from what it billed), or an amount in the subscription's currency
// (positive charges, negative credits), for a period or none.
type AdjustmentInput struct {
	BillingPeriodID *uuid.UUID       `json:"billing_period_id"`
	Meter           *string          `json:"meter"`
	Quantity        *decimal.Decimal `json:"quantity"`
	Amount          *decimal.Decimal `json:"amount"`
	Currency        *string          `json:"currency"`
	Reason          string           `json:"reason"`
}

// maxAdjustment bounds a quantity or an amount typed by a person.
var maxAdjustment = decimal.New(1, 12)

// Validate checks the input alone; CreateAdjustment checks it against the
// subscription.
func (in *AdjustmentInput) Validate() error {
	var v validation.Error
	inRange := func(d decimal.Decimal) bool {
		return !d.IsZero() && d.Abs().LessThan(maxAdjustment) && d.Exponent() >= -6
	}
	switch {
	case (in.Quantity == nil) == (in.Amount == nil):
		v.Add("quantity", "give either a meter and a quantity, or an amount and its currency")
	case in.Quantity != nil:
		if in.Meter == nil || *in.Meter == "" {
			v.Add("meter", "is required with a quantity")
		}
		if !inRange(*in.Quantity) {
			v.Add("quantity", "must be non-zero, below 10^12 in size, with at most 6 decimals")
		}
		if in.Currency != nil {
			v.Add("currency", "goes with an amount, not a quantity")
		}
		if in.BillingPeriodID == nil {
			v.Add("billing_period_id", "is required with a quantity: it is priced by that period's plan version")
		}
	default:
		if in.Meter != nil {
			v.Add("meter", "goes with a quantity, not an amount")
		}
		cur, err := metering.CurrencyOf(deref(in.Currency))
		if err != nil {
			v.Add("currency", "must be a currency Veil prices in (ISO 4217, upper case)")
		}
		if !inRange(*in.Amount) || (err == nil && !in.Amount.Equal(cur.Round(*in.Amount))) {
			v.Add("amount", "must be non-zero, below 10^12 in size, in the currency's minor unit")
		}
	}
	if n := utf8.RuneCountInString(in.Reason); n < 1 || n > 1000 {
		v.Add("reason", "must be 1 to 1000 characters")
	}
	return v.Err()
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// CreateAdjustment records a usage correction of a subscription, audited,
// for its next invoice. Only the provider of its API and admins may; the
// subscriber gets identity.ErrForbidden, anyone else not found.
func (s *Service) CreateAdjustment(ctx context.Context, actor identity.Actor, subID uuid.UUID, in AdjustmentInput) (Adjustment, error) {
	if err := in.Validate(); err != nil {
		return Adjustment{}, err
	}
	// A correction below zero is checked against the segment that will
	// price it, read as invoices read it. It is read before the
	// transaction: a closed period's snapshot and plan history do not
	// change; what does, its adjustments, is summed under the period's
	// row lock (checkAdjustment).
	var last *metering.Segment
	if in.Quantity != nil && in.Quantity.IsNegative() {
		segs, _, err := s.SegmentsFor(ctx, *in.BillingPeriodID)
		switch {
		case errors.Is(err, ErrNoSnapshot), errors.Is(err, ErrPeriodNotFound):
		case err != nil:
			return Adjustment{}, err
		case len(segs) > 0:
			last = &segs[len(segs)-1]
		}
	}
	var out Adjustment
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		sub, err := adjustableSubscription(ctx, q, actor, subID)
		if err != nil {
			return err
		}
		if err := checkAdjustment(ctx, q, subID, sub, in, last); err != nil {
			return err
		}
		row, err := q.AdjustmentInsert(ctx, db.AdjustmentInsertParams{
			SubscriptionID: subID, BillingPeriodID: in.BillingPeriodID, Kind: db.AdjustmentKindCorrection, MeterSlug: in.Meter,
			Quantity: in.Quantity, Amount: in.Amount, Currency: in.Currency, Reason: in.Reason, Actor: actor.Subject,
		})
		if err != nil {
			return fmt.Errorf("insert adjustment: %w", err)
		}
		out = Adjustment{
			ID: row.ID, SubscriptionID: subID, BillingPeriodID: in.BillingPeriodID, Kind: AdjustmentCorrection, Meter: in.Meter,
			Quantity: in.Quantity, Amount: in.Amount, Currency: in.Currency, Reason: in.Reason, Actor: actor.Subject, CreatedAt: row.CreatedAt,
		}
		return audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: sub.IssuerID, Action: "billing_adjustment.create",
			TargetType: "billing_adjustment", TargetID: row.ID.String(), After: out,
		})
	})
	return out, err
}

// adjustableSubscription reads a subscription for a change of its
// billing, which its API's provider and admins may make.
func adjustableSubscription(ctx context.Context, q *db.Queries, actor identity.Actor, subID uuid.UUID) (db.AdjustableSubscriptionRow, error) {
	sub, err := q.AdjustableSubscription(ctx, subID)
	if errors.Is(err, pgx.ErrNoRows) {
		return sub, ErrSubscriptionNotFound
	}
	if err != nil {
		return sub, fmt.Errorf("read subscription: %w", err)
	}
	return sub, parties{sub.IssuerID, sub.CustomerID}.canChange(actor, ErrSubscriptionNotFound)
}

// checkAdjustment checks a correction against its subscription: the
// period is one of its closed ones, the meter one of its API's, the
// currency its own, and a negative quantity leaves the quantity of the
// period's last segment (last, which prices it) at zero or more. The
// period's row stays locked until the transaction ends, so corrections
// of a period are checked one after the other.
func checkAdjustment(ctx context.Context, q *db.Queries, subID uuid.UUID, sub db.AdjustableSubscriptionRow, in AdjustmentInput, last *metering.Segment) error {
	if in.BillingPeriodID != nil {
		state, err := q.PeriodOfSubscriptionLock(ctx, db.PeriodOfSubscriptionLockParams{ID: *in.BillingPeriodID, SubscriptionID: subID})
		if errors.Is(err, pgx.ErrNoRows) {
			return validation.One("billing_period_id", "is not a billing period of the subscription")
		}
		if err != nil {
			return fmt.Errorf("read billing period: %w", err)
		}
		if in.Quantity != nil && state == db.BillingPeriodStateOpen {
			return validation.One("billing_period_id", "is still open: its usage is not counted yet")
		}
	}
	if in.Amount != nil {
		if *in.Currency != sub.Currency {
			return validation.One("currency", "must be the subscription's, "+sub.Currency)
		}
		return nil
	}
	ok, err := q.MeterOfAPI(ctx, db.MeterOfAPIParams{ApiID: sub.ApiID, Slug: *in.Meter})
	if err != nil {
		return fmt.Errorf("read meter: %w", err)
	}
	if !ok {
		return validation.One("meter", "is not a meter of the subscription's API")
	}
	if !in.Quantity.IsNegative() {
		return nil
	}
	if last == nil {
		return ErrBelowZero // nothing counted that a negative correction could take back
	}
	adjusted, err := q.AdjustmentQuantity(ctx, db.AdjustmentQuantityParams{
		BillingPeriodID: in.BillingPeriodID, MeterSlug: in.Meter, LastStart: last.From, SegmentStart: last.From, WithPending: true,
	})
	if err != nil {
		return fmt.Errorf("sum adjustments: %w", err)
	}
	if last.Usage[*in.Meter].Add(adjusted).Add(*in.Quantity).IsNegative() {
		return ErrBelowZero
	}
	return nil
}

// Adjustments lists a subscription's adjustments, billed and pending, to
// its provider, its subscriber and admins.
func (s *Service) Adjustments(ctx context.Context, actor identity.Actor, subID uuid.UUID) ([]Adjustment, error) {
	q := db.New(s.pool)
	if _, err := adjustableSubscription(ctx, q, actor, subID); err != nil && !errors.Is(err, identity.ErrForbidden) {
		return nil, err
	}
	rows, err := q.AdjustmentsBySubscription(ctx, subID)
	if err != nil {
		return nil, fmt.Errorf("list adjustments: %w", err)
	}
	out := make([]Adjustment, 0, len(rows))
	for _, r := range rows {
		out = append(out, toAdjustment(r))
	}
	return out, nil
}
