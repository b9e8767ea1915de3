package billing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/billing/internal/db"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/internal/periodic"
)

// Mailer sends email (a notify.Mailer).
type Mailer interface {
	Send(ctx context.Context, m notify.Message) error
}

// Notice kinds: the finalized invoice, and the reminders 3 days before its
// due date, on it and 7 days after (until 14 days after: an overdue notice
// a month late would be news of nothing). Each is sent once per invoice
// (invoice_notices), a reminder only while the invoice is open with an
// amount due and only inside its window, so a reminder whose time passed
// while nothing ran is skipped rather than sent late.
const (
	NoticeFinalized = "finalized"
	NoticeDueSoon   = "due_soon"
	NoticeDue       = "due"
	NoticeOverdue   = "overdue"
)

// NoticeArgs is one run of the invoice notices.
type NoticeArgs struct{}

// Kind implements river.JobArgs.
func (NoticeArgs) Kind() string { return "billing_notices" }

// noticeBatch is how many notices a query of a run takes.
const noticeBatch = 100

// RegisterNoticeJobs adds the notices' worker to w and returns its
// periodic job, run every every (default 5m) and when the job client
// starts. It runs apart from the billing cycle, so that a slow or
// unreachable mail server holds up no invoice; a run sends until nothing
// is due or its 50 s are up, and the next run carries on.
func (s *Service) RegisterNoticeJobs(w *river.Workers, every time.Duration) []*river.PeriodicJob {
	if every <= 0 {
		every = 5 * time.Minute
	}
	river.AddWorker(w, periodic.NewWorker[NoticeArgs](func(ctx context.Context) error {
		total := 0
		for {
			n, err := s.SendNotices(ctx, noticeBatch)
			total += n
			if err != nil || n < noticeBatch {
				s.log.InfoContext(ctx, "invoice notices", "sent", total)
				return err
			}
		}
	}).WithTimeout(cycleTimeout))
	return []*river.PeriodicJob{periodic.Job(every, NoticeArgs{}, &river.InsertOpts{MaxAttempts: 1})}
}

// finalizedNoticeWindow is how long after its finalization an invoice's
// email is still sent: an invoice finalized before a mailer was configured
// gets one for this long, older ones never.
const finalizedNoticeWindow = 30 * 24 * time.Hour

// SendNotices emails up to max due notices (the finalized invoice with its
// PDF, reminders), each in its own transaction: the notice is recorded,
// the email sent, then the record committed, so a failed send is tried
// again on the next run and a crash after the send resends it with the
// same Message-ID (mail clients drop the duplicate). An invoice whose
// customer has no billing email, or whose email the mailer refuses as
// invalid, has its notice recorded as done: retrying cannot succeed. It
// returns how many emails it sent.
func (s *Service) SendNotices(ctx context.Context, max int) (int, error) {
	if s.cfg.Mailer == nil {
		return 0, nil
	}
	now := s.now()
	due, err := db.New(s.pool).NoticesDue(ctx, db.NoticesDueParams{
		FinalizedSince: now.Add(-finalizedNoticeWindow), Now: now, RowLimit: int32(max),
	})
	if err != nil {
		return 0, fmt.Errorf("list notices due: %w", err)
	}
	sent := 0
	var errs []error
	for _, n := range due {
		ok, err := s.sendNotice(ctx, n.ID, string(n.Kind), now)
		if err != nil {
			err = fmt.Errorf("send %s notice of invoice %s: %w", n.Kind, n.ID, err)
			// A mail server that fails fails the next message too: stop
			// until the next run. Anything else is this invoice's: the
			// others go on.
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

// errMailFailed marks a notice the mailer could not send.
var errMailFailed = errors.New("mailer failed")

// sendNotice claims and sends one notice; ok false when nothing was sent
// (another run had it, or there is no one to send it to).
func (s *Service) sendNotice(ctx context.Context, id uuid.UUID, kind string, now time.Time) (ok bool, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		if _, err := q.NoticeClaim(ctx, db.NoticeClaimParams{InvoiceID: id, Kind: db.InvoiceNoticeKind(kind), SentAt: now}); errors.Is(err, pgx.ErrNoRows) {
			return nil
		} else if err != nil {
			return fmt.Errorf("record notice: %w", err)
		}
		inv, err := loadInvoice(ctx, q, id, now)
		if err != nil {
			return err
		}
		if kind != NoticeFinalized && (inv.Status != StatusOpen || !inv.AmountDue.IsPositive()) {
			// Paid or voided since it was listed: no reminder.
			return nil
		}
		d, err := s.document(ctx, inv)
		if err != nil {
			return err
		}
		msg, err := noticeMessage(d, kind)
		if err != nil || len(msg.To) == 0 {
			return err
		}
		err = s.cfg.Mailer.Send(ctx, msg)
		// A recipient refused for good (5xx) would be refused at every run,
		// holding up every notice queued behind it: keep the claim.
		if notify.Refused(err) {
			s.log.WarnContext(ctx, "invoice notice refused", "invoice_id", id, "kind", kind, "error", err)
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

// noticeMessage is the email of a notice: to the billing email the
// invoice cites (else the customer's current one), the finalized
// invoice's with its PDF attached. No To when there is no address.
func noticeMessage(d Document, kind string) (notify.Message, error) {
	inv := d.Invoice
	number := d.Number()
	msg := notify.Message{Headers: map[string]string{
		"Message-ID":   "<" + inv.ID.String() + "." + kind + "@invoices.veil>",
		"X-Veil-Event": "invoice." + kind,
	}}
	if d.Customer.Email != "" {
		msg.To = []string{d.Customer.Email}
	}
	due := d.DateOf(inv.DueAt)
	var body strings.Builder
	fmt.Fprintf(&body, "Hello %s,\n\n", oneLine(d.Customer.Name))
	switch kind {
	case NoticeFinalized:
		msg.Subject = fmt.Sprintf("Invoice %s from %s", number, oneLine(d.Issuer.Name))
		fmt.Fprintf(&body, "your invoice %s for %s to %s is attached.\nAmount due: %s, by %s.\n",
			number, d.Date(inv.PeriodStart), d.Date(inv.PeriodEnd), d.Money(inv.AmountDue), due)
		var pdf bytes.Buffer
		if err := RenderPDF(&pdf, d); err != nil {
			return msg, err
		}
		msg.Attachments = []notify.Attachment{{Name: number + ".pdf", ContentType: "application/pdf", Data: pdf.Bytes()}}
	case NoticeDueSoon:
		msg.Subject = fmt.Sprintf("Invoice %s is due on %s", number, due)
		fmt.Fprintf(&body, "invoice %s from %s, %s, is due on %s.\n", number, oneLine(d.Issuer.Name), d.Money(inv.AmountDue), due)
	case NoticeDue:
		msg.Subject = fmt.Sprintf("Invoice %s is due today", number)
		fmt.Fprintf(&body, "invoice %s from %s, %s, is due today (%s).\n", number, oneLine(d.Issuer.Name), d.Money(inv.AmountDue), due)
	default:
		msg.Subject = fmt.Sprintf("Invoice %s is overdue", number)
		fmt.Fprintf(&body, "invoice %s from %s, %s, was due on %s and is unpaid.\n", number, oneLine(d.Issuer.Name), d.Money(inv.AmountDue), due)
	}
	body.WriteString("\nIf you have paid it already, please ignore this message.\n")
	msg.Text = body.String()
	return msg, nil
}

// oneLine keeps a party's name to one line in a subject or greeting.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Notices lists the notices sent for an invoice, oldest first (for
// the service's callers that have checked the invoice is theirs).
func (s *Service) Notices(ctx context.Context, id uuid.UUID) ([]NoticeSent, error) {
	rows, err := db.New(s.pool).NoticeList(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("list notices: %w", err)
	}
	out := make([]NoticeSent, len(rows))
	for i, r := range rows {
		out[i] = NoticeSent{Kind: string(r.Kind), SentAt: r.SentAt}
	}
	return out, nil
}

// NoticeSent is a notice sent for an invoice.
type NoticeSent struct {
	Kind   string    `json:"kind"`
	SentAt time.Time `json:"sent_at"`
}
