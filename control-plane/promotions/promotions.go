// Package promotions holds a provider's promotion codes: their terms
// (percent_off, amount_off, free_units of a meter, trial_extension; a
// duration; a validity window; limits in total and per customer
// organization; priority and stacking), the plans they apply to, and
// their redemptions on subscriptions, at subscribe time
// (subscriptions.Promotions) or later, and their end (end.go).
//
// A redemption holds its limits under concurrency: one conditional UPDATE
// takes a use of the promotion (PromotionClaim) and keeps its row locked
// to the end of the transaction, so that the count of the customer's
// redemptions read next is exact; the subscription, locked first, keeps
// two redemptions on one subscription from passing each other unseen.
//
// A promotion's terms are fixed at creation, as a plan version's are:
// a change of terms is a new code. What may change later: the
// description, enabled, valid_until (set, moved or cleared) and the
// eligible plans, which apply to later redemptions only; and the limits,
// freely until the first redemption, afterwards only upward (a larger
// number, or none).
//
// Resolve reads codes for a quote without redeeming them; the quote
// applies them in the order metering.QuoteWithPromotions documents.
package promotions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/promotions/internal/db"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/metering"
)

// Durations: how many billing periods a redeemed promotion discounts.
const (
	DurationOnce      = "once"
	DurationRepeating = "repeating"
	DurationForever   = "forever"
)

// Webhook event types.
const (
	EventCreated  = "promotion.created"
	EventUpdated  = "promotion.updated"
	EventRedeemed = "promotion.redeemed"
	// EventEnded: a redemption ended, by a plan change it does not apply
	// to or by the subscriber.
	EventEnded = "promotion.ended"
)

// Sentinel errors; the HTTP layer maps each to one problem type. A code
// that cannot apply (unknown, disabled, outside its window, for another
// plan or currency) is a validation error naming the code.
var (
	// ErrNotFound: no such promotion the caller may see.
	ErrNotFound = errors.New("promotion not found")
	// ErrCodeTaken: the organization has a promotion with that code,
	// compared case-insensitively.
	ErrCodeTaken = errors.New("promotion code already taken")
	// ErrLimitReached: the promotion's redemptions are used up.
	ErrLimitReached = errors.New("promotion redemption limit reached")
	// ErrCustomerLimit: the customer organization used its redemptions
	// of the promotion.
	ErrCustomerLimit = errors.New("promotion redemption limit per customer reached")
	// ErrAlreadyRedeemed: the promotion is redeemed on the subscription.
	ErrAlreadyRedeemed = errors.New("promotion already redeemed on this subscription")
	// ErrNotStackable: an exclusive promotion next to another active one.
	ErrNotStackable = errors.New("promotion does not stack")
)

// Promotion is a provider's promotion code and its terms.
type Promotion struct {
	ID             uuid.UUID `json:"id"`
	OrganizationID uuid.UUID `json:"organization_id"`
	Code           string    `json:"code"`
	Description    string    `json:"description"`
	// Kind is percent_off, amount_off, free_units or trial_extension.
	Kind string `json:"kind"`
	// Value is a percentage, an amount in Currency, a number of units of
	// Meter or a number of days, by Kind.
	Value    decimal.Decimal `json:"value"`
	Currency *string         `json:"currency"`
	Meter    *string         `json:"meter"`
	// Duration is once, repeating (DurationPeriods periods) or forever.
	Duration        string     `json:"duration"`
	DurationPeriods *int       `json:"duration_periods"`
	ValidFrom       time.Time  `json:"valid_from"`
	ValidUntil      *time.Time `json:"valid_until"`
	// MaxRedemptions and MaxPerCustomer are null for no limit.
	MaxRedemptions *int `json:"max_redemptions"`
	MaxPerCustomer *int `json:"max_per_customer"`
	Redemptions    int  `json:"redemptions"`
	Priority       int  `json:"priority"`
	Stackable      bool `json:"stackable"`
	Enabled        bool `json:"enabled"`
	// PlanIDs are the plans it applies to; empty: every plan of the
	// organization's APIs.
	PlanIDs   []uuid.UUID `json:"plan_ids"`
	CreatedBy string      `json:"created_by"`
	CreatedAt time.Time   `json:"created_at"`
	UpdatedAt time.Time   `json:"updated_at"`
}

// eligible reports whether p applies to plan.
func (p Promotion) eligible(plan uuid.UUID) bool {
	if len(p.PlanIDs) == 0 {
		return true
	}
	for _, id := range p.PlanIDs {
		if id == plan {
			return true
		}
	}
	return false
}

// Metering is p as a quote applies it.
func (p Promotion) Metering() metering.Promotion {
	return metering.Promotion{
		ID: p.ID.String(), Code: p.Code, Kind: p.Kind, Value: p.Value, Currency: deref(p.Currency), Meter: deref(p.Meter),
		Priority: p.Priority, Stackable: p.Stackable,
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// Subscriptions is what a redemption needs of the subscriptions service
// (a *subscriptions.Service).
type Subscriptions interface {
	LockVisible(ctx context.Context, tx pgx.Tx, actor identity.Actor, id uuid.UUID) (subscriptions.Subscription, error)
	GetSubscription(ctx context.Context, actor identity.Actor, id uuid.UUID) (subscriptions.Subscription, error)
	ExtendTrial(ctx context.Context, tx pgx.Tx, sub subscriptions.Subscription, days int, starting bool) (time.Time, error)
}

// Publisher announces changes to webhook endpoints inside the caller's
// transaction (a *webhooks.Service).
type Publisher = subscriptions.Publisher

// Config configures the Service.
type Config struct {
	Pool          *pgxpool.Pool
	Subscriptions Subscriptions
	Publisher     Publisher
	Logger        *slog.Logger
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// Service manages promotions and their redemptions.
type Service struct {
	cfg  Config
	pool *pgxpool.Pool
	now  func() time.Time
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil || cfg.Subscriptions == nil || cfg.Publisher == nil {
		return nil, errors.New("new promotions: pool, subscriptions and publisher are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, pool: cfg.Pool, now: cfg.Now}, nil
}

var _ subscriptions.Promotions = (*Service)(nil)

func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// record audits a change and announces it to each of orgs' webhooks, all
// inside tx.
func (s *Service) record(ctx context.Context, tx pgx.Tx, actor identity.Actor, org uuid.UUID, action, targetType string, id uuid.UUID,
	before, after any, event string, data any, orgs ...uuid.UUID) error {
	if err := audit.Record(ctx, tx, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: org,
		Action: action, TargetType: targetType, TargetID: id.String(), Before: before, After: after,
	}); err != nil {
		return err
	}
	for i, o := range orgs {
		if i > 0 && o == orgs[0] {
			continue
		}
		if err := s.cfg.Publisher.Publish(ctx, tx, o, event, data); err != nil {
			return fmt.Errorf("publish %s: %w", event, err)
		}
	}
	return nil
}

// promotionRow is a generated row holding a promotion; every read selects
// the same columns.
type promotionRow interface {
	db.PromotionGetByIDRow | db.PromotionGetByIDForUpdateRow | db.PromotionGetByCodeRow | db.PromotionListRow
}

// toPromotion converts the row of a query that reads a promotion; no row
// is ErrNotFound.
func toPromotion[R promotionRow](r R, err error) (Promotion, error) {
	if errors.Is(err, pgx.ErrNoRows) {
		return Promotion{}, ErrNotFound
	}
	if err != nil {
		return Promotion{}, fmt.Errorf("scan promotion: %w", err)
	}
	row := db.PromotionGetByIDRow(r)
	plans := row.PlanIds
	if plans == nil {
		plans = []uuid.UUID{}
	}
	return Promotion{
		ID: row.ID, OrganizationID: row.OrganizationID, Code: row.Code, Description: row.Description, Kind: string(row.Kind),
		Value: row.Value, Currency: row.Currency, Meter: row.Meter, Duration: string(row.Duration), DurationPeriods: row.DurationPeriods,
		ValidFrom: row.ValidFrom, ValidUntil: row.ValidUntil, MaxRedemptions: row.MaxRedemptions, MaxPerCustomer: row.MaxPerCustomer,
		Redemptions: row.Redemptions, Priority: row.Priority, Stackable: row.Stackable, Enabled: row.Enabled, PlanIDs: plans,
		CreatedBy: row.CreatedBy, CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt,
	}, nil
}
