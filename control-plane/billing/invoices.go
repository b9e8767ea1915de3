package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/metering"
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
	// order of their periods, and an earlier one is not invoiced yet
	// (its invoice is a draft, or it has none).
	ErrEarlierDraft = errors.New("an earlier period of the subscription is not invoiced yet")
	// ErrCustomerNotFound: the organization is not a customer of the
	// issuer the actor may act for.
	ErrCustomerNotFound = errors.New("customer not found")
	// ErrSubscriptionNotFound: no such subscription the actor may see.
	ErrSubscriptionNotFound = errors.New("subscription not found")
	// ErrAmbiguousNumber: invoices of several issuers have the number.
	ErrAmbiguousNumber = errors.New("invoice number of several issuers")
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

// canSee reports whether actor may read inv (parties.canSee).
func (inv Invoice) canSee(a identity.Actor) bool {
	return parties{inv.IssuerID, inv.CustomerID}.canSee(a)
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

// InvoiceByNumber is Invoice by the invoice's number. Numbers are unique
// per issuer: when the actor sees invoices of several issuers with that
// number (an admin), it is ErrAmbiguousNumber, and the id names one.
func (s *Service) InvoiceByNumber(ctx context.Context, actor identity.Actor, number string) (Invoice, error) {
	rows, err := db.New(s.pool).InvoicesByNumber(ctx, &number)
	if err != nil {
		return Invoice{}, fmt.Errorf("read invoice: %w", err)
	}
	var found []uuid.UUID
	for _, r := range rows {
		if (parties{r.IssuerID, r.CustomerID}).canSee(actor) {
			found = append(found, r.ID)
		}
	}
	switch len(found) {
	case 0:
		return Invoice{}, ErrInvoiceNotFound
	case 1:
		return s.Invoice(ctx, actor, found[0])
	default:
		return Invoice{}, fmt.Errorf("%w: %s is the number of invoices %v", ErrAmbiguousNumber, number, found)
	}
}

// Cites is what an invoice is computed from, stored with it: explain
// rebuilds the invoice from these alone (the snapshot's lines, the plan
// versions' terms, the promotions' and adjustments' rows they name, the
// tax treatment and the credit as they were) and compares.
type Cites struct {
	BillingPeriodID uuid.UUID `json:"billing_period_id"`
	SnapshotID      uuid.UUID `json:"snapshot_id"`
	Trial           bool      `json:"trial"`
	// PlanVersions are the versions of the period's segments, in order.
	PlanVersions []string          `json:"plan_versions"`
	Promotions   []CitedPromotion  `json:"promotions"`
	Adjustments  []CitedAdjustment `json:"adjustments"`
	TaxRuleID    *uuid.UUID        `json:"tax_rule_id,omitempty"`
	Tax          CitedTax          `json:"tax"`
	Customer     *Profile          `json:"customer"`
	// Issuer is the issuer's billing profile as it was: the document's
	// From block, which a later edit of the profile does not change.
	Issuer *Profile `json:"issuer,omitempty"`
	// CreditAvailable is the customer's balance the invoice could use:
	// read when a draft is computed, under the balance's lock when it is
	// finalized.
	CreditAvailable decimal.Decimal `json:"credit_available"`
	// CreditIssued is the credit a negative total gave the customer.
	CreditIssued decimal.Decimal `json:"credit_issued"`
}

// CitedPromotion is a redemption the invoice applied.
type CitedPromotion struct {
	RedemptionID uuid.UUID `json:"redemption_id"`
	PromotionID  uuid.UUID `json:"promotion_id"`
	Code         string    `json:"code"`
}

// CitedAdjustment is an adjustment the invoice billed: the segment of its
// period whose version priced it and what the period had billed of its
// meter before it (billedOf: every segment's snapshot, the adjustments
// billed before and those before it on the invoice).
type CitedAdjustment struct {
	ID              uuid.UUID       `json:"id"`
	BillingPeriodID *uuid.UUID      `json:"billing_period_id,omitempty"`
	PlanVersionID   *uuid.UUID      `json:"plan_version_id,omitempty"`
	SegmentStart    *time.Time      `json:"segment_start,omitempty"`
	Billed          decimal.Decimal `json:"billed"`
}

// CitedTax is the tax treatment as it applied.
type CitedTax struct {
	Name          string          `json:"name"`
	RatePercent   decimal.Decimal `json:"rate_percent"`
	Inclusive     bool            `json:"inclusive"`
	ReverseCharge bool            `json:"reverse_charge"`
	Mention       string          `json:"mention"`
}

func (t CitedTax) treatment() metering.TaxTreatment {
	return metering.TaxTreatment{Name: t.Name, RatePercent: t.RatePercent, Inclusive: t.Inclusive, ReverseCharge: t.ReverseCharge, Mention: t.Mention}
}

// BuildDrafts builds the draft invoice of up to max closed periods that
// have none, oldest first, each in its own transaction. A period billed
// already (a run twice, or beside another) is skipped: billing_period_id
// is unique. It returns how many drafts it built.
func (s *Service) BuildDrafts(ctx context.Context, max int) (int, error) {
	return s.buildBatch(ctx, max, false)
}

// buildBatch builds the drafts of up to max periods, and finalizes each at
// once in the same transaction when finalize is set (the cycle does when
// drafts are not reviewed: Config.Review 0).
func (s *Service) buildBatch(ctx context.Context, max int, finalize bool) (int, error) {
	periods, err := db.New(s.pool).PeriodsToInvoice(ctx, int32(max))
	if err != nil {
		return 0, fmt.Errorf("list periods to invoice: %w", err)
	}
	// A period that cannot be billed (its error is returned) does not
	// hold up the others.
	return s.each(ctx, len(periods), func(i int) (bool, error) {
		built, err := s.buildDraft(ctx, periods[i], finalize)
		if err != nil {
			return false, fmt.Errorf("build invoice of period %s: %w", periods[i].ID, err)
		}
		return built, nil
	})
}

// each runs do for the items 0 to n-1 on Config.Workers goroutines, and
// returns how many calls reported done and their errors together. Each
// item is its own transaction; the items do not wait for one another,
// except for what their row locks order (an issuer's numbers).
func (s *Service) each(ctx context.Context, n int, do func(i int) (bool, error)) (int, error) {
	var (
		mu    sync.Mutex
		count int
		errs  []error
		wg    sync.WaitGroup
		next  = make(chan int)
	)
	for range min(s.cfg.Workers, n) {
		wg.Go(func() {
			for i := range next {
				done, err := do(i)
				mu.Lock()
				if done {
					count++
				}
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return count, errors.Join(append(errs, ctx.Err())...)
}

// buildDraft builds the draft of a period unless it has one, and
// finalizes it when finalize is set. What is read outside Postgres's
// transaction is read first (basis).
func (s *Service) buildDraft(ctx context.Context, p db.PeriodsToInvoiceRow, finalize bool) (bool, error) {
	c, err := db.New(s.pool).InvoiceBillingContext(ctx, p.SubscriptionID)
	if err != nil {
		return false, fmt.Errorf("read subscription: %w", err)
	}
	b, err := s.prepare(ctx, invoiceKey{period: p.ID, sub: p.SubscriptionID, issuer: c.IssuerID, customer: c.CustomerID, periodEnd: p.PeriodEnd})
	if err != nil {
		return false, err
	}
	built := false
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		id, err := q.InvoiceDraftInsert(ctx, db.InvoiceDraftInsertParams{
			IssuerID: c.IssuerID, CustomerID: c.CustomerID, SubscriptionID: p.SubscriptionID, BillingPeriodID: &p.ID,
			// XXX (ISO 4217's "no currency") until the recomputation
			// below, in this transaction, sets the period's.
			Currency: "XXX", PeriodStart: p.PeriodStart, PeriodEnd: p.PeriodEnd, NetDays: c.NetDays,
			CreatedAt: s.now(),
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("insert draft invoice: %w", err)
		}
		inv, err := q.InvoiceLock(ctx, id)
		if err != nil {
			return fmt.Errorf("lock invoice: %w", err)
		}
		built = true
		// Finalized at once, in this transaction, unless an earlier period
		// has to come first.
		if finalize {
			_, err := s.finalizeTx(ctx, tx, identity.System, inv, b)
			if !errors.Is(err, ErrEarlierDraft) {
				return err
			}
		}
		_, err = s.recompute(ctx, q, inv, b, nil)
		return err
	})
	return built, err
}

// RecomputeDrafts recomputes up to max drafts, each in its own
// transaction: a draft follows the adjustments, credit and tax rules
// until it is finalized. One that fails does not hold up the drafts
// after it (it is listed first again next time); the errors are returned
// together.
func (s *Service) RecomputeDrafts(ctx context.Context, max int) (int, error) {
	ids, err := db.New(s.pool).DraftsToRecompute(ctx, int32(max))
	if err != nil {
		return 0, fmt.Errorf("list drafts: %w", err)
	}
	n := 0
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		err := s.RecomputeDraft(ctx, id)
		switch {
		case errors.Is(err, ErrInvoiceState):
		case err != nil:
			s.log.ErrorContext(ctx, "billing draft not recomputed", "invoice", id, "error", err)
			errs = append(errs, fmt.Errorf("recompute invoice %s: %w", id, err))
		default:
			n++
		}
	}
	return n, errors.Join(errs...)
}

// RecomputeDraft recomputes a draft invoice from what it would cite now.
func (s *Service) RecomputeDraft(ctx context.Context, id uuid.UUID) error {
	b, err := s.prepareInvoice(ctx, id)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		inv, err := lockDraft(ctx, q, id)
		if err != nil {
			return err
		}
		_, err = s.recompute(ctx, q, inv, b, nil)
		return err
	})
}

// lockInvoice locks an invoice: ErrInvoiceNotFound when there is none.
func lockInvoice(ctx context.Context, q *db.Queries, id uuid.UUID) (db.Invoice, error) {
	inv, err := q.InvoiceLock(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return inv, ErrInvoiceNotFound
	}
	if err != nil {
		return inv, fmt.Errorf("lock invoice: %w", err)
	}
	return inv, nil
}

// lockDraft locks an invoice that must be a draft.
func lockDraft(ctx context.Context, q *db.Queries, id uuid.UUID) (db.Invoice, error) {
	inv, err := lockInvoice(ctx, q, id)
	if err != nil {
		return inv, err
	}
	if inv.Status != db.InvoiceStatusDraft {
		return inv, ErrInvoiceState
	}
	return inv, nil
}

// recompute computes a locked draft again and stores its lines, amounts
// and cites. credit is the customer's balance read under its lock when
// finalizing; nil reads it without (a draft only shows what it would use).
func (s *Service) recompute(ctx context.Context, q *db.Queries, inv db.Invoice, b *basis, credit *decimal.Decimal) (computed, error) {
	if inv.BillingPeriodID == nil {
		return computed{}, fmt.Errorf("recompute invoice %s: it bills no period", inv.ID)
	}
	c, err := s.choose(ctx, q, inv, b, credit)
	if err != nil {
		return computed{}, err
	}
	in, err := s.inputFrom(ctx, q, inv, c.cites, b)
	if err != nil {
		return computed{}, err
	}
	out, err := metering.BuildInvoice(in)
	if err != nil {
		return computed{}, fmt.Errorf("build invoice %s: %w", inv.ID, err)
	}
	c.invoice = out
	c.cites.CreditIssued = out.CreditIssued
	return c, s.store(ctx, q, inv.ID, c)
}

// computed is an invoice as computed, with what it cites.
type computed struct {
	cites   Cites
	netDays int32
	invoice metering.Invoice
}

// store replaces a draft's lines and amounts with c's.
func (s *Service) store(ctx context.Context, q *db.Queries, id uuid.UUID, c computed) error {
	raw, err := json.Marshal(c.cites)
	if err != nil {
		return fmt.Errorf("encode invoice cites: %w", err)
	}
	if err := q.InvoiceLinesDelete(ctx, id); err != nil {
		return fmt.Errorf("delete invoice lines: %w", err)
	}
	params := make([]db.InvoiceLineInsertParams, len(c.invoice.Lines))
	for i, l := range c.invoice.Lines {
		if params[i], err = lineParams(id, i, l); err != nil {
			return err
		}
	}
	var batchErr error
	q.InvoiceLineInsert(ctx, params).Exec(func(i int, err error) {
		if err != nil && batchErr == nil {
			batchErr = fmt.Errorf("insert invoice line %d: %w", i+1, err)
		}
	})
	if batchErr != nil {
		return batchErr
	}
	o := c.invoice
	err = q.InvoiceDraftUpdate(ctx, db.InvoiceDraftUpdateParams{
		ID: id, Currency: o.Currency, Subtotal: o.Subtotal, Discount: o.Discount, Tax: o.Tax, CreditApplied: o.CreditApplied,
		Total: o.Total, AmountDue: o.AmountDue, NetDays: c.netDays, Cites: raw,
	})
	if err != nil {
		return fmt.Errorf("update draft invoice: %w", err)
	}
	return nil
}

// lineParams is the row of the i-th line of an invoice.
func lineParams(id uuid.UUID, i int, l metering.InvoiceLine) (db.InvoiceLineInsertParams, error) {
	p := db.InvoiceLineInsertParams{
		InvoiceID: id, Position: int32(i + 1), Kind: db.InvoiceLineKind(l.Kind), Description: l.Description, Tier: int32(l.Tier),
		Quantity: l.Quantity, UnitPrice: l.UnitPrice, Amount: l.Amount, Reference: l.Reference,
	}
	if l.PlanVersionID != "" {
		v, err := uuid.Parse(l.PlanVersionID)
		if err != nil {
			return p, fmt.Errorf("store invoice line %d: plan version %q: %w", i+1, l.PlanVersionID, err)
		}
		p.PlanVersionID = &v
	}
	if l.Meter != "" {
		p.MeterSlug = &l.Meter
	}
	return p, nil
}

// choose decides what a period's invoice cites now: its snapshot, the
// subscription's promotions active for it, its pending adjustments, the
// customer's tax treatment and credit. A trial period cites only its
// snapshot: it is charged nothing, and what it would have used waits for
// the first invoice charged.
func (s *Service) choose(ctx context.Context, q *db.Queries, inv db.Invoice, b *basis, credit *decimal.Decimal) (computed, error) {
	period, err := q.BillingPeriodGet(ctx, *inv.BillingPeriodID)
	if err != nil {
		return computed{}, fmt.Errorf("read billing period: %w", err)
	}
	c, err := citesOf(ctx, q, period.ID, period.Trial, b)
	if err != nil || period.Trial {
		return c, err
	}
	currency := b.segments[period.ID].segs[0].Terms.Currency.Code
	if c.cites.Promotions, err = activePromotionsIn(ctx, q, inv.SubscriptionID, period.PeriodEnd, currency); err != nil {
		return computed{}, err
	}
	if c.cites.Adjustments, err = pendingAdjustmentsOf(ctx, q, b, inv.SubscriptionID, period.PeriodStart, currency); err != nil {
		return computed{}, err
	}
	if credit != nil {
		c.cites.CreditAvailable = *credit
	} else if c.cites.CreditAvailable, err = q.CreditBalanceGet(ctx, db.CreditBalanceGetParams{
		IssuerID: inv.IssuerID, CustomerID: inv.CustomerID, Currency: currency,
	}); err != nil {
		return computed{}, fmt.Errorf("read credit balance: %w", err)
	}
	return c, nil
}

// citesOf is what an invoice of a period cites whatever else it bills:
// its snapshot, its segments' versions, the net days of the last one,
// the billing profiles and tax treatment of b.
func citesOf(ctx context.Context, q *db.Queries, period uuid.UUID, trial bool, b *basis) (computed, error) {
	ps, ok := b.segments[period]
	if !ok || len(ps.segs) == 0 {
		return computed{}, fmt.Errorf("invoice period %s: its snapshot has no segment", period)
	}
	segs := ps.segs
	c := computed{cites: Cites{
		BillingPeriodID: period, SnapshotID: ps.snapshot, Trial: trial, PlanVersions: make([]string, len(segs)),
		Promotions: []CitedPromotion{}, Adjustments: []CitedAdjustment{}, CreditAvailable: decimal.Zero, CreditIssued: decimal.Zero,
	}}
	for i, g := range segs {
		c.cites.PlanVersions[i] = g.PlanVersionID
	}
	last, err := uuid.Parse(segs[len(segs)-1].PlanVersionID)
	if err != nil {
		return computed{}, fmt.Errorf("invoice period %s: plan version %q: %w", period, segs[len(segs)-1].PlanVersionID, err)
	}
	if c.netDays, err = netDaysFor(ctx, q, last); err != nil {
		return computed{}, fmt.Errorf("read net days: %w", err)
	}
	c.cites.Customer, c.cites.Issuer, c.cites.TaxRuleID, c.cites.Tax = b.customer, b.issuer, b.taxRule, b.tax
	return c, nil
}

// chooseTax cites the customer's billing profile as it is and the tax
// treatment it gets from the issuer's rules at the period's end.
func (s *Service) chooseTax(ctx context.Context, inv db.Invoice, c *Cites) error {
	b := &basis{}
	if err := s.taxBasis(ctx, b, inv.IssuerID, inv.CustomerID, inv.PeriodEnd); err != nil {
		return err
	}
	c.Customer, c.Issuer, c.TaxRuleID, c.Tax = b.customer, b.issuer, b.taxRule, b.tax
	return nil
}

// pendingAdjustments is pendingAdjustmentsOf outside a transaction: it
// reads the segments of the adjustments' periods first.
func (s *Service) pendingAdjustments(ctx context.Context, q *db.Queries, sub uuid.UUID, start time.Time, currency string) ([]CitedAdjustment, error) {
	b := &basis{segments: map[uuid.UUID]periodSegments{}}
	if err := s.pendingSegments(ctx, b, sub); err != nil {
		return nil, err
	}
	return pendingAdjustmentsOf(ctx, q, b, sub, start, currency)
}

// citedAdjustments is adjustmentsOf outside a transaction: it reads the
// segments of the adjustments' periods first.
func (s *Service) citedAdjustments(ctx context.Context, q *db.Queries, cited []CitedAdjustment) ([]metering.Adjustment, error) {
	b := &basis{segments: map[uuid.UUID]periodSegments{}}
	var periods []uuid.UUID
	for _, a := range cited {
		if a.BillingPeriodID != nil {
			periods = append(periods, *a.BillingPeriodID)
		}
	}
	if err := s.loadSegments(ctx, b, periods); err != nil {
		return nil, err
	}
	return adjustmentsOf(ctx, q, b, cited)
}

// invoiceKey names the invoice of a period.
type invoiceKey struct {
	period, sub, issuer, customer uuid.UUID
	periodEnd                     time.Time
}

// basis is what an invoice's computation reads before its transaction:
// the segments of its period and of the periods its adjustments concern,
// the customer's profile and tax treatment. They come through the
// service's pool; read inside the transaction, concurrent finalizations
// would each hold a connection while waiting for another one, and
// exhaust the pool.
type basis struct {
	segments map[uuid.UUID]periodSegments
	customer *Profile
	issuer   *Profile
	taxRule  *uuid.UUID
	tax      CitedTax
}

type periodSegments struct {
	segs     []metering.Segment
	snapshot uuid.UUID
}

// prepareInvoice is prepare for a stored invoice.
func (s *Service) prepareInvoice(ctx context.Context, id uuid.UUID) (*basis, error) {
	inv, err := db.New(s.pool).InvoiceGet(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrInvoiceNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read invoice: %w", err)
	}
	if inv.BillingPeriodID == nil {
		return nil, fmt.Errorf("prepare invoice %s: it bills no period", id)
	}
	return s.prepare(ctx, invoiceKey{period: *inv.BillingPeriodID, sub: inv.SubscriptionID, issuer: inv.IssuerID, customer: inv.CustomerID, periodEnd: inv.PeriodEnd})
}

// prepare reads the basis of k's invoice: the segments of its period and
// of the periods of the subscription's pending adjustments (one made
// after this read waits for the next invoice), the customer's billing
// profile as it is and the tax treatment it gets from the issuer's rules
// at the period's end.
func (s *Service) prepare(ctx context.Context, k invoiceKey) (*basis, error) {
	b := &basis{segments: map[uuid.UUID]periodSegments{}}
	if err := s.loadSegments(ctx, b, []uuid.UUID{k.period}); err != nil {
		return nil, err
	}
	if err := s.pendingSegments(ctx, b, k.sub); err != nil {
		return nil, err
	}
	if err := s.taxBasis(ctx, b, k.issuer, k.customer, k.periodEnd); err != nil {
		return nil, err
	}
	return b, nil
}

// pendingSegments adds to b the segments of the periods that the
// subscription's pending adjustments of a quantity concern.
func (s *Service) pendingSegments(ctx context.Context, b *basis, sub uuid.UUID) error {
	pending, err := db.New(s.pool).AdjustmentsPending(ctx, sub)
	if err != nil {
		return fmt.Errorf("list pending adjustments: %w", err)
	}
	var periods []uuid.UUID
	for _, a := range pending {
		if a.Quantity != nil && a.BillingPeriodID != nil {
			periods = append(periods, *a.BillingPeriodID)
		}
	}
	return s.loadSegments(ctx, b, periods)
}

// taxBasis adds to b the issuer's and the customer's billing profiles and
// the tax treatment the customer gets from the issuer's rules at a time
// (none without a customer's profile).
func (s *Service) taxBasis(ctx context.Context, b *basis, issuer, customer uuid.UUID, at time.Time) error {
	var profiles [2]*Profile
	for i, org := range []uuid.UUID{issuer, customer} {
		p, ok, err := s.BillingProfile(ctx, org)
		if err != nil {
			return err
		}
		if ok {
			profiles[i] = &p
		}
	}
	return s.taxBasisOf(ctx, b, issuer, profiles[0], profiles[1], at)
}

// taxBasisOf is taxBasis of the profiles given (nil: none).
func (s *Service) taxBasisOf(ctx context.Context, b *basis, issuer uuid.UUID, from, profile *Profile, at time.Time) error {
	b.issuer = from
	if profile == nil {
		return nil
	}
	b.customer = profile
	t, rule, err := s.taxRuleFor(ctx, issuer, *profile, at)
	if err != nil {
		return err
	}
	if rule != nil {
		b.taxRule = &rule.ID
	}
	b.tax = CitedTax{Name: t.Name, RatePercent: t.RatePercent, Inclusive: t.Inclusive, ReverseCharge: t.ReverseCharge, Mention: t.Mention}
	return nil
}

// loadSegments adds the segments of periods to b.
func (s *Service) loadSegments(ctx context.Context, b *basis, periods []uuid.UUID) error {
	var missing []uuid.UUID
	for _, p := range periods {
		if _, ok := b.segments[p]; !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	read, err := s.segmentsMany(ctx, missing)
	if err != nil {
		return err
	}
	for _, p := range missing {
		pb, ok := read[p]
		if !ok {
			return fmt.Errorf("read segments of period %s: %w", p, ErrPeriodNotFound)
		}
		if pb.err != nil {
			return fmt.Errorf("read segments of period %s: %w", p, pb.err)
		}
		b.segments[p] = pb.periodSegments
	}
	return nil
}

// activePromotionsIn are the subscription's redemptions, made before the
// period ended, that still discount a period: once until one period
// applied it, repeating until its periods did, forever always; a trial
// extension never (it took effect when redeemed). The rule is the one
// control-plane/promotions shows as a redemption's active flag. For an
// invoice in currency: an amount off in another currency (of a plan the
// subscription left) does not apply, and stays for an invoice in its
// currency. "" takes all.
func activePromotionsIn(ctx context.Context, q *db.Queries, sub uuid.UUID, periodEnd time.Time, currency string) ([]CitedPromotion, error) {
	rows, err := q.RedemptionsForPeriod(ctx, db.RedemptionsForPeriodParams{SubscriptionID: sub, PeriodEnd: periodEnd})
	if err != nil {
		return nil, fmt.Errorf("list redemptions: %w", err)
	}
	return activeRedemptions(rows, currency), nil
}

// activeRedemptions are those of a period's redemptions that discount
// its invoice in currency ("" takes all).
func activeRedemptions(rows []db.RedemptionsForPeriodRow, currency string) []CitedPromotion {
	out := []CitedPromotion{}
	for _, r := range rows {
		active := false
		switch {
		case r.Kind == metering.PromotionTrialExtension:
		case currency != "" && r.Currency != nil && *r.Currency != currency:
		case r.Duration == "once":
			active = r.PeriodsApplied < 1
		case r.Duration == "repeating":
			active = r.DurationPeriods != nil && r.PeriodsApplied < *r.DurationPeriods
		case r.Duration == "forever":
			active = true
		}
		if active {
			out = append(out, CitedPromotion{RedemptionID: r.ID, PromotionID: r.PromotionID, Code: r.Code})
		}
	}
	return out
}

// pendingAdjustments are the subscription's unbilled adjustments an
// invoice of the period starting at start bills: those of no period, of
// it or of an earlier one, in the invoice's currency. A quantity is
// priced by the terms of the segment it names, or its period's last, on
// top of all the period billed of its meter (billedOf).
func pendingAdjustmentsOf(ctx context.Context, q *db.Queries, b *basis, sub uuid.UUID, start time.Time, currency string) ([]CitedAdjustment, error) {
	rows, err := q.AdjustmentsPendingFor(ctx, db.AdjustmentsPendingForParams{SubscriptionID: sub, PeriodStart: start})
	if err != nil {
		return nil, fmt.Errorf("list pending adjustments: %w", err)
	}
	return citeAdjustments(ctx, q, b, rows, currency)
}

// citeAdjustments cites the pending adjustments rows an invoice in
// currency bills, as pendingAdjustmentsOf says.
func citeAdjustments(ctx context.Context, q *db.Queries, b *basis, rows []db.BillingAdjustment, currency string) ([]CitedAdjustment, error) {
	out := []CitedAdjustment{}
	onInvoice := map[string]decimal.Decimal{}
	for _, a := range rows {
		if a.Quantity == nil {
			if deref(a.Currency) == currency {
				out = append(out, CitedAdjustment{ID: a.ID, Billed: decimal.Zero})
			}
			continue
		}
		ps, ok := b.segments[*a.BillingPeriodID]
		if !ok || len(ps.segs) == 0 {
			continue // made after the basis was read: the next invoice bills it
		}
		segs := ps.segs
		at := len(segs) - 1
		for i, g := range segs {
			if a.SegmentStart != nil && g.From.Equal(*a.SegmentStart) {
				at = i
			}
		}
		seg := segs[at]
		if seg.Terms.Currency.Code != currency {
			continue
		}
		version, err := uuid.Parse(seg.PlanVersionID)
		if err != nil {
			return nil, fmt.Errorf("read segments of adjustment %s: plan version %q: %w", a.ID, seg.PlanVersionID, err)
		}
		billed, err := billedOf(ctx, q, *a.BillingPeriodID, segs, *a.MeterSlug)
		if err != nil {
			return nil, err
		}
		key := a.BillingPeriodID.String() + "/" + *a.MeterSlug
		billed = billed.Add(onInvoice[key])
		onInvoice[key] = onInvoice[key].Add(*a.Quantity)
		from := seg.From
		out = append(out, CitedAdjustment{ID: a.ID, BillingPeriodID: a.BillingPeriodID, PlanVersionID: &version, SegmentStart: &from, Billed: billed})
	}
	return out, nil
}

// billedOf is what a period billed of a meter before an adjustment, the
// quantity it is priced on top of: the usage of every segment whose
// version charges the meter and the adjustments of the meter billed on
// invoices not voided, whatever segment they concern. The period's invoice
// priced all its segments before any adjustment of it, the later ones on
// top of the earlier ones; an adjustment comes after all of that, so late
// units of an earlier segment are priced at the top, by that segment's
// terms: the period's total stays the rate of all its usage where its
// versions price the meter alike, and no tier is granted twice where
// they do not. The adjustments of one invoice come on top of one another
// in the order it prices them.
func billedOf(ctx context.Context, q *db.Queries, period uuid.UUID, segs []metering.Segment, meter string) (decimal.Decimal, error) {
	adjusted, err := q.AdjustmentQuantityOfPeriod(ctx, db.AdjustmentQuantityOfPeriodParams{BillingPeriodID: &period, MeterSlug: &meter})
	if err != nil {
		return decimal.Zero, fmt.Errorf("sum billed adjustments: %w", err)
	}
	sum := adjusted
	for _, g := range segs {
		if slices.ContainsFunc(g.Terms.Charges, func(c metering.Charge) bool { return c.Meter == meter }) {
			sum = sum.Add(g.Usage[meter])
		}
	}
	return sum, nil
}

// inputFrom is the invoice input of what c cites, read again from the
// rows it names: the same for a draft, its finalization and explain.
func (s *Service) inputFrom(ctx context.Context, q *db.Queries, inv db.Invoice, c Cites, b *basis) (metering.InvoiceInput, error) {
	in, err := inputOf(inv.ID, inv.PeriodStart, inv.PeriodEnd, c, b)
	if err != nil {
		return in, err
	}
	if in.Promotions, err = citedPromotions(ctx, q, c.Promotions); err != nil {
		return in, err
	}
	if in.Adjustments, err = adjustmentsOf(ctx, q, b, c.Adjustments); err != nil {
		return in, err
	}
	return in, nil
}

// inputOf is the invoice input of what c cites but its promotions and
// adjustments, for the invoice id of the period [start, end).
func inputOf(id uuid.UUID, start, end time.Time, c Cites, b *basis) (metering.InvoiceInput, error) {
	ps := b.segments[c.BillingPeriodID]
	segs, snapID := ps.segs, ps.snapshot
	if snapID != c.SnapshotID || len(segs) == 0 {
		return metering.InvoiceInput{}, fmt.Errorf("invoice %s cites snapshot %s, the period's is %s", id, c.SnapshotID, snapID)
	}
	return metering.InvoiceInput{
		Currency: segs[0].Terms.Currency, PeriodStart: start, PeriodEnd: end, Trial: c.Trial, Segments: segs,
		CreditAvailable: c.CreditAvailable, Tax: c.Tax.treatment(),
	}, nil
}

func citedPromotions(ctx context.Context, q *db.Queries, cited []CitedPromotion) ([]metering.Promotion, error) {
	if len(cited) == 0 {
		return nil, nil
	}
	ids := make([]uuid.UUID, len(cited))
	for i, p := range cited {
		ids[i] = p.RedemptionID
	}
	rows, err := q.RedemptionsByIDs(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("read redemptions: %w", err)
	}
	if len(rows) != len(cited) {
		return nil, fmt.Errorf("read redemptions: %d of the %d cited exist", len(rows), len(cited))
	}
	out := make([]metering.Promotion, len(rows))
	for i, r := range rows {
		out[i] = promotionOf(r)
	}
	return out, nil
}

func promotionOf(r db.RedemptionsByIDsRow) metering.Promotion {
	return metering.Promotion{
		ID: r.PromotionID.String(), Code: r.Code, Kind: r.Kind, Value: r.Value, Currency: deref(r.Currency), Meter: deref(r.Meter),
		Priority: int(r.Priority), Stackable: r.Stackable,
	}
}

func adjustmentsOf(ctx context.Context, q *db.Queries, b *basis, cited []CitedAdjustment) ([]metering.Adjustment, error) {
	if len(cited) == 0 {
		return nil, nil
	}
	ids := make([]uuid.UUID, len(cited))
	for i, a := range cited {
		ids[i] = a.ID
	}
	rows, err := q.AdjustmentsByIDs(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("read adjustments: %w", err)
	}
	byID := make(map[uuid.UUID]db.BillingAdjustment, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	out := make([]metering.Adjustment, len(cited))
	for i, c := range cited {
		r, ok := byID[c.ID]
		if !ok {
			return nil, fmt.Errorf("read adjustments: %s is cited but gone", c.ID)
		}
		a := metering.Adjustment{ID: r.ID.String(), Description: adjustmentDescription(r), Billed: c.Billed}
		if r.Quantity == nil {
			a.Amount = *r.Amount
		} else {
			a.Meter, a.Quantity, a.HasQuantity = *r.MeterSlug, *r.Quantity, true
			if a.Terms, err = citedTerms(b, c); err != nil {
				return nil, err
			}
		}
		out[i] = a
	}
	return out, nil
}

// citedTerms are the terms of the segment a quantity adjustment cites.
func citedTerms(b *basis, c CitedAdjustment) (metering.PlanTerms, error) {
	if c.BillingPeriodID == nil || c.SegmentStart == nil || c.PlanVersionID == nil {
		return metering.PlanTerms{}, fmt.Errorf("read adjustments: %s cites no segment to price it", c.ID)
	}
	for _, g := range b.segments[*c.BillingPeriodID].segs {
		if g.From.Equal(*c.SegmentStart) && g.PlanVersionID == c.PlanVersionID.String() {
			return g.Terms, nil
		}
	}
	return metering.PlanTerms{}, fmt.Errorf("read adjustments: the segment %s of period %s that %s cites is gone", c.SegmentStart, c.BillingPeriodID, c.ID)
}

func adjustmentDescription(r db.BillingAdjustment) string {
	if r.Kind == db.AdjustmentKindLateUsage {
		return "Late usage of " + deref(r.MeterSlug)
	}
	return "Correction: " + r.Reason
}
