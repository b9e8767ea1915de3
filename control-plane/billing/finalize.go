package billing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
)

// InvoiceNumber formats an issuer's n-th invoice of a year:
// <PREFIX>-<YYYY>-<NNNNNN>.
func InvoiceNumber(prefix string, year int, n int64) string {
	return fmt.Sprintf("%s-%04d-%06d", prefix, year, n)
}

// Finalize finalizes a draft invoice: the issuer's providers, admins and
// the control plane's jobs (identity.System) may. In one transaction it
// locks the draft, recomputes it with the customer's credit balance read
// under its lock (the last recomputation is what is frozen), takes the
// issuer's next number of the year, sets it open with its due date (net
// days of the period's last plan version), applies the credit and
// records a negative total's credit in the ledger, marks the adjustments
// billed and the promotions applied once more, marks the period
// invoiced, announces invoice.finalized and audits. A subscription's
// drafts are finalized in the order of their periods (ErrEarlierDraft).
func (s *Service) Finalize(ctx context.Context, actor identity.Actor, id uuid.UUID) (Invoice, error) {
	b, err := s.prepareInvoice(ctx, id)
	if err != nil {
		return Invoice{}, err
	}
	var out Invoice
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		inv, err := lockInvoice(ctx, q, id)
		if err != nil {
			return err
		}
		if err := mayChange(actor, inv); err != nil {
			return err
		}
		if inv.Status != db.InvoiceStatusDraft {
			return ErrInvoiceState
		}
		if _, err := s.finalizeTx(ctx, tx, actor, inv, b); err != nil {
			return err
		}
		out, err = loadInvoice(ctx, q, inv.ID, s.now())
		return err
	})
	return out, err
}

// finalizeTx finalizes the draft inv, locked in tx, with the basis b read
// before tx: unless an earlier period of its subscription is not
// invoiced yet (ErrEarlierDraft, before any change), it finalizes it,
// announces it and audits. It returns the invoice without its lines and
// cites, as computed, rather than reading it back: the issuer's number lock is
// held until the commit, and every read after the number lengthens each
// of the issuer's finalizations that waits for it.
func (s *Service) finalizeTx(ctx context.Context, tx pgx.Tx, actor identity.Actor, inv db.Invoice, b *basis) (Invoice, error) {
	q := db.New(tx)
	earlier, err := q.InvoiceEarlierDraft(ctx, db.InvoiceEarlierDraftParams{SubscriptionID: inv.SubscriptionID, PeriodStart: inv.PeriodStart})
	if err != nil {
		return Invoice{}, fmt.Errorf("read earlier periods: %w", err)
	}
	if earlier {
		return Invoice{}, ErrEarlierDraft
	}
	out, err := s.finalizeLocked(ctx, q, inv, b)
	if err != nil {
		return Invoice{}, err
	}
	if err := s.publish(ctx, tx, out, EventInvoiceFinalized); err != nil {
		return Invoice{}, err
	}
	if err := s.finalized(ctx, tx, []uuid.UUID{inv.ID}); err != nil {
		return Invoice{}, err
	}
	return out, audit.Record(ctx, tx, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: inv.IssuerID, Action: "invoice.finalize",
		TargetType: "invoice", TargetID: inv.ID.String(), After: summary(out),
	})
}

// finalizeLocked does the finalization of a locked draft and returns it
// as finalized, without its lines and cites.
func (s *Service) finalizeLocked(ctx context.Context, q *db.Queries, inv db.Invoice, b *basis) (Invoice, error) {
	credit, err := lockedCredit(ctx, q, inv, b)
	if err != nil {
		return Invoice{}, err
	}
	c, err := s.recompute(ctx, q, inv, b, credit)
	if err != nil {
		return Invoice{}, err
	}
	if err := s.settle(ctx, q, inv, c); err != nil {
		return Invoice{}, err
	}
	// Postgres keeps microseconds: the invoice returned says what is stored.
	now := s.now().UTC().Truncate(time.Microsecond)
	// The number is taken last, so that the sequence's row lock, which
	// orders every finalization of the issuer, is held the least time.
	settings, err := issuerSettings(ctx, q, inv.IssuerID)
	if err != nil {
		return Invoice{}, err
	}
	n, err := q.InvoiceNumberNext(ctx, db.InvoiceNumberNextParams{IssuerID: inv.IssuerID, Year: int32(now.Year())})
	if err != nil {
		return Invoice{}, fmt.Errorf("take invoice number: %w", err)
	}
	due := now.Add(time.Duration(c.netDays) * 24 * time.Hour)
	number := InvoiceNumber(settings.InvoicePrefix, now.Year(), n)
	err = q.InvoiceFinalize(ctx, db.InvoiceFinalizeParams{ID: inv.ID, Number: &number, FinalizedAt: &now, DueAt: &due})
	if err != nil {
		return Invoice{}, fmt.Errorf("finalize invoice: %w", err)
	}
	inv.Status, inv.Number, inv.FinalizedAt, inv.DueAt, inv.NetDays, inv.Cites = db.InvoiceStatusOpen, &number, &now, &due, c.netDays, nil
	o := c.invoice
	inv.Currency, inv.Subtotal, inv.Discount, inv.Tax, inv.CreditApplied, inv.Total, inv.AmountDue =
		o.Currency, o.Subtotal, o.Discount, o.Tax, o.CreditApplied, o.Total, o.AmountDue
	return toInvoice(inv, now), nil
}

// lockedCredit locks the customer's balance in the currency of the
// invoice's period (its first segment's) and returns it.
func lockedCredit(ctx context.Context, q *db.Queries, inv db.Invoice, b *basis) (*decimal.Decimal, error) {
	segs := b.segments[*inv.BillingPeriodID].segs
	if len(segs) == 0 {
		return nil, fmt.Errorf("finalize invoice %s: its period has no segment", inv.ID)
	}
	k := creditKey{inv.IssuerID, inv.CustomerID, segs[0].Terms.Currency.Code}
	if err := q.CreditBalanceEnsure(ctx, db.CreditBalanceEnsureParams{IssuerID: k.issuer, CustomerID: k.customer, Currency: k.currency}); err != nil {
		return nil, fmt.Errorf("create credit balance: %w", err)
	}
	b2, err := q.CreditBalanceLock(ctx, db.CreditBalanceLockParams{IssuerID: k.issuer, CustomerID: k.customer, Currency: k.currency})
	if err != nil {
		return nil, fmt.Errorf("lock credit balance: %w", err)
	}
	return &b2, nil
}

// settle records what a finalized invoice did beside its own row: the
// credit it used and issued, its adjustments billed, its promotions
// applied, its period invoiced.
func (s *Service) settle(ctx context.Context, q *db.Queries, inv db.Invoice, c computed) error {
	k := creditKey{inv.IssuerID, inv.CustomerID, c.invoice.Currency}
	if c.invoice.CreditApplied.IsPositive() {
		if _, err := moveCredit(ctx, q, k, CreditApplied, c.invoice.CreditApplied.Neg(), &inv.ID, "applied to the invoice", "system"); err != nil {
			return err
		}
	}
	if c.invoice.CreditIssued.IsPositive() {
		if _, err := moveCredit(ctx, q, k, CreditProration, c.invoice.CreditIssued, &inv.ID, "credit of the invoice's negative total", "system"); err != nil {
			return err
		}
	}
	if len(c.cites.Adjustments) > 0 {
		ids := make([]uuid.UUID, len(c.cites.Adjustments))
		for i, a := range c.cites.Adjustments {
			ids[i] = a.ID
		}
		n, err := q.AdjustmentsMarkBilled(ctx, db.AdjustmentsMarkBilledParams{InvoiceID: &inv.ID, Ids: ids})
		if err != nil {
			return fmt.Errorf("mark adjustments billed: %w", err)
		}
		if n != int64(len(ids)) {
			return fmt.Errorf("mark adjustments billed: %d of %d were still pending", n, len(ids))
		}
	}
	if len(c.cites.Promotions) > 0 {
		ids := make([]uuid.UUID, len(c.cites.Promotions))
		for i, p := range c.cites.Promotions {
			ids[i] = p.RedemptionID
		}
		if err := q.RedemptionsApplied(ctx, ids); err != nil {
			return fmt.Errorf("count promotion periods: %w", err)
		}
	}
	if err := q.BillingPeriodMarkInvoiced(ctx, c.cites.BillingPeriodID); err != nil {
		return fmt.Errorf("mark period invoiced: %w", err)
	}
	return nil
}

// EventInvoicePaid is announced when an invoice becomes paid: marked paid
// here, or paid by its payment.
const EventInvoicePaid = "invoice.paid"

// Payments is what billing tells the payments service (a
// *payments.Service). InvoicesFinalized runs in the finalizing
// transaction, so that a finalized invoice's collection is queued exactly
// when it is committed. InvoiceClosed runs after the commit that paid,
// voided or wrote off an invoice, to stop its collection (an attempt
// under way is canceled at the provider); were the process to stop in
// between, the payments cycle finds the payment of an invoice no longer
// open and closes it the same way.
type Payments interface {
	InvoicesFinalized(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) error
	InvoiceClosed(ctx context.Context, invoiceID uuid.UUID, status string) error
}

// SetPayments sets Config.Payments, for a payments service built after
// billing (it reads billing's profiles and credits); call it before the
// service is used.
func (s *Service) SetPayments(p Payments) { s.cfg.Payments = p }

// finalized tells payments, in tx, that the invoices ids were finalized.
func (s *Service) finalized(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) error {
	if s.cfg.Payments == nil || len(ids) == 0 {
		return nil
	}
	if err := s.cfg.Payments.InvoicesFinalized(ctx, tx, ids); err != nil {
		return fmt.Errorf("queue collection: %w", err)
	}
	return nil
}

// closed tells payments, after the commit, that an invoice is closed.
// The change is made whatever payments answers: a failure is logged, and
// the payments cycle closes the payment later.
func (s *Service) closed(ctx context.Context, inv Invoice, err error) (Invoice, error) {
	if err != nil || s.cfg.Payments == nil {
		return inv, err
	}
	if err := s.cfg.Payments.InvoiceClosed(ctx, inv.ID, inv.Status); err != nil {
		s.log.ErrorContext(ctx, "stop collecting a closed invoice; the payments cycle will", "invoice", inv.ID, "status", inv.Status, "err", err)
	}
	return inv, nil
}

// mayChange reports whether actor may change inv's status
// (parties.canChange).
func mayChange(actor identity.Actor, inv db.Invoice) error {
	return parties{inv.IssuerID, inv.CustomerID}.canChange(actor, ErrInvoiceNotFound)
}

// transition locks an open invoice and changes its status with change.
func (s *Service) transition(ctx context.Context, actor identity.Actor, id uuid.UUID, action string,
	change func(q *db.Queries, tx pgx.Tx, inv db.Invoice) error) (Invoice, error) {
	var out Invoice
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		inv, err := lockInvoice(ctx, q, id)
		if err != nil {
			return err
		}
		if err := mayChange(actor, inv); err != nil {
			return err
		}
		if inv.Status != db.InvoiceStatusOpen {
			return ErrInvoiceState
		}
		before := toInvoice(inv, s.now())
		if err := change(q, tx, inv); err != nil {
			return err
		}
		if out, err = loadInvoice(ctx, q, id, s.now()); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: inv.IssuerID, Action: action,
			TargetType: "invoice", TargetID: id.String(), Before: summary(before), After: summary(out),
		})
	})
	return out, err
}

// MarkPaid marks an open invoice paid by hand, for admins, announces
// invoice.paid and stops its collection.
func (s *Service) MarkPaid(ctx context.Context, actor identity.Actor, id uuid.UUID) (Invoice, error) {
	if !actor.IsAdmin() {
		return Invoice{}, identity.ErrForbidden
	}
	inv, err := s.transition(ctx, actor, id, "invoice.mark_paid", func(q *db.Queries, tx pgx.Tx, inv db.Invoice) error {
		at := s.now()
		if err := q.InvoiceMarkPaid(ctx, db.InvoiceMarkPaidParams{ID: inv.ID, At: &at}); err != nil {
			return fmt.Errorf("mark invoice paid: %w", err)
		}
		paid, err := loadInvoice(ctx, q, inv.ID, at)
		if err != nil {
			return err
		}
		return s.publish(ctx, tx, paid, EventInvoicePaid)
	})
	return s.closed(ctx, inv, err)
}

// Void voids an open invoice: what it took from the customer's credit
// balance goes back to it as a refund (payments, when they come, refund
// what was paid the same way), the credit its negative total issued is
// taken back (ErrInsufficientCredit when spent), invoice.voided is
// announced and, after the commit, its collection is stopped (Payments). The period stays billed: a corrected bill is an adjustment
// on the next invoice.
func (s *Service) Void(ctx context.Context, actor identity.Actor, id uuid.UUID) (Invoice, error) {
	var voided Invoice
	out, err := s.transition(ctx, actor, id, "invoice.void", func(q *db.Queries, tx pgx.Tx, inv db.Invoice) error {
		at := s.now()
		if err := q.InvoiceMarkVoid(ctx, db.InvoiceMarkVoidParams{ID: inv.ID, At: &at}); err != nil {
			return fmt.Errorf("void invoice: %w", err)
		}
		k := creditKey{inv.IssuerID, inv.CustomerID, inv.Currency}
		if inv.CreditApplied.IsPositive() {
			if _, err := moveCredit(ctx, q, k, CreditRefund, inv.CreditApplied, &inv.ID, "refund of the voided invoice", actor.Subject); err != nil {
				return err
			}
		}
		// The credit a negative total issued goes with the invoice (an
		// entry of kind applied, the ledger's one negative kind); if the
		// customer spent it already, the void is refused.
		if inv.Total.IsNegative() {
			_, err := moveCredit(ctx, q, k, CreditApplied, inv.Total, &inv.ID, "credit issued by the voided invoice taken back", actor.Subject)
			if errors.Is(err, ErrInsufficientCredit) {
				return fmt.Errorf("void invoice: the %s %s of credit it issued is spent already: %w", money(inv.Currency, inv.Total.Neg()), inv.Currency, err)
			}
			if err != nil {
				return err
			}
		}
		v, err := loadInvoice(ctx, q, inv.ID, at)
		if err != nil {
			return err
		}
		voided = v
		return s.publish(ctx, tx, voided, EventInvoiceVoided)
	})
	return s.closed(ctx, out, err)
}

// MarkUncollectible gives up on an open invoice.
func (s *Service) MarkUncollectible(ctx context.Context, actor identity.Actor, id uuid.UUID) (Invoice, error) {
	inv, err := s.transition(ctx, actor, id, "invoice.mark_uncollectible", func(q *db.Queries, _ pgx.Tx, inv db.Invoice) error {
		if err := q.InvoiceMarkUncollectible(ctx, inv.ID); err != nil {
			return fmt.Errorf("mark invoice uncollectible: %w", err)
		}
		return nil
	})
	return s.closed(ctx, inv, err)
}

// MarkOverdue marks up to max open invoices past their due date overdue,
// each once, and announces invoice.overdue for each, in its own
// transaction. It returns how many it marked.
func (s *Service) MarkOverdue(ctx context.Context, max int) (int, error) {
	now := s.now()
	ids, err := db.New(s.pool).InvoicesOverdue(ctx, db.InvoicesOverdueParams{Now: &now, Max: int32(max)})
	if err != nil {
		return 0, fmt.Errorf("list overdue invoices: %w", err)
	}
	n := 0
	for _, id := range ids {
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			q := db.New(tx)
			rows, err := q.InvoiceMarkOverdue(ctx, db.InvoiceMarkOverdueParams{ID: id, At: &now})
			if err != nil || rows == 0 {
				return err
			}
			inv, err := loadInvoice(ctx, q, id, now)
			if err != nil {
				return err
			}
			n++
			return s.publish(ctx, tx, inv, EventInvoiceOverdue)
		})
		if err != nil {
			return n, fmt.Errorf("mark invoice %s overdue: %w", id, err)
		}
	}
	return n, nil
}

// invoiceSummary is an invoice's event data and audit entry: the
// invoice without its lines and cites.
type invoiceSummary struct {
	ID             uuid.UUID       `json:"id"`
	Number         *string         `json:"number"`
	Status         string          `json:"status"`
	IssuerID       uuid.UUID       `json:"issuer_id"`
	CustomerID     uuid.UUID       `json:"customer_id"`
	SubscriptionID uuid.UUID       `json:"subscription_id"`
	Currency       string          `json:"currency"`
	PeriodStart    time.Time       `json:"period_start"`
	PeriodEnd      time.Time       `json:"period_end"`
	Total          decimal.Decimal `json:"total"`
	AmountDue      decimal.Decimal `json:"amount_due"`
	DueAt          *time.Time      `json:"due_at"`
}

func summary(inv Invoice) invoiceSummary {
	return invoiceSummary{
		ID: inv.ID, Number: inv.Number, Status: inv.Status, IssuerID: inv.IssuerID, CustomerID: inv.CustomerID,
		SubscriptionID: inv.SubscriptionID, Currency: inv.Currency, PeriodStart: inv.PeriodStart, PeriodEnd: inv.PeriodEnd,
		Total: inv.Total, AmountDue: inv.AmountDue, DueAt: inv.DueAt,
	}
}

// publish announces an invoice event to the issuer's and the customer's
// endpoints, in tx.
func (s *Service) publish(ctx context.Context, tx pgx.Tx, inv Invoice, event string) error {
	if s.cfg.Publisher == nil {
		return nil
	}
	for _, org := range []uuid.UUID{inv.IssuerID, inv.CustomerID} {
		if err := s.cfg.Publisher.Publish(ctx, tx, org, event, summary(inv)); err != nil {
			return fmt.Errorf("announce %s: %w", event, err)
		}
	}
	return nil
}
