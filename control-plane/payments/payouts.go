package payments

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// MonthLayout is how a payouts statement's month is written: 2026-11.
const MonthLayout = "2006-01"

var payoutPercentScale = decimal.NewFromInt(100)

// Payout is an issuer's payouts statement of one calendar month (UTC):
// what its invoices' payments collected, what was given back, and what
// the platform owes the issuer for it. No money moves: it is what a
// transfer would be. Every figure is recomputable from the items it
// lists, and amounts of different currencies are never added.
type Payout struct {
	IssuerID uuid.UUID
	// Month is YYYY-MM; From and To bound it, [From, To), in UTC.
	Month string
	From  time.Time
	To    time.Time
	// PlatformFeePercent is the issuer's fee now (billing's setting, the
	// one its revenue statement takes), which every payment's fee is
	// computed with.
	PlatformFeePercent decimal.Decimal
	// Payments succeeded in the month, Refunds succeeded in it (money
	// given back through the provider; negated, one the provider failed
	// in the month after it had succeeded), DisputesLost the chargebacks
	// whose amount the provider withdrew in the month (negated, those won
	// in it: the amount came back; one recorded before withdrawals were
	// counts when it closed lost); each in the order it happened. The
	// fee Stripe charges for a dispute is not in the statement, as the
	// dispute events Veil records do not carry it: the platform bears it. CreditRefunds are refunds to the
	// customer's credit balance with the issuer that succeeded in the
	// month: no money moved, so they are in no other figure (the credit
	// lowers what later invoices collect). PaidToIssuer are payments that
	// succeeded in the month because the issuer's own member marked them
	// paid by hand: the money went to the issuer, not the platform, so
	// they are not collected, and their fee is owed by the issuer.
	Payments      []PayoutPayment
	Refunds       []PayoutRefund
	DisputesLost  []PayoutDispute
	CreditRefunds []PayoutRefund
	PaidToIssuer  []PayoutPayment
	// Totals are per currency, in the order the currencies first appear.
	Totals []PayoutTotal
}

// PayoutPayment is a payment that succeeded: collected by the platform,
// or paid to the issuer.
type PayoutPayment struct {
	PaymentID     uuid.UUID
	InvoiceID     uuid.UUID
	InvoiceNumber string
	// Provider is the one of the attempt that settled it: stripe for a
	// charge, manual for a payment marked paid by hand (whatever the
	// payment's provider).
	Provider    string
	SucceededAt time.Time
	Currency    string
	Amount      decimal.Decimal
	// InvoiceTotal and InvoiceTax are the invoice's, which the fee's base
	// is taken from.
	InvoiceTotal decimal.Decimal
	InvoiceTax   decimal.Decimal
	PlatformFee  decimal.Decimal
}

// PayoutRefund is a refund counted as given back.
type PayoutRefund struct {
	RefundID         uuid.UUID
	PaymentID        uuid.UUID
	InvoiceID        uuid.UUID
	InvoiceNumber    string
	Provider         string
	ProviderRefundID string
	// External: made outside Veil (the provider's dashboard).
	External   bool
	RefundedAt time.Time
	Currency   string
	Amount     decimal.Decimal
}

// PayoutDispute is a dispute counted: Amount was taken from the
// platform's balance at LostAt (the withdrawal, or the close lost of a
// dispute recorded before withdrawals were, up to what the payment's
// earlier lost disputes left), or, negative, given back (won).
type PayoutDispute struct {
	DisputeID         uuid.UUID
	ProviderDisputeID string
	PaymentID         uuid.UUID
	InvoiceID         uuid.UUID
	InvoiceNumber     string
	Provider          string
	Reason            string
	LostAt            time.Time
	Currency          string
	Amount            decimal.Decimal
}

// PayoutTotal is a statement's figures in one currency: Collected,
// Refunded, DisputesLost, RefundedToCredit and PaidToIssuer sum their
// items, PlatformFee the rounded fees of the payments collected and paid
// to the issuer, and Owed = Collected − Refunded − DisputesLost −
// PlatformFee, what the platform owes the issuer (below zero: what the
// issuer owes the platform).
type PayoutTotal struct {
	Currency             string
	Payments             int
	Refunds              int
	Disputes             int
	CreditRefunds        int
	PaidToIssuerPayments int
	PaidToIssuer         decimal.Decimal
	Collected            decimal.Decimal
	Refunded             decimal.Decimal
	DisputesLost         decimal.Decimal
	PlatformFee          decimal.Decimal
	Owed                 decimal.Decimal
	RefundedToCredit     decimal.Decimal
	currencyExponent     int32
}

// ParseMonth reads a statement's month (YYYY-MM, years 2000 to 2199) and
// returns its first instant in UTC.
func ParseMonth(s string) (time.Time, error) {
	t, err := time.Parse(MonthLayout, s)
	if err != nil || len(s) != len(MonthLayout) || t.Year() < 2000 || t.Year() > 2199 {
		return time.Time{}, fmt.Errorf("read month: %w: %q is not a month such as 2026-11", ErrInvalid, s)
	}
	return t.UTC(), nil
}

// Payouts returns issuer's payouts statement of month (YYYY-MM): to the
// issuer's providers and admins; another organization's is not found,
// the issuer's consumers are forbidden.
func (s *Service) Payouts(ctx context.Context, actor identity.Actor, issuer uuid.UUID, month string) (Payout, error) {
	if !actor.IsAdmin() && (actor.OrgID == uuid.Nil || actor.OrgID != issuer) {
		return Payout{}, ErrNotFound
	}
	if !actor.CanProvide(issuer) {
		return Payout{}, identity.ErrForbidden
	}
	from, err := ParseMonth(month)
	if err != nil {
		return Payout{}, err
	}
	out := Payout{IssuerID: issuer, Month: from.Format(MonthLayout), From: from, To: from.AddDate(0, 1, 0)}
	// One snapshot, so that a refund committed while the statement is read
	// is in all of its figures or in none.
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		return readPayout(ctx, db.New(tx), &out)
	})
	if err != nil {
		return Payout{}, err
	}
	return out, out.total()
}

// readPayout reads out's items.
func readPayout(ctx context.Context, q *db.Queries, out *Payout) error {
	exists, err := q.PayoutOrganizationExists(ctx, out.IssuerID)
	if err != nil {
		return fmt.Errorf("read organization: %w", err)
	}
	if !exists {
		return ErrNotFound
	}
	if out.PlatformFeePercent, err = q.PayoutFeePercent(ctx, out.IssuerID); err != nil {
		return fmt.Errorf("read platform fee: %w", err)
	}
	pays, err := q.PayoutPayments(ctx, db.PayoutPaymentsParams{IssuerID: out.IssuerID, FromTime: out.From, ToTime: out.To})
	if err != nil {
		return fmt.Errorf("read payments collected: %w", err)
	}
	out.Payments, out.PaidToIssuer = make([]PayoutPayment, 0, len(pays)), []PayoutPayment{}
	for _, p := range pays {
		amount, err := decimalOf(p.Amount, p.Currency)
		if err != nil {
			return err
		}
		item := PayoutPayment{PaymentID: p.ID, InvoiceID: p.InvoiceID, InvoiceNumber: p.InvoiceNumber,
			Provider: p.Provider, SucceededAt: p.SucceededAt.UTC(), Currency: p.Currency, Amount: amount,
			InvoiceTotal: p.InvoiceTotal, InvoiceTax: p.InvoiceTax}
		if p.PaidToPlatform {
			out.Payments = append(out.Payments, item)
		} else {
			out.PaidToIssuer = append(out.PaidToIssuer, item)
		}
	}
	refunds, err := q.PayoutRefunds(ctx, db.PayoutRefundsParams{IssuerID: out.IssuerID, FromTime: out.From, ToTime: out.To})
	if err != nil {
		return fmt.Errorf("read refunds: %w", err)
	}
	out.Refunds, out.CreditRefunds = []PayoutRefund{}, []PayoutRefund{}
	for _, r := range refunds {
		amount, err := decimalOf(r.Amount, r.Currency)
		if err != nil {
			return err
		}
		item := PayoutRefund{RefundID: r.ID, PaymentID: r.PaymentID, InvoiceID: r.InvoiceID, InvoiceNumber: r.InvoiceNumber,
			Provider: r.Provider, ProviderRefundID: r.ProviderRefundID, External: r.External, RefundedAt: r.RefundedAt.UTC(),
			Currency: r.Currency, Amount: amount}
		if r.Destination == "credit_balance" {
			out.CreditRefunds = append(out.CreditRefunds, item)
		} else {
			out.Refunds = append(out.Refunds, item)
		}
	}
	disputes, err := q.PayoutDisputesLost(ctx, db.PayoutDisputesLostParams{IssuerID: out.IssuerID, FromTime: out.From, ToTime: out.To})
	if err != nil {
		return fmt.Errorf("read disputes lost: %w", err)
	}
	out.DisputesLost = make([]PayoutDispute, 0, len(disputes))
	for _, d := range disputes {
		amount, err := decimalOf(d.Amount, d.Currency)
		if err != nil {
			return err
		}
		out.DisputesLost = append(out.DisputesLost, PayoutDispute{DisputeID: d.ID, ProviderDisputeID: d.ProviderDisputeID,
			PaymentID: d.PaymentID, InvoiceID: d.InvoiceID, InvoiceNumber: d.InvoiceNumber, Provider: d.Provider, Reason: d.Reason,
			LostAt: d.LostAt.UTC(), Currency: d.Currency, Amount: amount})
	}
	return nil
}

// decimalOf converts stored minor units to an exact decimal with the
// currency's exponent; a currency Veil does not price in is refused
// rather than guessed (a hundredfold error on a statement).
func decimalOf(minor int64, currency string) (decimal.Decimal, error) {
	c, err := metering.CurrencyOf(currency)
	if err != nil {
		return decimal.Decimal{}, fmt.Errorf("read payout amount: %w", err)
	}
	return decimal.New(minor, -c.Exponent), nil
}

// PlatformFee is the platform's fee of a payment of amount towards an
// invoice of total, tax included: percent of the part of amount that is
// not tax, rounded once to the currency's minor unit. The base is the
// revenue statement's (billing: an invoice's total less tax), in the
// proportion the payment paid of the invoice, so that an invoice paid in
// part by credits is charged on the cash only; an invoice paid entirely
// by the payment gets exactly the revenue statement's fee. A refund or a
// lost dispute gives no fee back, as the revenue statement keeps the fee
// of an invoice however much of it is later refunded.
func PlatformFee(amount, invoiceTotal, invoiceTax, percent decimal.Decimal, cur metering.Currency) decimal.Decimal {
	if !invoiceTotal.IsPositive() || invoiceTax.IsNegative() || invoiceTax.GreaterThan(invoiceTotal) {
		// Figures that cannot be split (not an invoice billing writes):
		// the whole amount is the base.
		return cur.Round(amount.Mul(percent).Div(payoutPercentScale))
	}
	// One division, last, so that the rounding is the only one.
	return cur.Round(amount.Mul(invoiceTotal.Sub(invoiceTax)).Mul(percent).Div(invoiceTotal.Mul(payoutPercentScale)))
}

// total prices each payment's fee and sums the items per currency.
func (p *Payout) total() error {
	idx := map[string]int{}
	at := func(currency string) (*PayoutTotal, error) {
		i, ok := idx[currency]
		if !ok {
			c, err := metering.CurrencyOf(currency)
			if err != nil {
				return nil, fmt.Errorf("total payout: %w", err)
			}
			i = len(p.Totals)
			idx[currency] = i
			p.Totals = append(p.Totals, PayoutTotal{Currency: currency, currencyExponent: c.Exponent})
		}
		return &p.Totals[i], nil
	}
	p.Totals = []PayoutTotal{}
	for i := range p.Payments {
		pay := &p.Payments[i]
		t, err := at(pay.Currency)
		if err != nil {
			return err
		}
		pay.PlatformFee = PlatformFee(pay.Amount, pay.InvoiceTotal, pay.InvoiceTax, p.PlatformFeePercent,
			metering.Currency{Code: pay.Currency, Exponent: t.currencyExponent})
		t.Payments++
		t.Collected = t.Collected.Add(pay.Amount)
		t.PlatformFee = t.PlatformFee.Add(pay.PlatformFee)
	}
	for i := range p.PaidToIssuer {
		pay := &p.PaidToIssuer[i]
		t, err := at(pay.Currency)
		if err != nil {
			return err
		}
		pay.PlatformFee = PlatformFee(pay.Amount, pay.InvoiceTotal, pay.InvoiceTax, p.PlatformFeePercent,
			metering.Currency{Code: pay.Currency, Exponent: t.currencyExponent})
		t.PaidToIssuerPayments++
		t.PaidToIssuer = t.PaidToIssuer.Add(pay.Amount)
		t.PlatformFee = t.PlatformFee.Add(pay.PlatformFee)
	}
	for _, r := range p.Refunds {
		t, err := at(r.Currency)
		if err != nil {
			return err
		}
		t.Refunds++
		t.Refunded = t.Refunded.Add(r.Amount)
	}
	for _, d := range p.DisputesLost {
		t, err := at(d.Currency)
		if err != nil {
			return err
		}
		t.Disputes++
		t.DisputesLost = t.DisputesLost.Add(d.Amount)
	}
	for _, r := range p.CreditRefunds {
		t, err := at(r.Currency)
		if err != nil {
			return err
		}
		t.CreditRefunds++
		t.RefundedToCredit = t.RefundedToCredit.Add(r.Amount)
	}
	for i := range p.Totals {
		t := &p.Totals[i]
		t.Owed = t.Collected.Sub(t.Refunded).Sub(t.DisputesLost).Sub(t.PlatformFee)
	}
	return nil
}

// PayoutCSVHeader is the header of a statement's CSV export.
var PayoutCSVHeader = []string{"month", "issuer_id", "kind", "id", "payment_id", "invoice_id", "invoice_number", "provider",
	"provider_reference", "at", "currency", "amount", "invoice_total", "invoice_tax", "platform_fee_percent", "platform_fee",
	"collected", "refunded", "disputes_lost", "owed", "refunded_to_credit", "paid_to_issuer"}

// WriteCSV writes p as CSV (RFC 4180, CRLF): a row per payment
// (kind payment), refund (refund), dispute lost (dispute_lost), refund
// to the credit balance (credit_refund) and payment to the issuer
// (paid_to_issuer), then a row per currency (total). Amounts have the
// currency's decimals; a cell a spreadsheet would take for a formula is
// prefixed with a quote.
func (p Payout) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	rows := [][]string{PayoutCSVHeader}
	pct := p.PlatformFeePercent.StringFixed(2)
	row := func(kind, id, payment, invoice, number, provider, ref string, at time.Time, currency string) []string {
		r := make([]string, len(PayoutCSVHeader))
		copy(r, []string{p.Month, p.IssuerID.String(), kind, id, payment, invoice, number, provider, ref,
			at.UTC().Format(time.RFC3339Nano), currency})
		return r
	}
	payment := func(kind string, x PayoutPayment) []string {
		r := row(kind, x.PaymentID.String(), x.PaymentID.String(), x.InvoiceID.String(), x.InvoiceNumber, x.Provider, "",
			x.SucceededAt, x.Currency)
		r[11], r[12], r[13], r[14], r[15] = payoutAmount(x.Currency, x.Amount), payoutAmount(x.Currency, x.InvoiceTotal),
			payoutAmount(x.Currency, x.InvoiceTax), pct,
			payoutAmount(x.Currency, x.PlatformFee)
		return r
	}
	for _, x := range p.Payments {
		rows = append(rows, payment("payment", x))
	}
	for _, x := range p.PaidToIssuer {
		rows = append(rows, payment("paid_to_issuer", x))
	}
	for _, x := range p.Refunds {
		r := row("refund", x.RefundID.String(), x.PaymentID.String(), x.InvoiceID.String(), x.InvoiceNumber, x.Provider,
			x.ProviderRefundID, x.RefundedAt, x.Currency)
		r[11] = payoutAmount(x.Currency, x.Amount)
		rows = append(rows, r)
	}
	for _, x := range p.DisputesLost {
		r := row("dispute_lost", x.DisputeID.String(), x.PaymentID.String(), x.InvoiceID.String(), x.InvoiceNumber, x.Provider,
			x.ProviderDisputeID, x.LostAt, x.Currency)
		r[11] = payoutAmount(x.Currency, x.Amount)
		rows = append(rows, r)
	}
	for _, x := range p.CreditRefunds {
		r := row("credit_refund", x.RefundID.String(), x.PaymentID.String(), x.InvoiceID.String(), x.InvoiceNumber, x.Provider, "",
			x.RefundedAt, x.Currency)
		r[11] = payoutAmount(x.Currency, x.Amount)
		rows = append(rows, r)
	}
	for _, t := range p.Totals {
		r := make([]string, len(PayoutCSVHeader))
		r[0], r[1], r[2], r[10], r[14] = p.Month, p.IssuerID.String(), "total", t.Currency, pct
		r[15], r[16], r[17], r[18], r[19] = payoutAmount(t.Currency, t.PlatformFee), payoutAmount(t.Currency, t.Collected),
			payoutAmount(t.Currency, t.Refunded), payoutAmount(t.Currency, t.DisputesLost), payoutAmount(t.Currency, t.Owed)
		r[20], r[21] = payoutAmount(t.Currency, t.RefundedToCredit), payoutAmount(t.Currency, t.PaidToIssuer)
		rows = append(rows, r)
	}
	for _, r := range rows {
		for i := range r {
			r[i] = csvSafe(r[i])
		}
	}
	if err := cw.WriteAll(rows); err != nil {
		return fmt.Errorf("write payouts csv: %w", err)
	}
	return nil
}

// payoutAmount prints an amount with its currency's decimals.
func payoutAmount(currency string, d decimal.Decimal) string {
	if c, err := metering.CurrencyOf(currency); err == nil {
		return c.Format(d)
	}
	return d.String()
}

// csvSafe keeps a spreadsheet from running a cell as a formula: one that
// starts with = + - @, a tab or a carriage return gets a leading quote,
// which spreadsheets show and do not evaluate. A negative amount (owed
// below zero) is quoted too; readers strip the quote.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
