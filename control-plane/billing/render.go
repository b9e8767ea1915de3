package billing

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/metering"
)

//go:embed templates/*
var templates embed.FS

// invoiceHTML renders an invoice document. html/template escapes every
// field: the parties' names and addresses are typed by customers.
var invoiceHTML = template.Must(template.ParseFS(templates, "templates/invoice.html"))

// Document is an invoice as it is printed: the invoice with its lines,
// the issuer's and the customer's blocks, and the tax treatment it cites.
type Document struct {
	Invoice  Invoice
	Issuer   Party
	Customer Party
	// Tax is the treatment the invoice applied: its name and rate on the
	// tax line, the reverse charge's legal mention.
	Tax CitedTax
	// Title is "Invoice", or "Draft invoice" while it has no number.
	Title    string
	currency metering.Currency
}

// Party is who issues or receives an invoice: its billing profile when
// it has one (the customer's as the invoice cites it), else its
// organization's name.
type Party struct {
	Name  string
	Lines []string
	TaxID string
	Email string
}

func partyOf(p Profile) Party {
	lines := []string{}
	for _, l := range []string{p.AddressLine1, p.AddressLine2, strings.TrimSpace(p.PostalCode + " " + p.City)} {
		if l != "" {
			lines = append(lines, l)
		}
	}
	country := p.Country
	if p.Region != "" {
		country += "-" + p.Region
	}
	if country != "" {
		lines = append(lines, country)
	}
	return Party{Name: p.LegalName, Lines: lines, TaxID: p.TaxID, Email: p.Email}
}

// Document loads the invoice id as the actor may see it (Invoice) with
// its parties.
func (s *Service) Document(ctx context.Context, actor identity.Actor, id uuid.UUID) (Document, error) {
	inv, err := s.Invoice(ctx, actor, id)
	if err != nil {
		return Document{}, err
	}
	return s.document(ctx, inv)
}

// document adds an invoice's parties: the issuer's and the customer's
// billing profiles as cited (a finalized invoice keeps the names and
// addresses it was issued with, whatever either edits later), or the
// current ones for an invoice citing none.
func (s *Service) document(ctx context.Context, inv Invoice) (Document, error) {
	var c Cites
	if len(inv.Cites) > 0 {
		if err := json.Unmarshal(inv.Cites, &c); err != nil {
			return Document{}, fmt.Errorf("decode cites of invoice %s: %w", inv.ID, err)
		}
	}
	cur, err := metering.CurrencyOf(inv.Currency)
	if err != nil {
		return Document{}, fmt.Errorf("render invoice %s: %w", inv.ID, err)
	}
	d := Document{Invoice: inv, Tax: c.Tax, Title: "Invoice", currency: cur}
	if inv.Number == nil {
		d.Title = "Draft invoice"
	}
	if d.Issuer, err = s.party(ctx, inv.IssuerID, c.Issuer); err != nil {
		return Document{}, err
	}
	if d.Customer, err = s.party(ctx, inv.CustomerID, c.Customer); err != nil {
		return Document{}, err
	}
	return d, nil
}

func (s *Service) party(ctx context.Context, org uuid.UUID, cited *Profile) (Party, error) {
	if cited != nil {
		return partyOf(*cited), nil
	}
	p, ok, err := s.BillingProfile(ctx, org)
	if err != nil {
		return Party{}, err
	}
	if ok {
		return partyOf(p), nil
	}
	name, err := db.New(s.pool).OrganizationName(ctx, org)
	if errors.Is(err, pgx.ErrNoRows) {
		return Party{Name: org.String()}, nil
	}
	if err != nil {
		return Party{}, fmt.Errorf("read organization: %w", err)
	}
	return Party{Name: name, Lines: []string{}}, nil
}

// PartyBlock is a party under its heading, for the template.
type PartyBlock struct {
	Role  string
	Party Party
}

// FromBlock is the issuer's block.
func (d Document) FromBlock() PartyBlock { return PartyBlock{Role: "From", Party: d.Issuer} }

// BillToBlock is the customer's block.
func (d Document) BillToBlock() PartyBlock { return PartyBlock{Role: "Bill to", Party: d.Customer} }

// Money prints an amount with the currency's decimals (metering's
// Currency.Format), the one way the documents print money.
func (d Document) Money(a decimal.Decimal) string {
	return d.currency.Format(a) + " " + d.currency.Code
}

// Date prints a time as the invoice's date (UTC).
func (d Document) Date(t time.Time) string { return t.UTC().Format("2006-01-02") }

// DateOf prints an optional date, "" when unset.
func (d Document) DateOf(t *time.Time) string {
	if t == nil {
		return ""
	}
	return d.Date(*t)
}

// Number is the invoice's number, or "DRAFT".
func (d Document) Number() string {
	if d.Invoice.Number == nil {
		return "DRAFT"
	}
	return *d.Invoice.Number
}

// Status is the invoice's status as its document states it: empty for an
// open invoice not yet due (the usual copy), else draft, paid, void,
// uncollectible, or "open (overdue)".
func (d Document) Status() string {
	switch {
	case d.Invoice.Status == StatusOpen && d.Invoice.Overdue:
		return "open (overdue)"
	case d.Invoice.Status == StatusOpen:
		return ""
	}
	return d.Invoice.Status
}

// TaxLabel names the tax and its rate, "" when the invoice has no tax.
func (d Document) TaxLabel() string {
	if d.Tax.Name == "" && d.Tax.RatePercent.IsZero() {
		return ""
	}
	label := strings.TrimSpace(d.Tax.Name + " " + d.Tax.RatePercent.String() + "%")
	if d.Tax.Inclusive {
		label += " (included)"
	}
	return label
}

// LineQuantity prints a line's quantity, "" for lines without one.
func (d Document) LineQuantity(l Line) string {
	if l.Quantity.IsZero() && l.UnitPrice.IsZero() {
		return ""
	}
	return l.Quantity.String()
}

// LineUnitPrice prints a line's unit price (its full precision: prices
// per unit are often below the minor unit), "" for lines without one.
func (d Document) LineUnitPrice(l Line) string {
	if l.UnitPrice.IsZero() {
		return ""
	}
	return l.UnitPrice.String()
}

// RenderHTML writes the document as an HTML page.
func RenderHTML(w io.Writer, d Document) error {
	var buf bytes.Buffer
	if err := invoiceHTML.Execute(&buf, d); err != nil {
		return fmt.Errorf("render invoice html: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}
