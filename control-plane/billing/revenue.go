package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// maxRevenueSpan bounds a statement's window: five years of months.
const maxRevenueSpan = 5 * 366 * 24 * time.Hour

// Revenue is an issuer's statement over [From, To): its finalized
// invoices by month of finalization (UTC), API and currency. Amounts of
// different currencies are never added: each line and each total is in
// one currency.
type Revenue struct {
	IssuerID uuid.UUID `json:"issuer_id"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	// PlatformFeePercent is the issuer's fee now, which every line's fee
	// is computed with.
	PlatformFeePercent decimal.Decimal `json:"platform_fee_percent"`
	Lines              []RevenueLine   `json:"lines"`
	// Totals sum the lines per currency (the fee too: the sum of the
	// lines' rounded fees).
	Totals []RevenueTotal `json:"totals"`
}

// RevenueFigures are the amounts of a line or a total. Gross is the
// invoices' subtotal, Discounts their discount, Tax their tax (included
// or added), Net their total less tax, what the issuer earned; open and
// paid invoices count, void ones never. PlatformFee is Net × the fee
// percent / 100, rounded once per line to the currency's minor unit.
// Uncollectible invoices are apart: how many, and the net they were for,
// in no other figure.
type RevenueFigures struct {
	Currency              string          `json:"currency"`
	Invoices              int64           `json:"invoices"`
	Gross                 decimal.Decimal `json:"gross"`
	Discounts             decimal.Decimal `json:"discounts"`
	Tax                   decimal.Decimal `json:"tax"`
	Net                   decimal.Decimal `json:"net"`
	PlatformFee           decimal.Decimal `json:"platform_fee"`
	UncollectibleInvoices int64           `json:"uncollectible_invoices"`
	UncollectibleNet      decimal.Decimal `json:"uncollectible_net"`
}

// RevenueLine is one month, API and currency of a statement.
type RevenueLine struct {
	// Month is YYYY-MM, the month (UTC) the invoices were finalized.
	Month   string    `json:"month"`
	APIID   uuid.UUID `json:"api_id"`
	APISlug string    `json:"api_slug"`
	APIName string    `json:"api_name"`
	RevenueFigures
}

// RevenueTotal is a statement's total in one currency.
type RevenueTotal struct {
	RevenueFigures
}

// Revenue returns issuer's statement over [from, to), at most five
// years: to the issuer's providers and admins; another organization's is
// not found, its consumers are forbidden.
func (s *Service) Revenue(ctx context.Context, actor identity.Actor, issuer uuid.UUID, from, to time.Time) (Revenue, error) {
	if !memberOrAdmin(actor, issuer) {
		return Revenue{}, ErrOrganizationNotFound
	}
	if !actor.CanProvide(issuer) {
		return Revenue{}, identity.ErrForbidden
	}
	if !to.After(from) || to.Sub(from) > maxRevenueSpan {
		return Revenue{}, validation.One("to", "must be after from, at most five years later")
	}
	q := db.New(s.pool)
	if err := organizationExists(ctx, q, issuer); err != nil {
		return Revenue{}, err
	}
	settings, err := issuerSettings(ctx, q, issuer)
	if err != nil {
		return Revenue{}, err
	}
	rows, err := q.RevenueByMonthAPI(ctx, db.RevenueByMonthAPIParams{IssuerID: issuer, FromTime: from, ToTime: to})
	if err != nil {
		return Revenue{}, fmt.Errorf("read revenue: %w", err)
	}
	out, err := revenueStatement(rows, settings.PlatformFeePercent)
	if err != nil {
		return Revenue{}, err
	}
	out.IssuerID, out.From, out.To = issuer, from, to
	return out, nil
}

// revenueStatement prices the platform fee of each row and totals them
// per currency, in the order the currencies first appear.
// payments.PlatformFee charges each payment of the payouts statement the
// same fee of the same net: a change here is a change there.
func revenueStatement(rows []db.RevenueByMonthAPIRow, feePercent decimal.Decimal) (Revenue, error) {
	out := Revenue{PlatformFeePercent: feePercent, Lines: make([]RevenueLine, 0, len(rows)), Totals: []RevenueTotal{}}
	totals := map[string]int{}
	for _, r := range rows {
		cur, err := metering.CurrencyOf(r.Currency)
		if err != nil {
			return Revenue{}, fmt.Errorf("price platform fee: %w", err)
		}
		f := RevenueFigures{
			Currency: r.Currency, Invoices: r.Invoices, Gross: r.Gross, Discounts: r.Discounts, Tax: r.Tax, Net: r.Net,
			PlatformFee:           cur.Round(r.Net.Mul(feePercent).Div(percentScale)),
			UncollectibleInvoices: r.UncollectibleInvoices, UncollectibleNet: r.UncollectibleNet,
		}
		out.Lines = append(out.Lines, RevenueLine{Month: r.Month, APIID: r.ApiID, APISlug: r.ApiSlug, APIName: r.ApiName, RevenueFigures: f})
		i, ok := totals[r.Currency]
		if !ok {
			i = len(out.Totals)
			totals[r.Currency] = i
			out.Totals = append(out.Totals, RevenueTotal{RevenueFigures{Currency: r.Currency}})
		}
		t := &out.Totals[i].RevenueFigures
		t.Invoices += f.Invoices
		t.Gross = t.Gross.Add(f.Gross)
		t.Discounts = t.Discounts.Add(f.Discounts)
		t.Tax = t.Tax.Add(f.Tax)
		t.Net = t.Net.Add(f.Net)
		t.PlatformFee = t.PlatformFee.Add(f.PlatformFee)
		t.UncollectibleInvoices += f.UncollectibleInvoices
		t.UncollectibleNet = t.UncollectibleNet.Add(f.UncollectibleNet)
	}
	return out, nil
}
