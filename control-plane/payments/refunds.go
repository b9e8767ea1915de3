package payments

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// Refund is a refund of a payment.
type Refund struct {
	ID        uuid.UUID
	PaymentID uuid.UUID
	InvoiceID uuid.UUID
	Amount    metering.Money
	Reason    string
	Status    string
	// Destination: DestinationPaymentMethod or DestinationCreditBalance.
	Destination string
	// External: made outside Veil (the provider's dashboard).
	External bool
}

// Where a refund goes.
const (
	// DestinationPaymentMethod: back to what paid, through the provider.
	DestinationPaymentMethod = "payment_method"
	// DestinationCreditBalance: to the customer's credit balance with the
	// issuer, which its next invoices use; no money moves.
	DestinationCreditBalance = "credit_balance"
)

func toRefund(r db.PaymentRefund) Refund {
	return Refund{ID: r.ID, PaymentID: r.PaymentID, InvoiceID: r.InvoiceID,
		Amount: metering.Money{Minor: r.Amount, Currency: r.Currency}, Reason: r.Reason, Status: r.Status,
		Destination: r.Destination, External: r.External}
}

// Refund gives back amount (in the invoice's currency; zero: all that is
// left) of a paid invoice's payment through its provider, for the
// issuer's providers and admins, audited. The refund is committed pending
// with its idempotency key before the provider is called; it counts
// against the payment from then on, so refunds together never exceed it.
// An error that may have reached the provider leaves it pending.
func (s *Service) Refund(ctx context.Context, actor identity.Actor, invoiceID uuid.UUID, amount decimal.Decimal, reason string) (Refund, error) {
	if len(reason) > 500 || amount.IsNegative() {
		return Refund{}, fmt.Errorf("refund: %w: amount below zero or reason over 500 bytes", ErrInvalid)
	}
	var rf db.PaymentRefund
	var in metering.RefundInput
	var prov metering.PaymentProvider
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		p, err := lockPayment(ctx, q, invoiceID, issuerOnly(actor))
		if err != nil {
			return err
		}
		if prov = s.cfg.Providers[p.Provider]; prov == nil {
			return fmt.Errorf("%w: provider %q", ErrNotConfigured, p.Provider)
		}
		if rf, in, err = s.startRefund(ctx, q, p, amount, reason, actor, DestinationPaymentMethod); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: p.IssuerID, Action: "payment.refund",
			TargetType: "invoice", TargetID: p.InvoiceID.String(),
			After: map[string]any{"refund": rf.ID, "amount": in.Amount.String(), "reason": reason},
		})
	})
	if err != nil {
		return Refund{}, err
	}
	res, err := prov.Refund(ctx, in)
	if err != nil && !definite(err) {
		return toRefund(rf), fmt.Errorf("refund invoice payment: %w", err)
	}
	if err != nil {
		res = metering.RefundResult{Status: metering.RefundFailed, FailureReason: failureCode(err)}
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		return s.settleRefund(ctx, tx, rf.PaymentID, rf.ID, res)
	})
	if err != nil {
		return toRefund(rf), err
	}
	rf.Status = string(res.Status)
	return toRefund(rf), nil
}

// startRefund checks a refund against what is left of the payment and
// inserts it: pending for the provider to make, or succeeded to the
// credit balance.
func (s *Service) startRefund(ctx context.Context, q *db.Queries, p db.Payment, amount decimal.Decimal, reason string,
	actor identity.Actor, dest string) (db.PaymentRefund, metering.RefundInput, error) {
	var in metering.RefundInput
	if p.Status != "succeeded" {
		return db.PaymentRefund{}, in, ErrNotPaid
	}
	given, err := q.RefundsGiven(ctx, p.ID)
	if err != nil {
		return db.PaymentRefund{}, in, fmt.Errorf("sum refunds: %w", err)
	}
	// What a lost dispute took back cannot be given back again.
	left := p.Amount - given - p.AmountDisputedLost
	m := metering.Money{Minor: left, Currency: p.Currency}
	if !amount.IsZero() {
		if m, err = metering.MinorUnits(amount, p.Currency); err != nil {
			return db.PaymentRefund{}, in, fmt.Errorf("refund: %w: %w", ErrInvalid, err)
		}
	}
	if m.Minor <= 0 || m.Minor > left {
		return db.PaymentRefund{}, in, fmt.Errorf("%w: %s asked, %d minor units left", ErrOverRefund, m, left)
	}
	if dest == DestinationCreditBalance {
		rf, err := q.RefundInsertCredit(ctx, db.RefundInsertCreditParams{ID: uuid.New(), PaymentID: p.ID, InvoiceID: p.InvoiceID,
			Amount: m.Minor, Currency: m.Currency, Reason: reason, Actor: actor.Subject, IdempotencyKey: "veil-credit-" + uuid.NewString(),
			At: new(s.now())})
		if err != nil {
			return db.PaymentRefund{}, in, fmt.Errorf("insert refund: %w", err)
		}
		return rf, metering.RefundInput{Amount: m, Reason: reason}, nil
	}
	att, err := q.AttemptSucceededOf(ctx, p.ID)
	if err != nil {
		return db.PaymentRefund{}, in, fmt.Errorf("read succeeded attempt: %w", errors.Join(err, ErrPaymentState))
	}
	// A payment marked paid by hand took no money through the provider,
	// which therefore has nothing to give back.
	if att.ProviderPaymentID == nil {
		return db.PaymentRefund{}, in, fmt.Errorf("%w: the payment was marked paid by hand, not taken through the provider: refund it to the credit balance", ErrPaymentState)
	}
	id := uuid.New()
	rf, err := q.RefundInsert(ctx, db.RefundInsertParams{ID: id, PaymentID: p.ID, InvoiceID: p.InvoiceID, Amount: m.Minor,
		Currency: m.Currency, Reason: reason, Actor: actor.Subject, IdempotencyKey: "veil-refund-" + id.String()})
	if err != nil {
		return db.PaymentRefund{}, in, fmt.Errorf("insert refund: %w", err)
	}
	in = metering.RefundInput{ProviderPaymentID: *att.ProviderPaymentID, Amount: m, Reason: reason, RefundID: rf.ID.String(),
		IdempotencyKey: rf.IdempotencyKey}
	return rf, in, nil
}

// settleRefund records a refund's result, once: only a pending refund
// changes, and a succeeded one adds to the payment's refunded amount.
func (s *Service) settleRefund(ctx context.Context, tx pgx.Tx, paymentID, refundID uuid.UUID, res metering.RefundResult) error {
	if res.Status == metering.RefundPending || res.Status == "" {
		if res.ProviderRefundID == "" {
			return nil
		}
	}
	q := db.New(tx)
	p, err := q.PaymentLock(ctx, paymentID)
	if err != nil {
		return fmt.Errorf("lock payment: %w", err)
	}
	st := string(res.Status)
	if st == "" {
		st = "pending"
	}
	rf, err := q.RefundSettle(ctx, db.RefundSettleParams{ID: refundID, Status: st,
		ProviderRefundID: optional(res.ProviderRefundID), FailureReason: res.FailureReason, At: s.now()})
	if errors.Is(err, pgx.ErrNoRows) && res.Status == metering.RefundFailed {
		return s.refundFailedLate(ctx, tx, p, refundID, res)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record refund: %w", err)
	}
	if rf.Status != "succeeded" || rf.StrayAttemptID != nil {
		// A stray charge's refund gives back that charge, not the payment.
		return nil
	}
	if err := q.PaymentAddRefunded(ctx, db.PaymentAddRefundedParams{ID: p.ID, Amount: rf.Amount}); err != nil {
		return fmt.Errorf("record refunded amount: %w", err)
	}
	p.AmountRefunded += rf.Amount
	if err := s.checkOverRefunded(ctx, tx, p); err != nil {
		return err
	}
	return s.publish(ctx, tx, p.ID, "payment.refunded")
}

// refundFailedLate records that the provider failed a refund it had
// reported succeeded: the bank could not return the money, which is back
// in the platform's balance. The payment no longer counts it, and
// failed_at dates it for the payouts statement, which adds it back then.
// A refund already failed, or never succeeded, changes nothing.
func (s *Service) refundFailedLate(ctx context.Context, tx pgx.Tx, p db.Payment, refundID uuid.UUID, res metering.RefundResult) error {
	q := db.New(tx)
	rf, err := q.RefundFailAfterSucceeded(ctx, db.RefundFailAfterSucceededParams{ID: refundID, At: new(s.now()),
		FailureReason: cmp.Or(res.FailureReason, "failed_after_succeeded")})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record refund failed: %w", err)
	}
	s.log.Error("the provider failed a refund it had reported succeeded: the customer did not get it back",
		"refund", rf.ID, "payment", p.ID, "invoice", p.InvoiceID, "provider_refund", res.ProviderRefundID,
		"amount", metering.Money{Minor: rf.Amount, Currency: rf.Currency}.String(), "reason", rf.FailureReason)
	if rf.StrayAttemptID != nil {
		// A stray charge's refund is not in the payment's refunded amount.
		return nil
	}
	if err := q.PaymentAddRefunded(ctx, db.PaymentAddRefundedParams{ID: p.ID, Amount: -rf.Amount}); err != nil {
		return fmt.Errorf("record refunded amount: %w", err)
	}
	err = audit.Record(ctx, tx, audit.Change{
		Actor: identity.System.Subject, ActorRole: string(identity.System.Role), OrganizationID: p.IssuerID,
		Action: "payment.refund_failed", TargetType: "invoice", TargetID: p.InvoiceID.String(),
		Before: map[string]any{"refund": rf.ID, "status": "succeeded"},
		After: map[string]any{"refund": rf.ID, "status": "failed", "amount": metering.Money{Minor: rf.Amount, Currency: rf.Currency}.String(),
			"reason": rf.FailureReason, "provider_refund_id": res.ProviderRefundID},
	})
	if err != nil {
		return err
	}
	return s.publish(ctx, tx, p.ID, "payment.refund_failed")
}

// checkOverRefunded flags a payment whose refunds, cash and credit
// together, exceed what was paid: a credit was given and the provider
// also returned the money (a refund made in its dashboard). Both are
// facts by then, so nothing is capped; a person settles it with the
// customer (taking the credit back, or charging again).
func (s *Service) checkOverRefunded(ctx context.Context, tx pgx.Tx, p db.Payment) error {
	if p.AmountRefunded+p.AmountDisputedLost <= p.Amount {
		return nil
	}
	s.cfg.Metrics.GetOrCreateCounter(overRefundedName).Inc()
	s.log.Error("a payment's refunds and lost disputes exceed what was paid: credit was given and money returned too; settle it with the customer",
		"payment", p.ID, "invoice", p.InvoiceID, "amount", p.Amount, "refunded", p.AmountRefunded, "disputed_lost", p.AmountDisputedLost)
	q := db.New(tx)
	if err := q.PaymentFlag(ctx, db.PaymentFlagParams{ID: p.ID, Reason: reasonOverRefunded}); err != nil {
		return fmt.Errorf("flag payment: %w", err)
	}
	return audit.Record(ctx, tx, audit.Change{
		Actor: identity.System.Subject, ActorRole: string(identity.System.Role), OrganizationID: p.IssuerID,
		Action: "payment.over_refunded", TargetType: "invoice", TargetID: p.InvoiceID.String(),
		After: map[string]any{"amount": p.Amount, "refunded": p.AmountRefunded, "disputed_lost": p.AmountDisputedLost,
			"currency": p.Currency, "attention_reason": reasonOverRefunded},
	})
}

// overRefundedName counts payments refunded beyond what was paid (credit
// and cash both given), in Config.Metrics; any is a person's to look at.
const overRefundedName = `veil_controlplane_payment_over_refunded_total`

// reasonOverRefunded is the attention_reason of a succeeded payment
// refunded (and lost to disputes) beyond what was paid.
const reasonOverRefunded = "refunded_beyond_paid"

// RefundToCredit gives back amount (zero: all that is left) of a paid
// invoice's payment to the customer's credit balance with the issuer, for
// the issuer's providers and admins: a "refund" entry of the credit
// ledger, written with the refund, its audit and its announcement in one
// transaction, and no provider call. It counts against the payment like
// a refund through the provider.
func (s *Service) RefundToCredit(ctx context.Context, actor identity.Actor, invoiceID uuid.UUID, amount decimal.Decimal, reason string) (Refund, error) {
	if len(reason) > 500 || amount.IsNegative() {
		return Refund{}, fmt.Errorf("refund: %w: amount below zero or reason over 500 bytes", ErrInvalid)
	}
	if s.cfg.Credits == nil {
		return Refund{}, fmt.Errorf("%w: no credit ledger", ErrNotConfigured)
	}
	var rf db.PaymentRefund
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		p, err := lockPayment(ctx, q, invoiceID, issuerOnly(actor))
		if err != nil {
			return err
		}
		var in metering.RefundInput
		if rf, in, err = s.startRefund(ctx, q, p, amount, reason, actor, DestinationCreditBalance); err != nil {
			return err
		}
		if err := s.cfg.Credits.CreditRefund(ctx, tx, p.IssuerID, p.CustomerID, p.InvoiceID, p.Currency,
			in.Amount.Decimal(), reason, actor.Subject); err != nil {
			return fmt.Errorf("credit refund: %w", err)
		}
		if err := audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: p.IssuerID, Action: "payment.refund",
			TargetType: "invoice", TargetID: p.InvoiceID.String(),
			After: map[string]any{"refund": rf.ID, "amount": in.Amount.String(), "reason": reason, "destination": DestinationCreditBalance},
		}); err != nil {
			return err
		}
		if err := q.PaymentAddRefunded(ctx, db.PaymentAddRefundedParams{ID: p.ID, Amount: rf.Amount}); err != nil {
			return fmt.Errorf("record refunded amount: %w", err)
		}
		return s.publish(ctx, tx, p.ID, "payment.refunded")
	})
	if err != nil {
		return Refund{}, err
	}
	return toRefund(rf), nil
}
