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

// Credit ledger kinds: what a movement of a balance comes from.
const (
	CreditProration = "proration"
	CreditGoodwill  = "goodwill"
	CreditRefund    = "refund"
	CreditApplied   = "applied"
)

// maxCredit bounds one goodwill grant (and amounts typed by people
// generally): far above any real credit, far below numeric(20, 6)'s limit.
var maxCredit = decimal.New(1, 12)

// ErrInsufficientCredit: a movement would take a balance below zero.
var ErrInsufficientCredit = errors.New("credit balance would go below zero")

// CreditBalance is what a customer may spend with an issuer in a currency.
type CreditBalance struct {
	IssuerID   uuid.UUID       `json:"issuer_id"`
	CustomerID uuid.UUID       `json:"customer_id"`
	Currency   string          `json:"currency"`
	Balance    decimal.Decimal `json:"balance"`
}

// CreditEntry is one movement of a balance: positive for grants,
// proration credits and refunds, negative for credit applied to an
// invoice; BalanceAfter is the balance it left.
type CreditEntry struct {
	ID           int64           `json:"id"`
	IssuerID     uuid.UUID       `json:"issuer_id"`
	CustomerID   uuid.UUID       `json:"customer_id"`
	Currency     string          `json:"currency"`
	Kind         string          `json:"kind"`
	Amount       decimal.Decimal `json:"amount"`
	BalanceAfter decimal.Decimal `json:"balance_after"`
	InvoiceID    *uuid.UUID      `json:"invoice_id"`
	Reason       string          `json:"reason"`
	Actor        string          `json:"actor"`
	CreatedAt    time.Time       `json:"created_at"`
}

// GrantInput grants goodwill credit to a customer of the issuer.
type GrantInput struct {
	// IssuerID is the provider organization granting; a provider's own
	// organization when omitted (admins must name it).
	IssuerID   uuid.UUID       `json:"issuer_id"`
	CustomerID uuid.UUID       `json:"customer_id"`
	Currency   string          `json:"currency"`
	Amount     decimal.Decimal `json:"amount"`
	Reason     string          `json:"reason"`
}

// Validate checks the input; the amount must be positive and in the
// currency's minor unit, as every amount on an invoice is.
func (in *GrantInput) Validate() error {
	var v validation.Error
	if in.CustomerID == uuid.Nil {
		v.Add("customer_id", "is required")
	}
	cur, err := metering.CurrencyOf(in.Currency)
	if err != nil {
		v.Add("currency", "must be a currency Veil prices in (ISO 4217, upper case)")
	}
	switch {
	case !in.Amount.IsPositive() || in.Amount.GreaterThanOrEqual(maxCredit):
		v.Add("amount", "must be above zero and below 10^12")
	case err == nil && !in.Amount.Equal(in.Amount.Round(cur.Exponent)):
		v.Add("amount", "must be in the currency's minor unit (%d decimals)", cur.Exponent)
	}
	if n := utf8.RuneCountInString(in.Reason); n < 1 || n > 1000 {
		v.Add("reason", "must be 1 to 1000 characters")
	}
	return v.Err()
}

// GrantCredit grants goodwill credit: the issuer's providers (or an
// admin) to one of the issuer's customers, that is an organization with
// a subscription to one of its APIs. Anyone else's customer is not found.
func (s *Service) GrantCredit(ctx context.Context, actor identity.Actor, in GrantInput) (CreditEntry, error) {
	if in.IssuerID == uuid.Nil && !actor.IsAdmin() {
		in.IssuerID = actor.OrgID
	}
	if in.IssuerID == uuid.Nil {
		return CreditEntry{}, validation.One("issuer_id", "is required: the provider organization granting")
	}
	if !actor.CanProvide(in.IssuerID) {
		return CreditEntry{}, ErrCustomerNotFound
	}
	if err := in.Validate(); err != nil {
		return CreditEntry{}, err
	}
	var out CreditEntry
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		ok, err := q.CustomerOf(ctx, db.CustomerOfParams{IssuerID: in.IssuerID, CustomerID: in.CustomerID})
		if err != nil {
			return fmt.Errorf("read customer: %w", err)
		}
		if !ok {
			return ErrCustomerNotFound
		}
		out, err = moveCredit(ctx, q, creditKey{in.IssuerID, in.CustomerID, in.Currency}, CreditGoodwill, in.Amount, nil, in.Reason, actor.Subject)
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: in.IssuerID, Action: "credit.grant",
			TargetType: "credit_balance", TargetID: in.CustomerID.String() + "/" + in.Currency, After: out,
		})
	})
	return out, err
}

// CreditRefund credits a refund of an invoice's payment to the customer's
// balance with the issuer, as a "refund" entry naming the invoice, in the
// caller's transaction: the payments service's CreditLedger, so that the
// refund and its entry commit together. The caller has authorized it.
func (s *Service) CreditRefund(ctx context.Context, tx pgx.Tx, issuer, customer, invoice uuid.UUID, currency string,
	amount decimal.Decimal, reason, actor string) error {
	if !amount.IsPositive() || amount.GreaterThanOrEqual(maxCredit) {
		return fmt.Errorf("credit refund: amount %s out of range", amount)
	}
	if _, err := moveCredit(ctx, db.New(tx), creditKey{issuer, customer, currency}, CreditRefund, amount, &invoice, reason, actor); err != nil {
		return fmt.Errorf("credit refund: %w", err)
	}
	return nil
}

// creditKey names one balance.
type creditKey struct {
	issuer, customer uuid.UUID
	currency         string
}

// moveCredit moves a balance by amount under its row lock and writes the
// ledger entry. The lock orders concurrent movements of one balance, so
// each entry's balance_after is the balance after exactly the entries
// before it; a movement that would go below zero is refused (and the
// CHECK on credit_balances would refuse it anyway).
func moveCredit(ctx context.Context, q *db.Queries, k creditKey, kind string, amount decimal.Decimal, invoiceID *uuid.UUID,
	reason, actor string) (CreditEntry, error) {
	if err := q.CreditBalanceEnsure(ctx, db.CreditBalanceEnsureParams{IssuerID: k.issuer, CustomerID: k.customer, Currency: k.currency}); err != nil {
		return CreditEntry{}, fmt.Errorf("create credit balance: %w", err)
	}
	balance, err := q.CreditBalanceLock(ctx, db.CreditBalanceLockParams{IssuerID: k.issuer, CustomerID: k.customer, Currency: k.currency})
	if err != nil {
		return CreditEntry{}, fmt.Errorf("lock credit balance: %w", err)
	}
	after := balance.Add(amount)
	if after.IsNegative() {
		return CreditEntry{}, ErrInsufficientCredit
	}
	if err := q.CreditBalanceSet(ctx, db.CreditBalanceSetParams{IssuerID: k.issuer, CustomerID: k.customer, Currency: k.currency, Balance: after}); err != nil {
		return CreditEntry{}, fmt.Errorf("update credit balance: %w", err)
	}
	row, err := q.CreditLedgerInsert(ctx, db.CreditLedgerInsertParams{
		IssuerID: k.issuer, CustomerID: k.customer, Currency: k.currency, Kind: db.CreditEntryKind(kind), Amount: amount,
		BalanceAfter: after, InvoiceID: invoiceID, Reason: reason, Actor: actor,
	})
	if err != nil {
		return CreditEntry{}, fmt.Errorf("insert credit ledger entry: %w", err)
	}
	return CreditEntry{
		ID: row.ID, IssuerID: k.issuer, CustomerID: k.customer, Currency: k.currency, Kind: kind, Amount: amount,
		BalanceAfter: after, InvoiceID: invoiceID, Reason: reason, Actor: actor, CreatedAt: row.CreatedAt,
	}, nil
}

// CreditBalances lists the balances the actor may see: those its
// organization is a party to, as issuer or as customer (a provider's
// organization is also a customer of other providers), every one for
// admins (filtered by issuer and customer when they are not uuid.Nil).
func (s *Service) CreditBalances(ctx context.Context, actor identity.Actor, issuer, customer uuid.UUID) ([]CreditBalance, error) {
	var rows []db.CreditBalance
	var err error
	if actor.IsAdmin() {
		rows, err = db.New(s.pool).CreditBalances(ctx, db.CreditBalancesParams{IssuerID: issuer, CustomerID: customer})
	} else {
		rows, err = db.New(s.pool).CreditBalancesOfParty(ctx, db.CreditBalancesOfPartyParams{OrgID: actor.OrgID, IssuerID: issuer, CustomerID: customer})
	}
	if err != nil {
		return nil, fmt.Errorf("list credit balances: %w", err)
	}
	out := make([]CreditBalance, 0, len(rows))
	for _, r := range rows {
		out = append(out, CreditBalance{IssuerID: r.IssuerID, CustomerID: r.CustomerID, Currency: r.Currency, Balance: r.Balance})
	}
	return out, nil
}

// CreditLedger lists the movements between an issuer and a customer after
// the entry id after, oldest first, at most limit (1 to 500). Only the
// two organizations and admins see it.
func (s *Service) CreditLedger(ctx context.Context, actor identity.Actor, issuer, customer uuid.UUID, after int64, limit int) ([]CreditEntry, error) {
	if !(parties{issuer, customer}).canSee(actor) {
		return nil, ErrCustomerNotFound
	}
	if limit < 1 || limit > 500 {
		limit = 100
	}
	rows, err := db.New(s.pool).CreditLedger(ctx, db.CreditLedgerParams{IssuerID: issuer, CustomerID: customer, After: after, Max: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list credit ledger: %w", err)
	}
	out := make([]CreditEntry, 0, len(rows))
	for _, r := range rows {
		out = append(out, CreditEntry{
			ID: r.ID, IssuerID: r.IssuerID, CustomerID: r.CustomerID, Currency: r.Currency, Kind: string(r.Kind), Amount: r.Amount,
			BalanceAfter: r.BalanceAfter, InvoiceID: r.InvoiceID, Reason: r.Reason, Actor: r.Actor, CreatedAt: r.CreatedAt,
		})
	}
	return out, nil
}
