package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/client"
)

// invoice ends the consumer's billing period and prints the invoice veil
// dev's billing cycle makes of it, and saves its PDF. A month cannot pass
// in a demo: the demo moves the subscription's period end to now in
// Postgres, as the period roll would find it a month later (make demo
// runs veil dev with a billing grace and interval of a second, so the
// cycle closes and invoices it at once).
func (w *walk) invoice(ctx context.Context, s *consumerSide, calls int) error {
	if w.cfg.Postgres == nil {
		w.step("no Postgres connection: the invoice of the period is left out")
		return nil
	}
	if err := w.tax(ctx, s); err != nil {
		return err
	}
	w.step("the month ends: the demo sets the subscription's current_period_end to now; veil dev's billing cycle records the period, snapshots its usage from ClickHouse after the grace, builds the invoice and finalizes it")
	if err := w.billable(ctx, s, calls); err != nil {
		return err
	}
	if _, err := w.cfg.Postgres.Exec(ctx, `UPDATE subscriptions SET current_period_end = now() WHERE id = $1`, s.subID); err != nil {
		return fmt.Errorf("end the demo's billing period: %w", err)
	}
	inv, err := w.finalized(ctx, s)
	if err != nil {
		return err
	}
	s.invoice = inv
	fmt.Fprintf(w.out, "  invoice %s, %s, period %s to %s, due %s\n", deref(inv.Number), inv.Status,
		inv.PeriodStart.UTC().Format(time.RFC3339), inv.PeriodEnd.UTC().Format(time.RFC3339), dateOf(inv.DueAt))
	for _, l := range inv.Lines {
		fmt.Fprintf(w.out, "    %-18s %-40s %12s × %-12s %10s %s\n", l.Kind, oneLine(l.Description, 40), l.Quantity, l.UnitPrice, l.Amount, inv.Currency)
	}
	for _, row := range [][2]string{{"subtotal", inv.Subtotal}, {"discount", inv.Discount}, {"tax", inv.Tax}, {"total", inv.Total},
		{"credit applied", inv.CreditApplied}, {"amount due", inv.AmountDue}} {
		fmt.Fprintf(w.out, "    %-18s %79s %s\n", row[0], row[1], inv.Currency)
	}
	pdf, err := w.cp.GetInvoicePDFWithResponse(ctx, inv.Id, nil, client.Bearer(s.consumer))
	if err := client.Check(pdf, err); err != nil {
		return fmt.Errorf("GET /v1/invoices/%s/pdf: %w", inv.Id, err)
	}
	dir := filepath.Join(filepath.Dir(w.cfg.PricingDir), "invoices")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save the invoice's PDF: %w", err)
	}
	path := filepath.Join(dir, deref(inv.Number)+".pdf")
	if err := os.WriteFile(path, pdf.Body, 0o644); err != nil {
		return fmt.Errorf("save the invoice's PDF: %w", err)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	fmt.Fprintf(w.out, "  the PDF (GET /v1/invoices/%s/pdf, %d bytes) is saved as %s\n", inv.Id, len(pdf.Body), path)
	return nil
}

// tax gives both organizations a billing profile in Portugal and the
// provider a tax rule there (23% VAT, on top of the prices), once: the
// invoice then charges it.
func (w *walk) tax(ctx context.Context, s *consumerSide) error {
	api, err := w.cp.GetAPIWithResponse(ctx, s.api.id, nil, client.Bearer(s.provider))
	if err := client.Check(api, err); err != nil {
		return fmt.Errorf("GET /v1/apis/%s: %w", s.api.id, err)
	}
	sub, err := w.cp.GetSubscriptionWithResponse(ctx, s.subID, nil, client.Bearer(s.consumer))
	if err := client.Check(sub, err); err != nil {
		return fmt.Errorf("GET /v1/subscriptions/%s: %w", s.subID, err)
	}
	issuer, customer := api.JSON200.OrganizationId, sub.JSON200.OrganizationId
	w.step("billing profiles in Portugal (PUT /v1/organizations/{id}/billing-profile) and the provider's tax rule: POST /v1/organizations/%s/tax-rules (PT, 23%%)", issuer)
	for _, p := range []struct {
		org        uuid.UUID
		tok        string
		name, mail string
	}{{issuer, s.provider, "Demo Weather, Lda.", "billing@demo-weather.test"}, {customer, s.consumer, "Demo Hotels, S.A.", "accounts@demo-hotels.test"}} {
		put, err := w.cp.PutBillingProfileWithResponse(ctx, p.org, nil, client.BillingProfileInput{
			LegalName: p.name, Country: "PT", Email: p.mail, City: client.Ptr("Porto"),
		}, client.Bearer(p.tok))
		if err := client.Check(put, err); err != nil {
			return fmt.Errorf("PUT /v1/organizations/%s/billing-profile: %w", p.org, err)
		}
	}
	rules, err := w.cp.ListTaxRulesWithResponse(ctx, issuer, nil, client.Bearer(s.provider))
	if err := client.Check(rules, err); err != nil {
		return fmt.Errorf("GET /v1/organizations/%s/tax-rules: %w", issuer, err)
	}
	for _, r := range rules.JSON200.Data {
		if r.Country == "PT" {
			fmt.Fprintf(w.out, "  the rule of an earlier run applies: %s %s%%\n", r.Country, r.RatePercent)
			return nil
		}
	}
	created, err := w.cp.CreateTaxRuleWithResponse(ctx, issuer, nil, client.TaxRuleInput{Country: "PT", RatePercent: "23", Name: client.Ptr("IVA")},
		client.Bearer(s.provider))
	if err := client.Check(created, err); err != nil {
		return fmt.Errorf("POST /v1/organizations/%s/tax-rules: %w", issuer, err)
	}
	fmt.Fprintf(w.out, "  rule %s: %s %s%%, exclusive\n", created.JSON201.Id, created.JSON201.Country, created.JSON201.RatePercent)
	return nil
}

// billable waits until ClickHouse holds the consumer's calls, which the
// period's snapshot counts.
func (w *walk) billable(ctx context.Context, s *consumerSide, calls int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n uint64
		err := w.cfg.ClickHouse.QueryRow(ctx, `SELECT count() FROM usage_events WHERE subject = ? AND refusal = ''`, s.subID.String()).Scan(&n)
		if err == nil && n >= uint64(calls) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ClickHouse holds %d calls of the subscription after 60s (%v); want %d", n, err, calls)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// finalized waits for the finalized invoice of the subscription and
// returns it with its lines.
func (w *walk) finalized(ctx context.Context, s *consumerSide) (client.Invoice, error) {
	deadline := time.Now().Add(60 * time.Second)
	status := client.InvoiceStatusOpen
	for {
		got, err := w.cp.ListInvoicesWithResponse(ctx, &client.ListInvoicesParams{SubscriptionId: &s.subID, Status: &status}, client.Bearer(s.provider))
		if err := client.Check(got, err); err != nil {
			return client.Invoice{}, fmt.Errorf("GET /v1/invoices: %w", err)
		}
		if len(got.JSON200.Data) > 0 {
			id := got.JSON200.Data[0].Id
			inv, err := w.cp.GetInvoiceWithResponse(ctx, id, nil, client.Bearer(s.consumer))
			if err := client.Check(inv, err); err != nil {
				return client.Invoice{}, fmt.Errorf("GET /v1/invoices/%s: %w", id, err)
			}
			return *inv.JSON200, nil
		}
		if time.Now().After(deadline) {
			return client.Invoice{}, fmt.Errorf("no finalized invoice of subscription %s after 60s (does veil dev run with VEIL_BILLING_GRACE and VEIL_BILLING_INTERVAL of a second, as make demo sets them?)", s.subID)
		}
		select {
		case <-ctx.Done():
			return client.Invoice{}, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func dateOf(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format("2006-01-02")
}

// oneLine is s on one line, cut to n characters.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
