package billing

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/ledongthuc/pdf"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/metering"
)

// sampleDocument is a finalized invoice with every kind of total: a
// discount, exclusive tax, credit applied, and a description long enough
// to wrap in the PDF's table.
func sampleDocument(t testing.TB) Document {
	t.Helper()
	num := "ACME-2026-000042"
	fin := time.Date(2026, 11, 1, 1, 0, 0, 0, time.UTC)
	due := fin.AddDate(0, 0, 14)
	dec := decimal.RequireFromString
	inv := Invoice{
		ID: uuid.New(), Number: &num, Status: StatusOpen, Currency: "EUR",
		PeriodStart: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), PeriodEnd: fin.Add(-time.Hour),
		Subtotal: dec("131.4"), Discount: dec("13.14"), Tax: dec("22.47"), Total: dec("140.73"),
		CreditApplied: dec("10"), AmountDue: dec("130.73"), FinalizedAt: &fin, DueAt: &due,
		Lines: []Line{
			{Kind: "base_fee", Description: "Base fee, Pro (monthly)", Quantity: dec("1"), UnitPrice: dec("49"), Amount: dec("49")},
			{Kind: "proration_credit", Description: "Unused time on Pro from 2026-10-16", Amount: dec("-24.5")},
			{Kind: "usage", Description: "Requests, tier 2 (10,001 to 100,000) " + strings.Repeat("and more words ", 8),
				Quantity: dec("53450"), UnitPrice: dec("0.0019"), Amount: dec("101.56")},
			{Kind: "adjustment", Description: "Correction: double-counted retries", Amount: dec("5.34")},
			{Kind: "discount", Description: "LAUNCH10: 10% off", Amount: dec("-13.14")},
			{Kind: "tax", Description: "VAT 19%", Amount: dec("22.47")},
			{Kind: "credit", Description: "Credit applied", Amount: dec("-10")},
		},
	}
	cur, err := metering.CurrencyOf("EUR")
	if err != nil {
		t.Fatal(err)
	}
	return Document{
		Invoice: inv, Title: "Invoice", currency: cur,
		Tax:      CitedTax{Name: "VAT", RatePercent: dec("19")},
		Issuer:   Party{Name: "Acme Data GmbH", Lines: []string{"Hauptstr. 1", "10115 Berlin", "DE"}, TaxID: "DE123456789"},
		Customer: Party{Name: "Globex <script>alert(1)</script> & Co", Lines: []string{"1 Main St"}, Email: "ap@globex.example"},
	}
}

// pdfText extracts the text of a PDF, as a reader of the file would.
func pdfText(t *testing.T, b []byte) string {
	t.Helper()
	r, err := pdf.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("read pdf: %v", err)
	}
	plain, err := r.GetPlainText()
	if err != nil {
		t.Fatalf("extract pdf text: %v", err)
	}
	out, err := io.ReadAll(plain)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestRenderPDFText(t *testing.T) {
	t.Parallel()
	d := sampleDocument(t)
	var buf bytes.Buffer
	if err := RenderPDF(&buf, d); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("%PDF-")) {
		t.Fatalf("RenderPDF wrote %q…; want a PDF", buf.Bytes()[:min(16, buf.Len())])
	}
	text := pdfText(t, buf.Bytes())
	want := []string{
		"Invoice ACME-2026-000042", "Issued 2026-11-01", "Due 2026-11-15", "Period 2026-10-01 to 2026-11-01",
		"Acme Data GmbH", "Tax ID DE123456789", "ap@globex.example", "Globex <script>alert(1)</script> & Co",
		"Base fee, Pro (monthly)", "Correction: double-counted retries",
		"Subtotal", "131.40 EUR", "-13.14 EUR", "Tax VAT 19%", "22.47 EUR", "140.73 EUR", "-10.00 EUR", "Amount due", "130.73 EUR",
	}
	for _, l := range d.Invoice.Lines {
		want = append(want, d.Money(l.Amount))
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("PDF text lacks %q; text:\n%s", w, text)
		}
	}
}

func TestRenderPDFReverseChargeMention(t *testing.T) {
	t.Parallel()
	d := sampleDocument(t)
	d.Tax = CitedTax{Name: "VAT", RatePercent: decimal.Zero, ReverseCharge: true, Mention: ReverseChargeMention}
	var buf bytes.Buffer
	if err := RenderPDF(&buf, d); err != nil {
		t.Fatal(err)
	}
	// The mention wraps over lines: compare without the breaks.
	text := strings.Join(strings.Fields(pdfText(t, buf.Bytes())), " ")
	if !strings.Contains(strings.ReplaceAll(text, " ", ""), strings.ReplaceAll(ReverseChargeMention, " ", "")) {
		t.Errorf("PDF text lacks the reverse charge mention; text:\n%s", text)
	}
}

func TestRenderHTMLEscapes(t *testing.T) {
	t.Parallel()
	d := sampleDocument(t)
	var buf bytes.Buffer
	if err := RenderHTML(&buf, d); err != nil {
		t.Fatal(err)
	}
	html := buf.String()
	if strings.Contains(html, "<script>") {
		t.Errorf("RenderHTML kept a customer's <script> unescaped")
	}
	for _, w := range []string{"Globex &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co", "ACME-2026-000042", "130.73 EUR", "101.56 EUR", "-24.50 EUR", "Tax VAT 19%"} {
		if !strings.Contains(html, w) {
			t.Errorf("RenderHTML lacks %q", w)
		}
	}
}

// BenchmarkRenderPDF renders the sample invoice: what each finalized
// invoice's email costs before it is sent.
func BenchmarkRenderPDF(b *testing.B) {
	d := sampleDocument(b)
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := RenderPDF(&buf, d); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "bytes/pdf")
}

// Names in Windows-1252 print as typed; characters outside it as dots,
// never as mojibake or a broken PDF.
func TestRenderPDFCharacters(t *testing.T) {
	t.Parallel()
	d := sampleDocument(t)
	d.Customer.Name = "Müller & Søn 東京\x07"
	var buf bytes.Buffer
	if err := RenderPDF(&buf, d); err != nil {
		t.Fatal(err)
	}
	if text := pdfText(t, buf.Bytes()); !strings.Contains(text, "Müller & Søn .. ") {
		t.Errorf("PDF text lacks %q; text:\n%s", "Müller & Søn .. ", text)
	}
}

// A void invoice's PDF says it is void; an open one's says nothing.
func TestRenderPDFStatus(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		status  string
		overdue bool
		want    string
	}{{StatusVoid, false, "Status void"}, {StatusPaid, false, "Status paid"}, {StatusOpen, true, "Status open (overdue)"}, {StatusOpen, false, ""}} {
		d := sampleDocument(t)
		d.Invoice.Status, d.Invoice.Overdue = tt.status, tt.overdue
		var buf bytes.Buffer
		if err := RenderPDF(&buf, d); err != nil {
			t.Fatal(err)
		}
		text := pdfText(t, buf.Bytes())
		if got := strings.Contains(text, "Status"); got != (tt.want != "") || !strings.Contains(text, tt.want) {
			t.Errorf("PDF of a %s invoice (overdue %t) states %q: %t; want %q", tt.status, tt.overdue, tt.want, got, tt.want)
		}
	}
}
