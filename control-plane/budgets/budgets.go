// Package budgets lets a consumer organization set what it means to spend:
// an amount per subscription, or for all its subscriptions in one
// currency, with the percents of it it wants to be told about (crud.go).
// A periodic job (evaluate.go) compares each budget with the cost so far
// and the projection that billing's outlook job keeps in
// subscription_outlooks, and sends a budget.threshold_crossed webhook and
// an email to the organization's members (notices.go) once per threshold,
// basis and period: the budget_notices row, inserted in the transaction
// that publishes the webhook or queues the email, is the guard against
// replays, restarts and evaluators running at once. Changing the amount
// never deletes a row: a threshold tells again only when its level at the
// new amount lies above the cost it last reported and the cost reaches
// it, at most MaxSends times per period in all.
//
// A subscription budget may be hard: the gateway then blocks the
// subscription once its cost reaches the amount. That block is
// internal/enforcement's; this package only tells the subscriptions
// service (RecordSyncer) to rewrite the subscription's gateway record
// whenever a hard budget is created, changed or removed. Which hard
// budgets the gateway can enforce is subscriptions.HardBudgetUnenforceable's
// rule: this package refuses to create or change one it could not
// (ErrCurrencyMismatch), answers one that became so later (its plan moved
// to another currency) "enforced": false, and the evaluation counts them
// (veil_controlplane_budgets_unenforced) and logs each.
//
// The period of a subscription budget is the subscription's billing
// period. The period of an organization-wide budget is the calendar month
// in UTC; its cost is the month's share of what the organization's
// subscriptions in its currency spend (month.go): each billing period's
// cost spread evenly over the time it covers, the ended periods' from
// their invoices (drafts included, void ones not), the current ones' from
// their outlooks' cost so far, and the projection at the current pace to
// the month's end.
package budgets

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/veil-platform/veil/control-plane/notify"
)

// Publisher announces events to webhook endpoints inside the caller's
// transaction (a *webhooks.Service).
type Publisher interface {
	Publish(ctx context.Context, tx pgx.Tx, orgID uuid.UUID, eventType string, data any) error
}

// Inserter enqueues jobs inside a transaction (a *river.Client[pgx.Tx]).
type Inserter interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
}

// RecordSyncer rewrites a subscription's gateway record, which carries its
// hard budget (a *subscriptions.Service): BudgetChanged bumps the record's
// version and queues its sync inside tx.
type RecordSyncer interface {
	BudgetChanged(ctx context.Context, tx pgx.Tx, subID uuid.UUID) error
}

// Errors.
var (
	// ErrNotFound: no such budget in the caller's organization (another
	// organization's is not found either).
	ErrNotFound = errors.New("budget not found")
	// ErrSubscriptionNotFound: the subscription a budget is for is not
	// one of the caller's organization.
	ErrSubscriptionNotFound = errors.New("subscription not found")
	// ErrExists: the subscription has a budget already, or the
	// organization an organization-wide budget in that currency.
	ErrExists = errors.New("budget exists")
	// ErrCurrencyMismatch: a subscription's budget in another currency
	// than its plan version's, a hard budget the gateway could not
	// enforce (see subscriptions.HardBudgetUnenforceable), or a change of
	// a budget's currency, which stays.
	ErrCurrencyMismatch = errors.New("currency mismatch")
)

// EventThresholdCrossed is the webhook event type of a budget notice.
const EventThresholdCrossed = "budget.threshold_crossed"

// Config configures the Service.
type Config struct {
	Pool *pgxpool.Pool
	// Publisher sends the webhook notices; required to evaluate.
	Publisher Publisher
	// Mailer sends the email notices; nil sends none.
	Mailer notify.Mailer
	// Jobs enqueues the email notices (EmailArgs) in the transaction that
	// claims them. Required when Mailer is set.
	Jobs Inserter
	// Records rewrites the gateway record of a subscription whose hard
	// budget changed; nil leaves the records alone (no gateway).
	Records RecordSyncer
	Logger  *slog.Logger
	Metrics *metrics.Set
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Service manages and evaluates budgets.
type Service struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *slog.Logger
	now  func() time.Time
	// unenforced is veil_controlplane_budgets_unenforced: the hard
	// budgets of live subscriptions the gateway cannot enforce, as the
	// last evaluation found them.
	unenforced *metrics.Gauge
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil {
		return nil, errors.New("new budgets service: a pool is required")
	}
	if cfg.Mailer != nil && cfg.Jobs == nil {
		return nil, errors.New("new budgets service: jobs are required to send email notices")
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	cfg.Metrics = cmp.Or(cfg.Metrics, metrics.NewSet())
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{
		cfg: cfg, pool: cfg.Pool, log: cfg.Logger, now: cfg.Now,
		unenforced: cfg.Metrics.GetOrCreateGauge(`veil_controlplane_budgets_unenforced`, nil),
	}, nil
}
