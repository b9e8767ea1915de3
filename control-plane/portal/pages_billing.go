package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/control-plane/identity"
)

// billedInvoice is an invoice as the API answers it.
type billedInvoice struct {
	ID             string     `json:"id"`
	SubscriptionID string     `json:"subscription_id"`
	Status         string     `json:"status"`
	Overdue        bool       `json:"overdue"`
	Number         *string    `json:"number"`
	Currency       string     `json:"currency"`
	PeriodStart    time.Time  `json:"period_start"`
	PeriodEnd      time.Time  `json:"period_end"`
	Subtotal       string     `json:"subtotal"`
	Discount       string     `json:"discount"`
	Tax            string     `json:"tax"`
	CreditApplied  string     `json:"credit_applied"`
	Total          string     `json:"total"`
	AmountDue      string     `json:"amount_due"`
	AmountRefunded *string    `json:"amount_refunded"`
	FinalizedAt    *time.Time `json:"finalized_at"`
	DueAt          *time.Time `json:"due_at"`
	PaidAt         *time.Time `json:"paid_at"`
	Lines          []struct {
		Position    int    `json:"position"`
		Kind        string `json:"kind"`
		Description string `json:"description"`
		Quantity    string `json:"quantity"`
		UnitPrice   string `json:"unit_price"`
		Amount      string `json:"amount"`
		Reference   string `json:"reference"`
	} `json:"lines"`
}

// Name is the invoice's decimalFloat, or "Draft" before it has one.
func (i billedInvoice) Name() string {
	if i.Number != nil {
		return *i.Number
	}
	return "Draft"
}

// Payable says whether pay now applies: open with something due.
func (i billedInvoice) Payable() bool {
	return i.Status == "open" && strings.Trim(i.AmountDue, "0.") != ""
}

// invoicePayment is an invoice's payment.
type invoicePayment struct {
	Provider        string  `json:"provider"`
	Status          string  `json:"status"`
	Currency        string  `json:"currency"`
	Amount          string  `json:"amount"`
	AmountRefunded  string  `json:"amount_refunded"`
	NextAttemptAt   *string `json:"next_attempt_at"`
	AttentionReason *string `json:"attention_reason"`
	Attempts        []struct {
		AttemptNo      int        `json:"attempt_no"`
		Status         string     `json:"status"`
		FailureMessage string     `json:"failure_message"`
		DeclineCode    string     `json:"decline_code"`
		CreatedAt      time.Time  `json:"created_at"`
		FinishedAt     *time.Time `json:"finished_at"`
	} `json:"attempts"`
}

// billingProfileView is a billing profile, and the form's values.
type billingProfileView struct {
	LegalName    string    `json:"legal_name"`
	AddressLine1 string    `json:"address_line1"`
	AddressLine2 string    `json:"address_line2"`
	City         string    `json:"city"`
	PostalCode   string    `json:"postal_code"`
	Country      string    `json:"country"`
	Region       string    `json:"region"`
	TaxID        string    `json:"tax_id"`
	Email        string    `json:"email"`
	UpdatedAt    time.Time `json:"updated_at,omitzero"`
}

// setupView is what starting a payment method's setup answers.
type setupView struct {
	Provider     string `json:"provider"`
	SetupID      string `json:"setup_id"`
	Instructions string `json:"instructions"`
}

// invoiceStatuses are the statuses the invoice list filters by.
var invoiceStatuses = []string{"draft", "open", "paid", "void", "uncollectible"}

type billingPage struct {
	Invoices []billedInvoice
	Status   string
	Statuses []string
	Next     string
	// Profile is nil when the organization has none yet.
	Profile *billingProfileView
	// Setup is a payment method setup just started, SetupProblem why it
	// could not be.
	Setup        *setupView
	SetupProblem *Problem
	Idem         string
}

func (p *portal) billingPage(w http.ResponseWriter, r *http.Request) {
	p.showBilling(w, r, http.StatusOK, nil, nil)
}

// showBilling renders the invoices, the billing profile and the payment
// method's setup (with one just started, or why it could not be).
func (p *portal) showBilling(w http.ResponseWriter, r *http.Request, status int, setup *setupView, setupProblem *Problem) {
	out := billingPage{Statuses: invoiceStatuses, Setup: setup, SetupProblem: setupProblem, Idem: formKey()}
	q := url.Values{"limit": {"50"}}
	for _, s := range invoiceStatuses {
		if r.URL.Query().Get("status") == s {
			out.Status = s
			q.Set("status", s)
		}
	}
	if c := r.URL.Query().Get("cursor"); cursorPattern.MatchString(c) {
		q.Set("cursor", c)
	}
	var list page[billedInvoice]
	if err := p.api.get(r, "/v1/invoices", q, &list); err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Invoices, out.Next = list.Data, list.NextCursor
	prof, err := p.billingProfile(r)
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	out.Profile = prof
	p.render(w, r, status, "billing", view{Title: "Billing", Nav: "billing", Data: out})
}

// consumerOrg is the signed-in user's organization's id.
func (p *portal) consumerOrg(r *http.Request) (string, error) {
	var me consumerMe
	if err := p.api.get(r, "/v1/me", nil, &me); err != nil {
		return "", err
	}
	return me.OrganizationID, nil
}

// billingProfile is the organization's billing profile, nil when it has none.
func (p *portal) billingProfile(r *http.Request) (*billingProfileView, error) {
	org, err := p.consumerOrg(r)
	if err != nil {
		return nil, err
	}
	var prof billingProfileView
	if err := p.api.get(r, "/v1/organizations/"+org+"/billing-profile", nil, &prof); err != nil {
		if pr, ok := asProblem(err); ok && pr.Status == http.StatusNotFound {
			return nil, nil
		}
		return nil, err
	}
	return &prof, nil
}

type invoicePage struct {
	Invoice billedInvoice
	API     apiView
	// Payment is nil when the invoice has none (yet).
	Payment *invoicePayment
	Idem    string
}

func (p *portal) invoicePage(w http.ResponseWriter, r *http.Request) {
	p.showInvoice(w, r, http.StatusOK, nil)
}

// showInvoice renders an invoice with its lines and payment, and the
// problem of a pay now that was refused.
func (p *portal) showInvoice(w http.ResponseWriter, r *http.Request, status int, pr *Problem) {
	id := pathID(r)
	if id == "" {
		p.noSuch(w, r, "invoice")
		return
	}
	out := invoicePage{Idem: formKey()}
	if err := p.api.get(r, "/v1/invoices/"+id, nil, &out.Invoice); err != nil {
		p.failAPI(w, r, err)
		return
	}
	var sub subscriptionView
	if p.api.get(r, "/v1/subscriptions/"+out.Invoice.SubscriptionID, nil, &sub) == nil {
		_ = p.api.get(r, "/v1/apis/"+sub.APIID, nil, &out.API)
	}
	var pay invoicePayment
	if err := p.api.get(r, "/v1/invoices/"+id+"/payment", nil, &pay); err == nil {
		out.Payment = &pay
	} else if e, ok := asProblem(err); !ok || e.Status != http.StatusNotFound {
		p.failAPI(w, r, err)
		return
	}
	p.render(w, r, status, "invoice", view{Title: "Invoice " + out.Invoice.Name(), Nav: "billing", Data: out, Problem: pr})
}

// payInvoice is pay now: a new attempt at once with the organization's
// payment method.
func (p *portal) payInvoice(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.noSuch(w, r, "invoice")
		return
	}
	if err := p.api.post(r, "/v1/invoices/"+id+"/payment/retry", idemOf(r), nil, nil); err != nil {
		pr, ok := asProblem(err)
		if !ok || pr.Status == http.StatusNotFound || pr.Status == http.StatusForbidden {
			p.failAPI(w, r, err)
			return
		}
		// A refusal (no payment method, an attempt under way, the
		// provider down) is shown on the invoice.
		p.showInvoice(w, r, pr.Status, pr)
		return
	}
	http.Redirect(w, r, "/billing/invoices/"+id, http.StatusSeeOther)
}

// streamedHeaders are what the invoice PDF route passes on of the API's answer.
var streamedHeaders = []string{"Content-Type", "Content-Disposition", "Cache-Control", "Content-Length"}

// invoicePDF passes on the API's PDF of an invoice as it is written, with
// its type and file name; an API problem is the portal's error page.
func (p *portal) invoicePDF(w http.ResponseWriter, r *http.Request) {
	id := pathID(r)
	if id == "" {
		p.noSuch(w, r, "invoice")
		return
	}
	if err := p.streamAPI(w, r, "/v1/invoices/"+id+"/pdf", "application/pdf"); err != nil {
		p.failAPI(w, r, err)
	}
}

// streamAPI sends GET path to the API as the user of r, like client.send,
// and passes a 2xx answer of content type want on to w as it is written,
// with streamedHeaders; anything else is returned as a *Problem with nothing
// written to w.
func (p *portal) streamAPI(w http.ResponseWriter, r *http.Request, path, want string) error {
	s, ok := SessionFrom(r.Context())
	if !ok {
		return &Problem{Status: http.StatusUnauthorized, Title: "Unauthorized", Detail: "Sign in first."}
	}
	// As client.send: the API routes on its own, as the session's user.
	ctx := context.WithValue(r.Context(), chi.RouteCtxKey, (*chi.Context)(nil))
	ctx = identity.WithTrustedPrincipal(ctx, s.Principal)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, http.NoBody)
	if err != nil {
		return err
	}
	req.RemoteAddr = r.RemoteAddr
	for _, h := range []string{"X-Forwarded-For", "User-Agent"} {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	req.Header.Set("Accept", want+", application/problem+json")
	if id := r.Header.Get("X-Request-Id"); id != "" {
		req.Header.Set("X-Request-Id", id)
	}
	sw := &apiStreamWriter{w: w, header: http.Header{}, want: want}
	p.cfg.API.ServeHTTP(sw, req)
	if sw.passing {
		return nil
	}
	if sw.status == 0 {
		sw.status = http.StatusOK
	}
	pr := &Problem{}
	if err := json.Unmarshal(sw.held.Bytes(), pr); err != nil || pr.Status == 0 {
		pr = &Problem{Status: sw.status, Title: http.StatusText(sw.status)}
		if sw.status/100 == 2 {
			// A 2xx of another type than asked: not for this route.
			return errors.New("portal: the API answered " + sw.header.Get("Content-Type") + ", not " + want)
		}
	}
	return pr
}

// apiStreamWriter passes a 2xx answer of the wanted type through to w and
// holds anything else (a problem, at most maxAnswer bytes) for streamAPI.
type apiStreamWriter struct {
	w       http.ResponseWriter
	header  http.Header
	want    string
	status  int
	passing bool
	held    bytes.Buffer
}

func (s *apiStreamWriter) Header() http.Header { return s.header }

func (s *apiStreamWriter) WriteHeader(status int) {
	if s.status != 0 {
		return
	}
	s.status = status
	ct := s.header.Get("Content-Type")
	if status/100 == 2 && (ct == s.want || strings.HasPrefix(ct, s.want+";")) {
		s.passing = true
		for _, h := range streamedHeaders {
			if v := s.header.Get(h); v != "" {
				s.w.Header().Set(h, v)
			}
		}
		s.w.WriteHeader(status)
	}
}

func (s *apiStreamWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	if s.passing {
		return s.w.Write(b)
	}
	if s.held.Len()+len(b) > maxAnswer {
		return 0, errors.New("portal: API answer too large")
	}
	return s.held.Write(b)
}

// Flush passes a flush on when the answer is passing through.
func (s *apiStreamWriter) Flush() {
	if f, ok := s.w.(http.Flusher); ok && s.passing {
		f.Flush()
	}
}

var _ io.Writer = (*apiStreamWriter)(nil)

type profilePage struct {
	Profile billingProfileView
	Exists  bool
}

func (p *portal) profilePage(w http.ResponseWriter, r *http.Request) {
	prof, err := p.billingProfile(r)
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	out := profilePage{Exists: prof != nil}
	if prof != nil {
		out.Profile = *prof
	}
	p.render(w, r, http.StatusOK, "billing_profile", view{Title: "Billing profile", Nav: "billing", Data: out})
}

// saveProfile replaces the organization's billing profile.
func (p *portal) saveProfile(w http.ResponseWriter, r *http.Request) {
	in := billingProfileView{
		LegalName: r.PostFormValue("legal_name"), AddressLine1: r.PostFormValue("address_line1"), AddressLine2: r.PostFormValue("address_line2"),
		City: r.PostFormValue("city"), PostalCode: r.PostFormValue("postal_code"), Country: r.PostFormValue("country"),
		Region: r.PostFormValue("region"), TaxID: r.PostFormValue("tax_id"), Email: r.PostFormValue("email"),
	}
	org, err := p.consumerOrg(r)
	if err != nil {
		p.failAPI(w, r, err)
		return
	}
	if err := p.api.put(r, "/v1/organizations/"+org+"/billing-profile", in, nil); err != nil {
		if pr, ok := consumerRefusal(err); ok {
			prof, _ := p.billingProfile(r)
			p.render(w, r, pr.Status, "billing_profile", view{Title: "Billing profile", Nav: "billing",
				Data: profilePage{Profile: in, Exists: prof != nil}, Problem: pr})
			return
		}
		p.failAPI(w, r, err)
		return
	}
	http.Redirect(w, r, "/billing", http.StatusSeeOther)
}

// setupPaymentMethod starts the setup of a payment method at the
// provider the form names (stripe, or manual for a bank transfer).
func (p *portal) setupPaymentMethod(w http.ResponseWriter, r *http.Request) {
	provider := r.PostFormValue("provider")
	if provider != "manual" {
		provider = "stripe"
	}
	var out setupView
	if err := p.api.post(r, "/v1/billing/payment-methods/setup", idemOf(r), map[string]any{"provider": provider}, &out); err != nil {
		pr, ok := asProblem(err)
		if !ok || pr.Status == http.StatusForbidden || pr.Status == http.StatusUnauthorized {
			p.failAPI(w, r, err)
			return
		}
		p.showBilling(w, r, pr.Status, nil, pr)
		return
	}
	// The answer came with a client secret the page does not show; no
	// cache keeps the page either way.
	w.Header().Set("Cache-Control", "no-store")
	p.showBilling(w, r, http.StatusOK, &out, nil)
}
