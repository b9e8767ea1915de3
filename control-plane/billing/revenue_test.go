package billing

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/internal/validation"
)

// revenueBook writes invoices of the fixture's issuer by hand: an API
// with a plan version, and a subscription of a customer organization to
// it per invoice.
type revenueBook struct {
	f       *taxFixture
	api     uuid.UUID
	version uuid.UUID
	n       int
	subs    map[[2]uuid.UUID]uuid.UUID
}

func newRevenueBook(t *testing.T, f *taxFixture) *revenueBook {
	b := &revenueBook{f: f, subs: map[[2]uuid.UUID]uuid.UUID{}}
	b.api, b.version = b.newAPI("weather")
	return b
}

// newAPI inserts an API of the issuer and a version of a plan of it.
func (b *revenueBook) newAPI(slug string) (api, version uuid.UUID) {
	t, ctx := b.f.t, b.f.t.Context()
	t.Helper()
	slug += "-" + testenv.Suffix()
	if err := b.f.pool.QueryRow(ctx, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, created_by)
		VALUES ($1, $2, $2, 'https://upstream.example', 'v1', 'prov') RETURNING id`, b.f.issuer, slug).Scan(&api); err != nil {
		t.Fatalf("insert api: %v", err)
	}
	var plan uuid.UUID
	if err := b.f.pool.QueryRow(ctx, `INSERT INTO plans (api_id, name, slug) VALUES ($1, 'Pro', 'pro') RETURNING id`, api).Scan(&plan); err != nil {
		t.Fatalf("insert plan: %v", err)
	}
	if err := b.f.pool.QueryRow(ctx, `INSERT INTO plan_versions (plan_id, version, type, currency, created_by)
		VALUES ($1, 1, 'subscription', 'EUR', 'prov') RETURNING id`, plan).Scan(&version); err != nil {
		t.Fatalf("insert plan version: %v", err)
	}
	return api, version
}

// customer inserts a customer organization with a profile in country.
func (b *revenueBook) customer(country string) uuid.UUID {
	b.f.t.Helper()
	b.n++
	org := testenv.Org(b.f.t, b.f.pool, fmt.Sprintf("cust%d-%s", b.n, testenv.Suffix()))
	if _, err := b.f.pool.Exec(b.f.t.Context(), `INSERT INTO billing_profiles (organization_id, legal_name, country, email)
		VALUES ($1, 'Customer', $2, 'c@example.com')`, org, country); err != nil {
		b.f.t.Fatalf("insert billing profile: %v", err)
	}
	return org
}

type invoiceRow struct {
	status                         string
	customer                       uuid.UUID
	api, version                   uuid.UUID // the book's API when zero
	currency                       string    // EUR when empty
	periodEnd, finalized           time.Time
	subtotal, discount, tax, total string
	cites                          string
	number                         string // the book's next when empty
}

// invoice inserts r, of the customer's subscription to its API:
// finalized (a number,
// finalized_at) unless a draft.
func (b *revenueBook) invoice(r invoiceRow) uuid.UUID {
	t, ctx := b.f.t, b.f.t.Context()
	t.Helper()
	if r.api == uuid.Nil {
		r.api, r.version = b.api, b.version
	}
	if r.currency == "" {
		r.currency = "EUR"
	}
	if r.cites == "" {
		r.cites = "{}"
	}
	for _, s := range []*string{&r.subtotal, &r.discount, &r.tax, &r.total} {
		if *s == "" {
			*s = "0"
		}
	}
	start := r.periodEnd.AddDate(0, -1, 0)
	// One live subscription per customer and API: the invoices share it.
	sub, ok := b.subs[[2]uuid.UUID{r.customer, r.api}]
	if !ok {
		if err := b.f.pool.QueryRow(ctx, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
			VALUES ($1, 'sub', $2, $3, $4, $5) RETURNING id`, r.customer, r.api, r.version, start, r.periodEnd).Scan(&sub); err != nil {
			t.Fatalf("insert subscription: %v", err)
		}
		b.subs[[2]uuid.UUID{r.customer, r.api}] = sub
	}
	var number, finalized, paid, voided any
	if r.status != "draft" {
		b.n++
		number, finalized = fmt.Sprintf("INV-%d-%06d", r.finalized.Year(), b.n), r.finalized
		if r.number != "" {
			number = r.number
		}
	}
	if r.status == "paid" {
		paid = r.finalized.Add(time.Hour)
	}
	if r.status == "void" {
		voided = r.finalized.Add(time.Hour)
	}
	var id uuid.UUID
	if err := b.f.pool.QueryRow(ctx, `INSERT INTO invoices (issuer_id, customer_id, subscription_id, status, number, currency,
			period_start, period_end, subtotal, discount, tax, total, amount_due, cites, finalized_at, paid_at, voided_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15, $16) RETURNING id`,
		b.f.issuer, r.customer, sub, r.status, number, r.currency, start, r.periodEnd, r.subtotal, r.discount, r.tax, r.total,
		r.cites, finalized, paid, voided).Scan(&id); err != nil {
		t.Fatalf("insert invoice: %v", err)
	}
	return id
}

// newIssuerBook is a book of another issuer's invoices on f's database.
func newIssuerBook(t *testing.T, f *taxFixture, slug string) *revenueBook {
	issuer := testenv.Org(t, f.pool, slug+"-"+testenv.Suffix())
	b := &revenueBook{f: &taxFixture{t: t, pool: f.pool, issuer: issuer}, n: 100, subs: map[[2]uuid.UUID]uuid.UUID{}}
	b.api, b.version = b.newAPI(slug)
	return b
}

// The statement from invoices written by hand: per month of finalization,
// API and currency; open and paid in the figures, uncollectible apart,
// void and drafts nowhere, other issuers' invoices nowhere; the fee
// rounded once per line.
func TestRevenue(t *testing.T) {
	t.Parallel()
	f := taxSetup(t)
	b := newRevenueBook(t, f)
	maps, mapsVersion := b.newAPI("maps")
	c := b.customer("DE")
	jan := func(d int) time.Time { return time.Date(2026, 1, d, 10, 0, 0, 0, time.UTC) }
	feb := func(d int) time.Time { return time.Date(2026, 2, d, 10, 0, 0, 0, time.UTC) }

	// January, weather, EUR: 100 − 10 + 19% of 90 = 17.10 → 107.10; an
	// inclusive one: 50 with 7.98 of tax in it.
	b.invoice(invoiceRow{status: "open", customer: c, periodEnd: jan(1), finalized: jan(2), subtotal: "100", discount: "10", tax: "17.10", total: "107.10"})
	b.invoice(invoiceRow{status: "paid", customer: c, periodEnd: jan(1), finalized: jan(31).Add(13 * time.Hour), subtotal: "50", tax: "7.98", total: "50"})
	// Excluded: void, draft, and one an hour into February... which is
	// February's.
	b.invoice(invoiceRow{status: "void", customer: c, periodEnd: jan(1), finalized: jan(3), subtotal: "999", total: "999"})
	b.invoice(invoiceRow{status: "draft", customer: c, periodEnd: jan(1), subtotal: "888", total: "888"})
	// Uncollectible, apart.
	b.invoice(invoiceRow{status: "uncollectible", customer: c, periodEnd: jan(1), finalized: jan(5), subtotal: "30", tax: "5.70", total: "35.70"})
	// January, weather, USD: its own line.
	b.invoice(invoiceRow{status: "open", customer: c, currency: "USD", periodEnd: jan(1), finalized: jan(6), subtotal: "10.01", total: "10.01"})
	// January, maps, EUR.
	b.invoice(invoiceRow{status: "paid", customer: c, api: maps, version: mapsVersion, periodEnd: jan(1), finalized: jan(7), subtotal: "0.05", total: "0.05"})
	// February, weather, EUR.
	b.invoice(invoiceRow{status: "open", customer: c, periodEnd: feb(1), finalized: feb(1), subtotal: "20", discount: "20", total: "0"})
	// Outside the window: March.
	b.invoice(invoiceRow{status: "open", customer: c, periodEnd: feb(1), finalized: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), subtotal: "77", total: "77"})
	// Another issuer's invoice to the same customer.
	ob := newIssuerBook(t, f, "other")
	ob.invoice(invoiceRow{status: "open", customer: c, periodEnd: jan(1), finalized: jan(2), subtotal: "555", total: "555"})

	if _, err := f.svc.PutSettings(t.Context(), f.admin, f.issuer, SettingsInput{PlatformFeePercent: taxPtr(taxNum("12.5"))}); err != nil {
		t.Fatalf("PutSettings(fee): %v", err)
	}
	from, to := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	got, err := f.svc.Revenue(t.Context(), f.provider, f.issuer, from, to)
	if err != nil {
		t.Fatalf("Revenue: %v", err)
	}
	type line struct {
		month, api, currency            string
		invoices                        int64
		gross, discounts, tax, net, fee string
		uncollectible                   int64
		uncollectibleNet                string
	}
	slug := map[uuid.UUID]string{b.api: "weather", maps: "maps"}
	want := []line{
		// net 90 + 42.02 = 132.02, fee 16.5025 → 16.50.
		{"2026-01", "maps", "EUR", 1, "0.05", "0", "0", "0.05", "0.01", 0, "0"},
		{"2026-01", "weather", "EUR", 2, "150", "10", "25.08", "132.02", "16.50", 1, "30"},
		{"2026-01", "weather", "USD", 1, "10.01", "0", "0", "10.01", "1.25", 0, "0"},
		{"2026-02", "weather", "EUR", 1, "20", "20", "0", "0", "0", 0, "0"},
	}
	if len(got.Lines) != len(want) {
		t.Fatalf("Revenue lines = %+v; want %d lines", got.Lines, len(want))
	}
	for i, w := range want {
		g := got.Lines[i]
		ok := g.Month == w.month && slug[g.APIID] == w.api && g.Currency == w.currency && g.Invoices == w.invoices &&
			g.Gross.Equal(taxNum(w.gross)) && g.Discounts.Equal(taxNum(w.discounts)) && g.Tax.Equal(taxNum(w.tax)) && g.Net.Equal(taxNum(w.net)) &&
			g.PlatformFee.Equal(taxNum(w.fee)) && g.UncollectibleInvoices == w.uncollectible && g.UncollectibleNet.Equal(taxNum(w.uncollectibleNet))
		if !ok {
			t.Errorf("line %d = %s %s %+v; want %+v", i, g.Month, slug[g.APIID], g.RevenueFigures, w)
		}
	}
	// Totals per currency; the fee is the sum of the lines' rounded fees.
	if len(got.Totals) != 2 {
		t.Fatalf("Revenue totals = %+v; want EUR and USD", got.Totals)
	}
	eur := got.Totals[0]
	if eur.Currency != "EUR" || eur.Invoices != 4 || !eur.Net.Equal(taxNum("132.07")) || !eur.PlatformFee.Equal(taxNum("16.51")) ||
		!eur.Gross.Equal(taxNum("170.05")) || eur.UncollectibleInvoices != 1 {
		t.Errorf("EUR total = %+v; want 4 invoices, gross 170.05, net 132.07, fee 16.51, 1 uncollectible", eur)
	}
	if !got.PlatformFeePercent.Equal(taxNum("12.5")) {
		t.Errorf("PlatformFeePercent = %s; want 12.5", got.PlatformFeePercent)
	}
}

func TestRevenueRefused(t *testing.T) {
	t.Parallel()
	f := taxSetup(t)
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	stranger := identity.Actor{Subject: "x", Role: identity.RoleProvider, OrgID: uuid.New()}
	if _, err := f.svc.Revenue(t.Context(), stranger, f.issuer, from, from.AddDate(0, 1, 0)); !errors.Is(err, ErrOrganizationNotFound) {
		t.Errorf("Revenue(stranger) = %v; want ErrOrganizationNotFound", err)
	}
	consumer := identity.Actor{Subject: "c", Role: identity.RoleConsumer, OrgID: f.issuer}
	if _, err := f.svc.Revenue(t.Context(), consumer, f.issuer, from, from.AddDate(0, 1, 0)); !errors.Is(err, identity.ErrForbidden) {
		t.Errorf("Revenue(consumer) = %v; want ErrForbidden", err)
	}
	for _, to := range []time.Time{from, from.Add(-time.Second), from.AddDate(6, 0, 0)} {
		var v *validation.Error
		if _, err := f.svc.Revenue(t.Context(), f.provider, f.issuer, from, to); !errors.As(err, &v) {
			t.Errorf("Revenue(%s, %s) = %v; want a validation error", from, to, err)
		}
	}
	if _, err := f.svc.Revenue(t.Context(), f.admin, uuid.New(), from, from.AddDate(0, 1, 0)); !errors.Is(err, ErrOrganizationNotFound) {
		t.Errorf("Revenue(admin, unknown org) = %v; want ErrOrganizationNotFound", err)
	}
	got, err := f.svc.Revenue(t.Context(), f.admin, f.issuer, from, from.AddDate(1, 0, 0))
	if err != nil || len(got.Lines) != 0 || len(got.Totals) != 0 || !got.PlatformFeePercent.IsZero() {
		t.Errorf("Revenue(no invoices) = %+v, %v; want empty, fee 0", got, err)
	}
}
