package httpapi

import (
	"bytes"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/payments"
	"github.com/veil-platform/veil/internal/validation"
)

// payoutRoutes: an issuer's payouts statement of a month, in JSON or
// CSV. Who may read it is the payments service's rule.
func (a *api) payoutRoutes(r chi.Router) {
	r.Get("/v1/payouts", a.paymentsHandle(a.payouts))
}

// payoutJSON is a statement with its amounts as invoices print them.
type payoutJSON struct {
	IssuerID           uuid.UUID           `json:"issuer_id"`
	Month              string              `json:"month"`
	From               time.Time           `json:"from"`
	To                 time.Time           `json:"to"`
	PlatformFeePercent string              `json:"platform_fee_percent"`
	Payments           []payoutPaymentJSON `json:"payments"`
	Refunds            []payoutRefundJSON  `json:"refunds"`
	DisputesLost       []payoutDisputeJSON `json:"disputes_lost"`
	CreditRefunds      []payoutRefundJSON  `json:"credit_refunds"`
	PaidToIssuer       []payoutPaymentJSON `json:"paid_to_issuer"`
	Totals             []payoutTotalJSON   `json:"totals"`
}

type payoutPaymentJSON struct {
	PaymentID     uuid.UUID `json:"payment_id"`
	InvoiceID     uuid.UUID `json:"invoice_id"`
	InvoiceNumber string    `json:"invoice_number"`
	Provider      string    `json:"provider"`
	SucceededAt   time.Time `json:"succeeded_at"`
	Currency      string    `json:"currency"`
	Amount        string    `json:"amount"`
	InvoiceTotal  string    `json:"invoice_total"`
	InvoiceTax    string    `json:"invoice_tax"`
	PlatformFee   string    `json:"platform_fee"`
}

type payoutRefundJSON struct {
	RefundID         uuid.UUID `json:"refund_id"`
	PaymentID        uuid.UUID `json:"payment_id"`
	InvoiceID        uuid.UUID `json:"invoice_id"`
	InvoiceNumber    string    `json:"invoice_number"`
	Provider         string    `json:"provider"`
	ProviderRefundID string    `json:"provider_refund_id"`
	External         bool      `json:"external"`
	RefundedAt       time.Time `json:"refunded_at"`
	Currency         string    `json:"currency"`
	Amount           string    `json:"amount"`
}

type payoutDisputeJSON struct {
	DisputeID         uuid.UUID `json:"dispute_id"`
	ProviderDisputeID string    `json:"provider_dispute_id"`
	PaymentID         uuid.UUID `json:"payment_id"`
	InvoiceID         uuid.UUID `json:"invoice_id"`
	InvoiceNumber     string    `json:"invoice_number"`
	Provider          string    `json:"provider"`
	Reason            string    `json:"reason"`
	LostAt            time.Time `json:"lost_at"`
	Currency          string    `json:"currency"`
	Amount            string    `json:"amount"`
}

type payoutTotalJSON struct {
	Currency     string `json:"currency"`
	Payments     int    `json:"payments"`
	Refunds      int    `json:"refunds"`
	Disputes     int    `json:"disputes"`
	CreditRefund int    `json:"credit_refunds"`
	Collected    string `json:"collected"`
	Refunded     string `json:"refunded"`
	DisputesLost string `json:"disputes_lost"`
	PlatformFee  string `json:"platform_fee"`
	Owed         string `json:"owed"`
	ToCredit     string `json:"refunded_to_credit"`
	ToIssuerN    int    `json:"paid_to_issuer_payments"`
	ToIssuer     string `json:"paid_to_issuer"`
}

func toPayoutPaymentJSON(x payments.PayoutPayment) payoutPaymentJSON {
	return payoutPaymentJSON{PaymentID: x.PaymentID, InvoiceID: x.InvoiceID, InvoiceNumber: x.InvoiceNumber,
		Provider: x.Provider, SucceededAt: x.SucceededAt, Currency: x.Currency, Amount: money(x.Currency, x.Amount),
		InvoiceTotal: money(x.Currency, x.InvoiceTotal), InvoiceTax: money(x.Currency, x.InvoiceTax),
		PlatformFee: money(x.Currency, x.PlatformFee)}
}

func toPayoutJSON(p payments.Payout) payoutJSON {
	out := payoutJSON{IssuerID: p.IssuerID, Month: p.Month, From: p.From, To: p.To, PlatformFeePercent: p.PlatformFeePercent.StringFixed(2),
		Payments: make([]payoutPaymentJSON, len(p.Payments)), Refunds: make([]payoutRefundJSON, len(p.Refunds)),
		DisputesLost: make([]payoutDisputeJSON, len(p.DisputesLost)), CreditRefunds: make([]payoutRefundJSON, len(p.CreditRefunds)),
		PaidToIssuer: make([]payoutPaymentJSON, len(p.PaidToIssuer)), Totals: make([]payoutTotalJSON, len(p.Totals))}
	for i, x := range p.Payments {
		out.Payments[i] = toPayoutPaymentJSON(x)
	}
	for i, x := range p.PaidToIssuer {
		out.PaidToIssuer[i] = toPayoutPaymentJSON(x)
	}
	for i, x := range p.Refunds {
		out.Refunds[i] = toPayoutRefundJSON(x)
	}
	for i, x := range p.CreditRefunds {
		out.CreditRefunds[i] = toPayoutRefundJSON(x)
	}
	for i, x := range p.DisputesLost {
		out.DisputesLost[i] = payoutDisputeJSON{DisputeID: x.DisputeID, ProviderDisputeID: x.ProviderDisputeID, PaymentID: x.PaymentID,
			InvoiceID: x.InvoiceID, InvoiceNumber: x.InvoiceNumber, Provider: x.Provider, Reason: x.Reason, LostAt: x.LostAt,
			Currency: x.Currency, Amount: money(x.Currency, x.Amount)}
	}
	for i, t := range p.Totals {
		out.Totals[i] = payoutTotalJSON{Currency: t.Currency, Payments: t.Payments, Refunds: t.Refunds, Disputes: t.Disputes,
			CreditRefund: t.CreditRefunds, ToCredit: money(t.Currency, t.RefundedToCredit),
			Collected: money(t.Currency, t.Collected), Refunded: money(t.Currency, t.Refunded),
			DisputesLost: money(t.Currency, t.DisputesLost), PlatformFee: money(t.Currency, t.PlatformFee), Owed: money(t.Currency, t.Owed),
			ToIssuerN: t.PaidToIssuerPayments, ToIssuer: money(t.Currency, t.PaidToIssuer)}
	}
	return out
}

func toPayoutRefundJSON(x payments.PayoutRefund) payoutRefundJSON {
	return payoutRefundJSON{RefundID: x.RefundID, PaymentID: x.PaymentID, InvoiceID: x.InvoiceID, InvoiceNumber: x.InvoiceNumber,
		Provider: x.Provider, ProviderRefundID: x.ProviderRefundID, External: x.External, RefundedAt: x.RefundedAt,
		Currency: x.Currency, Amount: money(x.Currency, x.Amount)}
}

// payouts answers the statement of ?month= for the caller's organization
// (issuer_id for admins), as CSV when ?format=csv or, without format, when
// Accept prefers text/csv to JSON.
func (a *api) payouts(w http.ResponseWriter, r *http.Request) error {
	var v validation.Error
	q := r.URL.Query()
	issuer := queryUUID(r, "issuer_id", &v)
	month := q.Get("month")
	if _, err := payments.ParseMonth(month); err != nil {
		v.Add("month", "is required: a month (UTC) such as 2026-11, years 2000 to 2199")
	}
	asCSV := false
	switch q.Get("format") {
	case "":
		asCSV = prefersCSV(r.Header.Values("Accept"))
	case "csv":
		asCSV = true
	case "json":
	default:
		v.Add("format", "must be json or csv")
	}
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
	p, err := a.cfg.Payments.Payouts(r.Context(), act, issuer, month)
	if err != nil {
		return err
	}
	if !asCSV {
		writeJSON(w, http.StatusOK, toPayoutJSON(p))
		return nil
	}
	// Written whole before the status, so that a failure is still a
	// problem answer rather than a cut file.
	var buf bytes.Buffer
	if err := p.WriteCSV(&buf); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8; header=present")
	w.Header().Set("Content-Disposition", `attachment; filename="payouts-`+p.Month+`.csv"`)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
	return nil
}

// prefersCSV reports whether an Accept header asks for text/csv before
// (or instead of) JSON: the first of the two it names with a q above 0.
func prefersCSV(accept []string) bool {
	for _, field := range accept {
		for _, part := range strings.Split(field, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			if q, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(q, 64); err != nil || f <= 0 {
					continue
				}
			}
			switch mt {
			case "text/csv":
				return true
			case "application/json", "application/*":
				return false
			}
		}
	}
	return false
}
