package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/control-plane/payments"
	"github.com/veil-platform/veil/internal/pagination"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// billingRoutes: invoices (list, get, documents, state changes), the
// preview of a subscription's current period, corrections, credits,
// billing profiles, issuer settings, tax rules and the revenue statement.
// Who may call what is the billing service's rule; these routes decode
// and answer.
func (a *api) billingRoutes(r chi.Router) {
	b := a.cfg.Billing
	r.Get("/v1/invoices", a.billingHandle(a.listInvoices))
	r.Get(idPath("/v1/invoices/{id}"), a.billingHandle(read(a.withRefunded(invoiceOut(b.Invoice)))))
	r.Get(idPath("/v1/invoices/{id}/pdf"), a.billingHandle(a.invoicePDF))
	r.Get(idPath("/v1/invoices/{id}/html"), a.billingHandle(a.invoiceHTML))
	r.Post(idPath("/v1/invoices/{id}/finalize"), a.billingHandle(answer(http.StatusOK, writeJSON, invoiceOut(b.Finalize))))
	r.Post(idPath("/v1/invoices/{id}/void"), a.billingHandle(answer(http.StatusOK, writeJSON, invoiceOut(b.Void))))
	r.Post(idPath("/v1/invoices/{id}/mark-uncollectible"), a.billingHandle(answer(http.StatusOK, writeJSON, invoiceOut(b.MarkUncollectible))))
	r.Get(idPath("/v1/subscriptions/{id}/preview"), a.billingHandle(read(a.previewOut)))
	r.Get(idPath("/v1/subscriptions/{id}/adjustments"), a.billingHandle(read(listOf(adjustmentsOut(b.Adjustments)))))
	r.Post(idPath("/v1/subscriptions/{id}/adjustments"), a.billingHandle(write(http.StatusCreated, adjustmentOut(b.CreateAdjustment))))
	r.Get("/v1/credits", a.billingHandle(a.listCredits))
	r.Post("/v1/credits", a.billingHandle(a.grantCredit))
	r.Get("/v1/credits/ledger", a.billingHandle(a.creditLedger))
	r.Get(idPath("/v1/organizations/{id}/billing-profile"), a.billingHandle(read(b.GetProfile)))
	r.Put(idPath("/v1/organizations/{id}/billing-profile"), a.billingHandle(write(http.StatusOK, b.PutProfile)))
	r.Get(idPath("/v1/organizations/{id}/billing-settings"), a.billingHandle(read(b.GetSettings)))
	r.Put(idPath("/v1/organizations/{id}/billing-settings"), a.billingHandle(write(http.StatusOK, b.PutSettings)))
	r.Get(idPath("/v1/organizations/{id}/tax-rules"), a.billingHandle(read(listOf(b.ListTaxRules))))
	r.Post(idPath("/v1/organizations/{id}/tax-rules"), a.billingHandle(write(http.StatusCreated, b.CreateTaxRule)))
	r.Delete(idPath("/v1/organizations/{id}/tax-rules/{rule:"+uuidParam+"}"), a.billingHandle(a.deleteTaxRule))
	r.Get("/v1/revenue", a.billingHandle(a.revenue))
}

// adminBillingRoutes are under /v1/admin: an invoice marked paid by hand
// (until payments mark it), and an issuer's settings with the platform
// fee.
func (a *api) adminBillingRoutes(r chi.Router) {
	b := a.cfg.Billing
	r.Post(idPath("/invoices/{id}/mark-paid"), a.billingHandle(answer(http.StatusOK, writeJSON, invoiceOut(b.MarkPaid))))
	r.Put(idPath("/organizations/{id}/billing-settings"), a.billingHandle(write(http.StatusOK, b.PutSettings)))
}

// invoiceJSON is an invoice as the API answers it: every amount a decimal
// string with exactly the currency's decimals (12.50 EUR, 1500 JPY), so
// clients print what the document prints. Quantities and unit prices
// keep their full precision.
type invoiceJSON struct {
	billing.Invoice
	Subtotal      string `json:"subtotal"`
	Discount      string `json:"discount"`
	Tax           string `json:"tax"`
	CreditApplied string `json:"credit_applied"`
	Total         string `json:"total"`
	AmountDue     string `json:"amount_due"`
	// AmountRefunded: of the invoice's payment, in GET /v1/invoices/{id}.
	AmountRefunded *string    `json:"amount_refunded,omitempty"`
	Lines          []lineJSON `json:"lines"`
}

type lineJSON struct {
	billing.Line
	Amount string `json:"amount"`
}

// toInvoiceJSON formats inv's amounts. A currency Veil no longer prices
// in keeps the stored digits.
func toInvoiceJSON(inv billing.Invoice) invoiceJSON {
	format := decimal.Decimal.String
	if cur, err := metering.CurrencyOf(inv.Currency); err == nil {
		format = cur.Format
	}
	out := invoiceJSON{Invoice: inv, Lines: make([]lineJSON, len(inv.Lines))}
	out.Subtotal, out.Discount, out.Tax = format(inv.Subtotal), format(inv.Discount), format(inv.Tax)
	out.CreditApplied, out.Total, out.AmountDue = format(inv.CreditApplied), format(inv.Total), format(inv.AmountDue)
	for i, l := range inv.Lines {
		out.Lines[i] = lineJSON{Line: l, Amount: format(l.Amount)}
	}
	return out
}

// money formats an amount of currency as the invoices print it; an
// unknown currency keeps the stored digits.
func money(currency string, d decimal.Decimal) string {
	if cur, err := metering.CurrencyOf(currency); err == nil {
		return cur.Format(d)
	}
	return d.String()
}

// creditBalanceJSON, creditEntryJSON and the revenue's answer print their
// amounts as invoices do.
type creditBalanceJSON struct {
	billing.CreditBalance
	Balance string `json:"balance"`
}

type creditEntryJSON struct {
	billing.CreditEntry
	Amount       string `json:"amount"`
	BalanceAfter string `json:"balance_after"`
}

func toCreditEntryJSON(e billing.CreditEntry) creditEntryJSON {
	return creditEntryJSON{CreditEntry: e, Amount: money(e.Currency, e.Amount), BalanceAfter: money(e.Currency, e.BalanceAfter)}
}

type revenueFiguresJSON struct {
	Gross            string `json:"gross"`
	Discounts        string `json:"discounts"`
	Tax              string `json:"tax"`
	Net              string `json:"net"`
	PlatformFee      string `json:"platform_fee"`
	UncollectibleNet string `json:"uncollectible_net"`
}

func toRevenueFigures(f billing.RevenueFigures) revenueFiguresJSON {
	return revenueFiguresJSON{
		Gross: money(f.Currency, f.Gross), Discounts: money(f.Currency, f.Discounts), Tax: money(f.Currency, f.Tax),
		Net: money(f.Currency, f.Net), PlatformFee: money(f.Currency, f.PlatformFee), UncollectibleNet: money(f.Currency, f.UncollectibleNet),
	}
}

type revenueLineJSON struct {
	billing.RevenueLine
	revenueFiguresJSON
}

type revenueTotalJSON struct {
	billing.RevenueTotal
	revenueFiguresJSON
}

type revenueJSON struct {
	billing.Revenue
	Lines  []revenueLineJSON  `json:"lines"`
	Totals []revenueTotalJSON `json:"totals"`
}

func toRevenueJSON(r billing.Revenue) revenueJSON {
	out := revenueJSON{Revenue: r, Lines: make([]revenueLineJSON, len(r.Lines)), Totals: make([]revenueTotalJSON, len(r.Totals))}
	for i, l := range r.Lines {
		out.Lines[i] = revenueLineJSON{RevenueLine: l, revenueFiguresJSON: toRevenueFigures(l.RevenueFigures)}
	}
	for i, t := range r.Totals {
		out.Totals[i] = revenueTotalJSON{RevenueTotal: t, revenueFiguresJSON: toRevenueFigures(t.RevenueFigures)}
	}
	return out
}

// adjustmentJSON prints an amount adjustment's amount in its currency's
// decimals; a quantity keeps its precision.
type adjustmentJSON struct {
	billing.Adjustment
	Amount *string `json:"amount"`
}

func toAdjustmentJSON(adj billing.Adjustment) adjustmentJSON {
	out := adjustmentJSON{Adjustment: adj}
	if adj.Amount != nil {
		m := adj.Amount.String()
		if adj.Currency != nil {
			m = money(*adj.Currency, *adj.Amount)
		}
		out.Amount = &m
	}
	return out
}

func adjustmentOut(do change[billing.AdjustmentInput, billing.Adjustment]) change[billing.AdjustmentInput, adjustmentJSON] {
	return func(ctx context.Context, act identity.Actor, id uuid.UUID, in billing.AdjustmentInput) (adjustmentJSON, error) {
		adj, err := do(ctx, act, id, in)
		return toAdjustmentJSON(adj), err
	}
}

func adjustmentsOut(do byID[[]billing.Adjustment]) byID[[]adjustmentJSON] {
	return func(ctx context.Context, act identity.Actor, id uuid.UUID) ([]adjustmentJSON, error) {
		items, err := do(ctx, act, id)
		out := make([]adjustmentJSON, len(items))
		for i, adj := range items {
			out[i] = toAdjustmentJSON(adj)
		}
		return out, err
	}
}

// invoiceOut answers an invoice call's result with formatted amounts.
func invoiceOut(do byID[billing.Invoice]) byID[invoiceJSON] {
	return func(ctx context.Context, act identity.Actor, id uuid.UUID) (invoiceJSON, error) {
		inv, err := do(ctx, act, id)
		return toInvoiceJSON(inv), err
	}
}

// withRefunded adds what of the invoice's payment was refunded, when it
// has a payment the actor may see.
func (a *api) withRefunded(do byID[invoiceJSON]) byID[invoiceJSON] {
	return func(ctx context.Context, act identity.Actor, id uuid.UUID) (invoiceJSON, error) {
		out, err := do(ctx, act, id)
		if err != nil || a.cfg.Payments == nil {
			return out, err
		}
		p, perr := a.cfg.Payments.Get(ctx, act, id)
		if errors.Is(perr, payments.ErrNotFound) {
			return out, nil
		}
		if perr != nil {
			return out, perr
		}
		refunded := money(p.Refunded.Currency, p.Refunded.Decimal())
		out.AmountRefunded = &refunded
		return out, nil
	}
}

// queryTime reads an optional RFC 3339 query parameter; nil when absent.
func queryTime(r *http.Request, name string, v *validation.Error) *time.Time {
	q := r.URL.Query()
	if !q.Has(name) {
		return nil
	}
	t, err := time.Parse(time.RFC3339, q.Get(name))
	if err != nil {
		v.Add(name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
		return nil
	}
	return &t
}

func (a *api) listInvoices(w http.ResponseWriter, r *http.Request) error {
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var v validation.Error
	f := billing.InvoiceFilter{Status: q.Get("status"), After: q.Get("cursor"), Limit: limit}
	if sub := queryUUID(r, "subscription_id", &v); sub != uuid.Nil {
		f.SubscriptionID = &sub
	}
	f.From, f.To = queryTime(r, "from", &v), queryTime(r, "to", &v)
	if err := v.Err(); err != nil {
		return err
	}
	items, next, err := a.cfg.Billing.ListInvoices(r.Context(), actorFrom(r), f)
	if err != nil {
		return err
	}
	out := make([]invoiceJSON, len(items))
	for i, inv := range items {
		out[i] = toInvoiceJSON(inv)
	}
	return writePage(w, out, next, nil)
}

// document loads the path's invoice as a document the actor may see.
func (a *api) document(r *http.Request) (billing.Document, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return billing.Document{}, err
	}
	return a.cfg.Billing.Document(r.Context(), actorFrom(r), id)
}

// documentName is the file name of an invoice's document: its number, or
// draft-<id> before it has one.
func documentName(d billing.Document, ext string) string {
	if d.Invoice.Number != nil {
		return *d.Invoice.Number + ext
	}
	return "draft-" + d.Invoice.ID.String() + ext
}

func (a *api) invoicePDF(w http.ResponseWriter, r *http.Request) error {
	d, err := a.document(r)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := billing.RenderPDF(&buf, d); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/pdf")
	w.Header().Set("Content-Disposition", `inline; filename="`+documentName(d, ".pdf")+`"`)
	w.Header().Set("Cache-Control", "private, no-cache")
	_, _ = w.Write(buf.Bytes())
	return nil
}

func (a *api) invoiceHTML(w http.ResponseWriter, r *http.Request) error {
	d, err := a.document(r)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := billing.RenderHTML(&buf, d); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The page carries customers' text: no script runs in it whatever
	// slips through, and it loads nothing.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "private, no-cache")
	_, _ = w.Write(buf.Bytes())
	return nil
}

// creditParties reads the issuer_id and customer_id query parameters
// (uuid.Nil when absent).
func creditParties(r *http.Request) (issuer, customer uuid.UUID, err error) {
	var v validation.Error
	issuer, customer = queryUUID(r, "issuer_id", &v), queryUUID(r, "customer_id", &v)
	return issuer, customer, v.Err()
}

func (a *api) listCredits(w http.ResponseWriter, r *http.Request) error {
	issuer, customer, err := creditParties(r)
	if err != nil {
		return err
	}
	items, err := a.cfg.Billing.CreditBalances(r.Context(), actorFrom(r), issuer, customer)
	out := make([]creditBalanceJSON, len(items))
	for i, b := range items {
		out[i] = creditBalanceJSON{CreditBalance: b, Balance: money(b.Currency, b.Balance)}
	}
	return writePage(w, out, "", err)
}

func (a *api) grantCredit(w http.ResponseWriter, r *http.Request) error {
	var in billing.GrantInput
	if err := decode(r, &in); err != nil {
		return err
	}
	out, err := a.cfg.Billing.GrantCredit(r.Context(), actorFrom(r), in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, toCreditEntryJSON(out))
	return nil
}

// creditLedger pages through the movements between an issuer and a
// customer; either defaults to the caller's organization (a provider's
// for the issuer, anyone else's for the customer). The cursor is the
// last entry's id.
func (a *api) creditLedger(w http.ResponseWriter, r *http.Request) error {
	issuer, customer, err := creditParties(r)
	if err != nil {
		return err
	}
	act := actorFrom(r)
	switch {
	case act.IsAdmin():
	case issuer == uuid.Nil && act.Role == identity.RoleProvider:
		issuer = act.OrgID
	case customer == uuid.Nil:
		customer = act.OrgID
	}
	if issuer == uuid.Nil || customer == uuid.Nil {
		return validation.One("customer_id", "name the issuer_id and the customer_id of the balance")
	}
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = 50
	}
	var after int64
	if c := r.URL.Query().Get("cursor"); c != "" {
		if after, err = strconv.ParseInt(c, 10, 64); err != nil || after <= 0 {
			return pagination.ErrBadCursor
		}
	}
	items, err := a.cfg.Billing.CreditLedger(r.Context(), act, issuer, customer, after, limit)
	next := ""
	if err == nil && len(items) == limit {
		next = strconv.FormatInt(items[len(items)-1].ID, 10)
	}
	out := make([]creditEntryJSON, len(items))
	for i, e := range items {
		out[i] = toCreditEntryJSON(e)
	}
	return writePage(w, out, next, err)
}

// deleteTaxRule deletes a rule (204), or ends it now when a finalized
// invoice may cite it (200 with the ended rule).
func (a *api) deleteTaxRule(w http.ResponseWriter, r *http.Request) error {
	org, err := pathID(r, "id")
	if err != nil {
		return err
	}
	id, err := pathID(r, "rule")
	if err != nil {
		return err
	}
	rule, deleted, err := a.cfg.Billing.DeleteTaxRule(r.Context(), actorFrom(r), org, id)
	if err != nil {
		return err
	}
	if deleted {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	writeJSON(w, http.StatusOK, rule)
	return nil
}

// revenue is an issuer's statement over [from, to): the caller's
// organization, or issuer_id (admins). from defaults to the start of the
// current year, to to now.
func (a *api) revenue(w http.ResponseWriter, r *http.Request) error {
	var v validation.Error
	issuer := queryUUID(r, "issuer_id", &v)
	from, to := queryTime(r, "from", &v), queryTime(r, "to", &v)
	if err := v.Err(); err != nil {
		return err
	}
	act := actorFrom(r)
	if issuer == uuid.Nil {
		if act.IsAdmin() {
			return validation.One("issuer_id", "is required for admins")
		}
		issuer = act.OrgID
	}
	now := time.Now().UTC()
	if to == nil {
		to = &now
	}
	if from == nil {
		start := time.Date(to.Year(), 1, 1, 0, 0, 0, 0, time.UTC)
		from = &start
	}
	out, err := a.cfg.Billing.Revenue(r.Context(), act, issuer, *from, *to)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toRevenueJSON(out))
	return nil
}

// billingProblem is the problem of a billing error, ok false for an
// error billing does not own.
func billingProblem(err error) (problem.Details, bool) {
	switch {
	case errors.Is(err, billing.ErrInvoiceNotFound), errors.Is(err, billing.ErrCustomerNotFound),
		errors.Is(err, billing.ErrSubscriptionNotFound), errors.Is(err, billing.ErrPeriodNotFound),
		errors.Is(err, billing.ErrOrganizationNotFound), errors.Is(err, billing.ErrProfileNotFound),
		errors.Is(err, billing.ErrTaxRuleNotFound):
		return problem.New(http.StatusNotFound, "not-found", "Not Found", err.Error()), true
	case errors.Is(err, billing.ErrInvoiceState):
		return problem.New(http.StatusConflict, "invalid-transition", "Invalid State Transition", err.Error()), true
	case errors.Is(err, billing.ErrEarlierDraft):
		return problem.New(http.StatusConflict, "earlier-draft", "Earlier Draft Pending",
			err.Error()+"; finalize the subscription's invoices in the order of their periods"), true
	case errors.Is(err, billing.ErrInsufficientCredit):
		return problem.New(http.StatusConflict, "insufficient-credit", "Insufficient Credit", err.Error()), true
	case errors.Is(err, billing.ErrBelowZero):
		return problem.New(http.StatusConflict, "below-zero", "Usage Below Zero", err.Error()), true
	case errors.Is(err, billing.ErrTaxRuleConflict):
		return problem.New(http.StatusConflict, "tax-rule-exists", "Tax Rule Exists", err.Error()), true
	case errors.Is(err, billing.ErrNoSnapshot):
		return problem.New(http.StatusConflict, "period-open", "Period Still Open", err.Error()), true
	case errors.Is(err, billing.ErrPreviewUnavailable):
		return problem.New(http.StatusServiceUnavailable, "usage-unavailable", "Usage Unavailable", err.Error()), true
	}
	return problem.Details{}, false
}

// billingHandle is handle for the billing routes: billing's errors get
// their problems here, any other error goes to fail.
func (a *api) billingHandle(fn handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := fn(w, r)
		if err == nil {
			return
		}
		d, ok := billingProblem(err)
		if !ok {
			a.fail(w, r, err)
			return
		}
		if d.Status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "30")
		}
		d.Instance = r.URL.Path
		problem.Write(w, d.With("request_id", middleware.RequestIDFrom(r.Context())))
	}
}
