package payments

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/internal/periodic"
	"github.com/veil-platform/veil/metering"
)

// EventInvoicePaid is billing's invoice.paid, announced when a payment,
// or nothing being due, pays an invoice.
const EventInvoicePaid = "invoice.paid"

// invoiceData is an invoice as its events announce it: the same fields
// as billing's invoice events, so that a subscriber reads invoice.paid
// alike whoever paid it.
type invoiceData struct {
	ID             uuid.UUID       `json:"id"`
	Number         *string         `json:"number"`
	Status         string          `json:"status"`
	IssuerID       uuid.UUID       `json:"issuer_id"`
	CustomerID     uuid.UUID       `json:"customer_id"`
	SubscriptionID uuid.UUID       `json:"subscription_id"`
	Currency       string          `json:"currency"`
	PeriodStart    time.Time       `json:"period_start"`
	PeriodEnd      time.Time       `json:"period_end"`
	Total          decimal.Decimal `json:"total"`
	AmountDue      decimal.Decimal `json:"amount_due"`
	DueAt          *time.Time      `json:"due_at"`
}

// invoicePaid announces invoice.paid to the issuer and the customer of an
// invoice just marked paid in tx, and returns the invoice.
func (s *Service) invoicePaid(ctx context.Context, tx pgx.Tx, id uuid.UUID) (invoiceData, error) {
	r, err := db.New(tx).InvoiceSummary(ctx, id)
	if err != nil {
		return invoiceData{}, fmt.Errorf("read invoice: %w", err)
	}
	inv := invoiceData(r)
	if s.cfg.Publisher == nil {
		return inv, nil
	}
	for _, org := range []uuid.UUID{inv.IssuerID, inv.CustomerID} {
		if err := s.cfg.Publisher.Publish(ctx, tx, org, EventInvoicePaid, inv); err != nil {
			return inv, fmt.Errorf("announce %s: %w", EventInvoicePaid, err)
		}
	}
	return inv, nil
}

// Mailer sends email (a notify.Mailer).
type Mailer interface {
	Send(ctx context.Context, m notify.Message) error
}

// NotifierConfig configures a Notifier.
type NotifierConfig struct {
	Mailer Mailer
	// Profiles gives a customer's billing email, where its notices go; its
	// admins get them without one.
	Profiles Profiles
	// PublicURL is the control plane's public base URL (VEIL_PUBLIC_URL),
	// for the invoice's link; "" leaves the link out.
	PublicURL string
}

// Notifier emails customers about their payments (SendNotices).
type Notifier struct {
	s   *Service
	cfg NotifierConfig
}

// Notifier returns the Service's notifier, sending with cfg.Mailer.
func (s *Service) Notifier(cfg NotifierConfig) *Notifier {
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	return &Notifier{s: s, cfg: cfg}
}

// RegisterJobs adds the notices' worker to w and returns its periodic
// job, run every every (default 1m): apart from the payments cycle, so
// that a slow or unreachable mail server holds up no collection.
func (n *Notifier) RegisterJobs(w *river.Workers, every time.Duration) []*river.PeriodicJob {
	if every <= 0 {
		every = time.Minute
	}
	river.AddWorker(w, periodic.NewWorker[NoticeArgs](func(ctx context.Context) error {
		sent, err := n.SendNotices(ctx, noticeBatch)
		if err != nil {
			n.s.log.WarnContext(ctx, "payment notices", "sent", sent, "err", err)
		} else if sent > 0 {
			n.s.log.InfoContext(ctx, "payment notices", "sent", sent)
		}
		return err
	}).WithTimeout(cycleTimeout))
	return []*river.PeriodicJob{periodic.Job(every, NoticeArgs{}, &river.InsertOpts{MaxAttempts: 1})}
}

// Notice kinds (payment_notices.kind).
const (
	NoticeAttemptFailed  = "attempt_failed"
	NoticeRequiresAction = "requires_action"
	NoticePastDue        = "past_due"
	NoticeSuspended      = "suspended"
	// NoticeNeedsAttention goes to the customer and
	// NoticeNeedsAttentionIssuer to the issuer of a payment its provider
	// can never take.
	NoticeNeedsAttention       = "needs_attention"
	NoticeNeedsAttentionIssuer = "needs_attention_issuer"
	// NoticeDisputeLostIssuer goes to the issuer of a payment whose
	// dispute was lost.
	NoticeDisputeLostIssuer = "dispute_lost_issuer"
)

// noticeWindow is how old an event may be and still get its email: one
// from before a mailer was configured, or before this version ran, is
// not news any more.
const noticeWindow = 7 * 24 * time.Hour

// noticeBatch is how many notices a run sends at most.
const noticeBatch = 100

// NoticeArgs is one run of the payment notices.
type NoticeArgs struct{}

// Kind implements river.JobArgs.
func (NoticeArgs) Kind() string { return "payments_notices" }

// errMailFailed marks a notice the mailer could not send.
var errMailFailed = errors.New("mailer failed")

// SendNotices emails the customers up to max notices due: each failed
// attempt (what failed, the amount, the invoice, the next attempt, how
// to pay), each attempt that needs the customer's action, a subscription
// made past_due (with the suspension date) and one suspended. Each is
// claimed, sent and committed in one transaction, so that it is sent once
// whatever replays its event or repeats the job; a failed send is tried
// on the next run. A notice without a recipient (no billing email, no
// admin) is recorded as done. It returns how many it sent.
func (n *Notifier) SendNotices(ctx context.Context, max int) (int, error) {
	if n.cfg.Mailer == nil {
		return 0, nil
	}
	now := n.s.now()
	due, err := db.New(n.s.pool).NoticesDue(ctx, db.NoticesDueParams{Since: now.Add(-noticeWindow), Max: int32(max)})
	if err != nil {
		return 0, fmt.Errorf("list payment notices due: %w", err)
	}
	sent := 0
	var errs []error
	for _, d := range due {
		ok, err := n.sendNotice(ctx, d, now)
		if err != nil {
			err = fmt.Errorf("send %s notice of invoice %s: %w", d.Kind, d.InvoiceID, err)
			if errors.Is(err, errMailFailed) {
				return sent, errors.Join(append(errs, err)...)
			}
			errs = append(errs, err)
		}
		if ok {
			sent++
		}
	}
	return sent, errors.Join(errs...)
}

// sendNotice claims and sends one notice; ok false when nothing was sent.
func (n *Notifier) sendNotice(ctx context.Context, due db.NoticesDueRow, now time.Time) (ok bool, err error) {
	err = n.s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		claimed, err := q.NoticeClaim(ctx, db.NoticeClaimParams{Kind: due.Kind, Key: due.Key, InvoiceID: due.InvoiceID, SentAt: now})
		if err != nil || claimed == 0 {
			return err
		}
		msg, err := n.noticeMessage(ctx, q, due)
		if err != nil || len(msg.To) == 0 {
			return err
		}
		err = n.cfg.Mailer.Send(ctx, msg)
		// A recipient refused for good (5xx) would be refused at every run,
		// holding up every notice queued behind it: keep the claim.
		if notify.Refused(err) {
			n.s.log.WarnContext(ctx, "payment notice refused", "invoice", due.InvoiceID, "kind", due.Kind, "err", err)
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %w", errMailFailed, err)
		}
		ok = true
		return nil
	})
	return ok, err
}

// recipients are whom a customer's notices go to: its billing email, else
// its admins.
func (n *Notifier) recipients(ctx context.Context, q *db.Queries, customer uuid.UUID) ([]string, error) {
	if n.cfg.Profiles != nil {
		p, ok, err := n.cfg.Profiles.BillingProfile(ctx, customer)
		if err != nil {
			return nil, err
		}
		if ok && p.Email != "" {
			return []string{p.Email}, nil
		}
	}
	to, err := q.OrganizationAdminEmails(ctx, customer)
	if err != nil {
		return nil, fmt.Errorf("read organization admins: %w", err)
	}
	return to, nil
}

// noticeMessage writes the email of a notice.
func (n *Notifier) noticeMessage(ctx context.Context, q *db.Queries, due db.NoticesDueRow) (notify.Message, error) {
	inv, err := q.NoticeInvoice(ctx, due.InvoiceID)
	if err != nil {
		return notify.Message{}, fmt.Errorf("read invoice: %w", err)
	}
	to, err := n.recipients(ctx, q, inv.CustomerID)
	if due.Kind == NoticeNeedsAttentionIssuer || due.Kind == NoticeDisputeLostIssuer {
		to, err = n.recipients(ctx, q, inv.IssuerID)
	}
	if err != nil || len(to) == 0 {
		return notify.Message{}, err
	}
	msg := notify.Message{To: to, Headers: map[string]string{
		"Message-ID":   "<" + due.Kind + "." + due.Key + "@payments.veil>",
		"X-Veil-Event": "payment." + due.Kind,
	}}
	switch due.Kind {
	case NoticeNeedsAttention, NoticeNeedsAttentionIssuer:
		msg.Subject, msg.Text = n.attentionMessage(ctx, due.Kind, inv)
		return msg, nil
	case NoticeDisputeLostIssuer:
		msg.Subject = fmt.Sprintf("Invoice %s of %s: a payment was disputed and lost", inv.Number, oneLine(inv.CustomerName))
		msg.Text = fmt.Sprintf("Hello %s,\n\na payment of invoice %s of %s was disputed with the card's bank, and the dispute was lost: "+
			"the bank took the money back. The subscription the invoice bills is past due and will be suspended after your grace.\n"+
			"Once the customer has paid you again, or you forgive it, ask an admin to resume the subscription "+
			"(POST /v1/admin/subscriptions/{id}/resume); nothing else ends it, as the invoice stays paid.\n",
			oneLine(inv.IssuerName), inv.Number, oneLine(inv.CustomerName))
		return msg, nil
	}
	amount := money(inv.AmountDue, inv.Currency)
	var body strings.Builder
	fmt.Fprintf(&body, "Hello %s,\n\n", oneLine(inv.CustomerName))
	switch due.Kind {
	case NoticeAttemptFailed, NoticeRequiresAction:
		id, err := uuid.Parse(due.Key)
		if err != nil {
			return notify.Message{}, fmt.Errorf("read attempt: %w", err)
		}
		att, err := q.NoticeAttempt(ctx, id)
		if err != nil {
			return notify.Message{}, fmt.Errorf("read attempt: %w", err)
		}
		if due.Kind == NoticeRequiresAction || needsAction(att) {
			msg.Subject = fmt.Sprintf("Invoice %s: your payment needs your confirmation", inv.Number)
			fmt.Fprintf(&body, "the payment of %s for invoice %s from %s needs you: your bank asks you to confirm it, which cannot be done without you.\n"+
				"Pay the invoice yourself with your card, or add a card that does not need it.\n",
				amount, inv.Number, oneLine(inv.IssuerName))
			break
		}
		msg.Subject = fmt.Sprintf("Invoice %s: payment failed", inv.Number)
		fmt.Fprintf(&body, "the payment of %s for invoice %s from %s failed on %s (attempt %d): %s.\n",
			amount, inv.Number, oneLine(inv.IssuerName), day(att.At), att.AttemptNo, failureText(att))
		if inv.PaymentStatus == "pending" && inv.NextAttemptAt != nil {
			fmt.Fprintf(&body, "We will try again on %s.\n", day(*inv.NextAttemptAt))
		} else {
			body.WriteString("That was the last attempt: no other will be made.\n")
		}
	case NoticePastDue:
		msg.Subject = fmt.Sprintf("Invoice %s is unpaid: your subscription is past due", inv.Number)
		fmt.Fprintf(&body, "invoice %s from %s, %s, is unpaid after the last payment attempt. Your subscription is past due",
			inv.Number, oneLine(inv.IssuerName), amount)
		if inv.SuspendAt != nil {
			fmt.Fprintf(&body, " and will be suspended on %s unless the invoice is paid first", minute(*inv.SuspendAt))
		}
		body.WriteString(".\n")
	default:
		msg.Subject = fmt.Sprintf("Invoice %s is unpaid: your subscription is suspended", inv.Number)
		fmt.Fprintf(&body, "invoice %s from %s, %s, is still unpaid, so your subscription is suspended: its calls are refused (402) until the invoice is paid.\n",
			inv.Number, oneLine(inv.IssuerName), amount)
	}
	n.howToPay(ctx, &body, inv)
	msg.Text = body.String()
	return msg, nil
}

// attentionMessage is the subject and text of the notice of a payment its
// provider can never take: to the customer, how to pay otherwise; to the
// issuer, what it has to do.
func (n *Notifier) attentionMessage(ctx context.Context, kind string, inv db.NoticeInvoiceRow) (string, string) {
	amount := money(inv.AmountDue, inv.Currency)
	dunned := !strings.HasPrefix(inv.AttentionReason, "amount_too_small")
	var body strings.Builder
	if kind == NoticeNeedsAttentionIssuer {
		fmt.Fprintf(&body, "Hello %s,\n\nthe payment of %s for invoice %s of %s cannot be taken by %s (%s), so it is not attempted again.\n",
			oneLine(inv.IssuerName), amount, inv.Number, oneLine(inv.CustomerName), inv.Provider, oneLine(inv.AttentionReason))
		if dunned {
			body.WriteString("The subscription is past due and will be suspended after your grace unless the invoice is settled.\n")
		} else {
			body.WriteString("The subscription is not suspended for an amount this small: collect it by hand or write it off.\n")
		}
		fmt.Fprintf(&body, "Once paid by transfer, mark it paid (POST /v1/invoices/%s/payment/mark-paid); or void it or mark it uncollectible.\n", inv.ID)
		return fmt.Sprintf("Invoice %s of %s needs your attention", inv.Number, oneLine(inv.CustomerName)), body.String()
	}
	fmt.Fprintf(&body, "Hello %s,\n\nthe payment of %s for invoice %s from %s cannot be taken from your card on file (%s).\n",
		oneLine(inv.CustomerName), amount, inv.Number, oneLine(inv.IssuerName), oneLine(inv.AttentionReason))
	if dunned {
		body.WriteString("Please pay it otherwise: your subscription is past due and will be suspended unless the invoice is paid.\n")
	} else {
		body.WriteString("Please pay it otherwise, or contact your provider.\n")
	}
	n.howToPay(ctx, &body, inv)
	return fmt.Sprintf("Invoice %s: your payment cannot be taken by card", inv.Number), body.String()
}

// howToPay says how the customer can settle the invoice.
func (n *Notifier) howToPay(ctx context.Context, body *strings.Builder, inv db.NoticeInvoiceRow) {
	body.WriteString("\nHow to pay:\n")
	if n.cfg.PublicURL != "" {
		fmt.Fprintf(body, "- the invoice: %s/v1/invoices/%s\n", n.cfg.PublicURL, inv.ID)
	}
	if inv.Provider == "stripe" && inv.PaymentStatus != "needs_attention" {
		fmt.Fprintf(body, "- pay now with your card on file: POST %s/v1/invoices/%s/payment/retry\n", n.cfg.PublicURL, inv.ID)
		body.WriteString("- add or replace your card (POST /v1/billing/payment-methods/setup, or your portal's billing page): the next attempt uses it (a payment that failed for good is tried again at once)\n")
	}
	if prov := n.s.cfg.Providers["manual"]; prov != nil {
		if ses, err := prov.SetupPaymentMethod(ctx, metering.SetupInput{}); err == nil && ses.Instructions != "" {
			fmt.Fprintf(body, "- or pay by bank transfer (invoice %s): %s\n", inv.Number, ses.Instructions)
		}
	}
	body.WriteString("\nIf you have paid it already, please ignore this message.\n")
}

// needsAction reports whether an attempt failed for want of the
// customer's confirmation (3-D Secure), which an automatic retry cannot
// give.
func needsAction(a db.NoticeAttemptRow) bool {
	return a.DeclineCode == "authentication_required" || a.FailureCode == "authentication_required"
}

// failureText is what the provider said of a failed attempt, in one line.
func failureText(a db.NoticeAttemptRow) string {
	switch {
	case a.FailureMessage != "":
		return oneLine(a.FailureMessage)
	case a.DeclineCode != "":
		return "declined (" + a.DeclineCode + ")"
	case a.FailureCode != "":
		return a.FailureCode
	}
	return "declined"
}

// money prints an amount as its currency shows it ("EUR 12.50").
func money(amount decimal.Decimal, currency string) string {
	c, err := metering.CurrencyOf(currency)
	if err != nil {
		return amount.String() + " " + currency
	}
	return c.Code + " " + c.Format(amount)
}

func day(t time.Time) string    { return t.UTC().Format("2 January 2006") }
func minute(t time.Time) string { return t.UTC().Format("2 January 2006 15:04 UTC") }

// oneLine keeps a party's name or a provider's message to one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
