package billing

import (
	"fmt"
	"io"
	"strings"

	"github.com/go-pdf/fpdf"
)

// PDF layout, in millimetres on A4 portrait.
const (
	pdfMargin = 15.0
	pdfLineH  = 5.0
	// Column widths of the lines' table: description, quantity, unit
	// price, amount (180 mm, the page less its margins).
	pdfColDesc, pdfColQty, pdfColUnit, pdfColAmount = 90.0, 28.0, 30.0, 32.0
)

// RenderPDF writes the document as a PDF whose text can be extracted (the
// core Helvetica font, no images of text). The core fonts cover Windows-1252:
// a character outside it (a name in another script) prints as a dot; the
// HTML rendering shows it as typed.
func RenderPDF(w io.Writer, d Document) error {
	p := fpdf.New("P", "mm", "A4", "")
	p.SetMargins(pdfMargin, pdfMargin, pdfMargin)
	p.SetAutoPageBreak(true, pdfMargin)
	p.SetTitle(d.Title+" "+d.Number(), true)
	p.SetCreator("Veil", true)
	// The translator keeps a buffer of its own: one per document.
	tr := p.UnicodeTranslatorFromDescriptor("")
	text := func(s string) string { return tr(printable(s)) }
	p.AliasNbPages("")
	p.SetFooterFunc(func() {
		p.SetY(-pdfMargin + 3)
		p.SetFont("Helvetica", "", 8)
		p.CellFormat(0, 4, text(fmt.Sprintf("%s %s, page %d of {nb}", d.Title, d.Number(), p.PageNo())), "", 0, "C", false, 0, "")
	})
	p.AddPage()
	pdfHeader(p, d, text)
	pdfParties(p, d, text)
	pdfLines(p, d, text)
	pdfTotals(p, d, text)
	if d.Tax.Mention != "" {
		p.Ln(pdfLineH)
		p.SetFont("Helvetica", "I", 9)
		p.MultiCell(0, pdfLineH, text(d.Tax.Mention), "", "L", false)
	}
	if err := p.Output(w); err != nil {
		return fmt.Errorf("render invoice pdf: %w", err)
	}
	return nil
}

// printable replaces control characters, which a PDF string would carry
// as they are, with spaces.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func pdfHeader(p *fpdf.Fpdf, d Document, text func(string) string) {
	p.SetFont("Helvetica", "B", 18)
	p.CellFormat(0, 10, text(d.Title+" "+d.Number()), "", 1, "L", false, 0, "")
	p.SetFont("Helvetica", "", 10)
	inv := d.Invoice
	if inv.FinalizedAt != nil {
		p.CellFormat(0, pdfLineH, "Issued "+d.Date(*inv.FinalizedAt), "", 1, "L", false, 0, "")
	}
	if inv.DueAt != nil {
		p.CellFormat(0, pdfLineH, "Due "+d.Date(*inv.DueAt), "", 1, "L", false, 0, "")
	}
	p.CellFormat(0, pdfLineH, "Period "+d.Date(inv.PeriodStart)+" to "+d.Date(inv.PeriodEnd), "", 1, "L", false, 0, "")
	// A copy printed after a change of status says so: a void invoice
	// must not read as one to pay.
	if status := d.Status(); status != "" {
		p.SetFont("Helvetica", "B", 10)
		p.CellFormat(0, pdfLineH, "Status "+status, "", 1, "L", false, 0, "")
	}
	p.Ln(pdfLineH)
}

// pdfParties prints the issuer's and the customer's blocks side by side.
func pdfParties(p *fpdf.Fpdf, d Document, text func(string) string) {
	top := p.GetY()
	bottom := top
	for i, b := range []PartyBlock{d.FromBlock(), d.BillToBlock()} {
		x := pdfMargin + float64(i)*95
		p.SetXY(x, top)
		p.SetFont("Helvetica", "B", 10)
		p.CellFormat(85, pdfLineH, text(b.Role), "", 2, "L", false, 0, "")
		p.MultiCell(85, pdfLineH, text(b.Party.Name), "", "L", false)
		p.SetFont("Helvetica", "", 10)
		rows := append([]string{}, b.Party.Lines...)
		if b.Party.TaxID != "" {
			rows = append(rows, "Tax ID "+b.Party.TaxID)
		}
		if b.Party.Email != "" {
			rows = append(rows, b.Party.Email)
		}
		for _, r := range rows {
			p.SetX(x)
			p.MultiCell(85, pdfLineH, text(r), "", "L", false)
		}
		bottom = max(bottom, p.GetY())
	}
	p.SetXY(pdfMargin, bottom+pdfLineH)
}

// pdfLines prints the lines' table; a long description wraps within its
// column and the row grows with it.
func pdfLines(p *fpdf.Fpdf, d Document, text func(string) string) {
	head := func() {
		p.SetFont("Helvetica", "B", 10)
		p.CellFormat(pdfColDesc, 7, "Description", "B", 0, "L", false, 0, "")
		p.CellFormat(pdfColQty, 7, "Quantity", "B", 0, "R", false, 0, "")
		p.CellFormat(pdfColUnit, 7, "Unit price", "B", 0, "R", false, 0, "")
		p.CellFormat(pdfColAmount, 7, "Amount", "B", 1, "R", false, 0, "")
		p.SetFont("Helvetica", "", 10)
	}
	head()
	_, pageH := p.GetPageSize()
	for _, l := range d.Invoice.Lines {
		desc := p.SplitText(text(l.Description), pdfColDesc-2)
		h := pdfLineH * float64(max(len(desc), 1))
		if p.GetY()+h > pageH-pdfMargin-5 {
			p.AddPage()
			head()
		}
		y := p.GetY()
		for i, s := range desc {
			p.SetXY(pdfMargin, y+float64(i)*pdfLineH)
			p.CellFormat(pdfColDesc, pdfLineH, s, "", 0, "L", false, 0, "")
		}
		p.SetXY(pdfMargin+pdfColDesc, y)
		p.CellFormat(pdfColQty, pdfLineH, d.LineQuantity(l), "", 0, "R", false, 0, "")
		p.CellFormat(pdfColUnit, pdfLineH, d.LineUnitPrice(l), "", 0, "R", false, 0, "")
		p.CellFormat(pdfColAmount, pdfLineH, d.Money(l.Amount), "", 0, "R", false, 0, "")
		p.SetXY(pdfMargin, y+h)
	}
	p.Ln(2)
}

// pdfTotals prints the totals under the amounts' column.
func pdfTotals(p *fpdf.Fpdf, d Document, text func(string) string) {
	inv := d.Invoice
	type row struct {
		label, amount string
		bold          bool
	}
	rows := []row{{"Subtotal", d.Money(inv.Subtotal), false}}
	if !inv.Discount.IsZero() {
		rows = append(rows, row{"Discount", "-" + d.Money(inv.Discount), false})
	}
	if label := d.TaxLabel(); label != "" {
		rows = append(rows, row{"Tax " + label, d.Money(inv.Tax), false})
	}
	rows = append(rows, row{"Total", d.Money(inv.Total), false})
	if !inv.CreditApplied.IsZero() {
		rows = append(rows, row{"Credit applied", "-" + d.Money(inv.CreditApplied), false})
	}
	rows = append(rows, row{"Amount due", d.Money(inv.AmountDue), true})
	for _, r := range rows {
		style := ""
		if r.bold {
			style = "B"
		}
		p.SetFont("Helvetica", style, 10)
		p.SetX(pdfMargin + pdfColDesc)
		p.CellFormat(pdfColQty+pdfColUnit, pdfLineH+1, text(r.label), "", 0, "L", false, 0, "")
		p.CellFormat(pdfColAmount, pdfLineH+1, r.amount, "", 1, "R", false, 0, "")
	}
}
