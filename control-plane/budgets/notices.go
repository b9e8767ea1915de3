package budgets

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/budgets/internal/db"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/metering"
)

// Email jobs.
const (
	// emailMaxAttempts bounds the sends of one email: with River's default
	// backoff (attempt⁴ seconds) the last falls some four hours after the
	// first, long enough to ride out a mail server's outage.
	emailMaxAttempts = 10
	// emailTimeout bounds one attempt: reading the recipients and the
	// SMTP dialog.
	emailTimeout = 30 * time.Second
	// maxRecipients bounds the members one email goes to.
	maxRecipients = 50
)

// Notice is the data of a budget.threshold_crossed webhook.
type Notice struct {
	BudgetID       uuid.UUID  `json:"budget_id"`
	OrganizationID uuid.UUID  `json:"organization_id"`
	SubscriptionID *uuid.UUID `json:"subscription_id"`
	PeriodStart    time.Time  `json:"period_start"`
	PeriodEnd      time.Time  `json:"period_end"`
	Threshold      int        `json:"threshold"`
	// Basis is BasisActual (Cost is the cost so far) or BasisProjected
	// (Cost is the projection of the period's cost at its end).
	Basis    string          `json:"basis"`
	Amount   decimal.Decimal `json:"amount"`
	Cost     decimal.Decimal `json:"cost"`
	Currency string          `json:"currency"`
}

func noticeOf(st standing, c crossing) Notice {
	return Notice{
		BudgetID: st.BudgetID, OrganizationID: st.OrganizationID, SubscriptionID: st.SubscriptionID,
		PeriodStart: st.PeriodStart.UTC(), PeriodEnd: st.PeriodEnd.UTC(), Threshold: c.threshold, Basis: c.basis,
		Amount: st.Amount, Cost: c.cost, Currency: st.Currency,
	}
}

// EmailArgs is the email of one budget notice, enqueued with its claim.
// It carries the notice; the recipients and names are read when it is
// sent.
type EmailArgs struct {
	Notice
}

// Kind implements river.JobArgs.
func (EmailArgs) Kind() string { return "budget_email" }

func emailArgs(st standing, c crossing) EmailArgs { return EmailArgs{Notice: noticeOf(st, c)} }

// EmailWorker sends budget notice emails: one SMTP attempt per job run.
type EmailWorker struct {
	river.WorkerDefaults[EmailArgs]
	s *Service
}

var _ river.Worker[EmailArgs] = (*EmailWorker)(nil)

// EmailWorker returns the worker of EmailArgs jobs.
func (s *Service) EmailWorker() *EmailWorker { return &EmailWorker{s: s} }

// Timeout bounds one attempt.
func (w *EmailWorker) Timeout(*river.Job[EmailArgs]) time.Duration { return emailTimeout }

// Work sends the email of one notice to the organization's members as
// they are now. It goes out at least once: a crash after the mail server
// took it but before River recorded the job complete sends it again, with
// the same Message-ID, which mail clients drop. A refusal for good
// cancels the job; other failures are retried. A budget deleted
// meanwhile, or an organization without an address, gets no email.
func (w *EmailWorker) Work(ctx context.Context, job *river.Job[EmailArgs]) error {
	s, a := w.s, job.Args
	log := s.log.With("budget_id", a.BudgetID, "threshold", a.Threshold, "basis", a.Basis, "job_id", job.ID, "attempt", job.Attempt)
	if s.cfg.Mailer == nil {
		log.WarnContext(ctx, "no mailer for a queued budget email: not sent")
		s.noticeCounter(channelEmail, notify.ResultSkipped).Inc()
		return nil
	}
	q := db.New(s.pool)
	t, err := q.BudgetNoticeTarget(ctx, a.BudgetID)
	if errors.Is(err, pgx.ErrNoRows) {
		log.InfoContext(ctx, "budget email of a deleted budget: not sent")
		s.noticeCounter(channelEmail, notify.ResultSkipped).Inc()
		return nil
	}
	if err != nil {
		return fmt.Errorf("send budget email: read budget: %w", err)
	}
	emails, err := q.OrganizationEmails(ctx, db.OrganizationEmailsParams{OrganizationID: t.OrganizationID, MaxRows: maxRecipients})
	if err != nil {
		return fmt.Errorf("send budget email: read members: %w", err)
	}
	var to []string
	for _, e := range emails {
		if notify.Mailable(e) {
			to = append(to, e)
		}
	}
	if len(to) == 0 {
		log.WarnContext(ctx, "no email address for a budget notice")
		s.noticeCounter(channelEmail, notify.ResultSkipped).Inc()
		return nil
	}
	result, err := notify.SendJob(ctx, s.cfg.Mailer, budgetMessage(to, t, a))
	s.noticeCounter(channelEmail, result).Inc()
	switch {
	case result == notify.ResultRefused:
		log.ErrorContext(ctx, "budget email refused: not retried", "error", err)
	case err != nil && job.Attempt >= job.MaxAttempts:
		log.ErrorContext(ctx, "budget email failed on its last attempt: not sent", "error", err)
	case err == nil:
		log.InfoContext(ctx, "budget email sent", "recipients", len(to))
	}
	return err
}

// budgetMessage is the email of notice a of budget t to the addresses to.
func budgetMessage(to []string, t db.BudgetNoticeTargetRow, a EmailArgs) notify.Message {
	subject, text := budgetMail(t, a)
	return notify.Message{
		To: to, Subject: subject, Text: text,
		Headers: map[string]string{
			"X-Veil-Notice":    fmt.Sprintf("budget_%d_%s", a.Threshold, a.Basis),
			"X-Veil-Budget-Id": a.BudgetID.String(),
			// Stable per notice, so a mail client drops the copy a
			// retried send delivers.
			"Message-ID": fmt.Sprintf("<budget-%s-%d-%d-%s@notice.veil>", a.BudgetID, a.PeriodStart.Unix(), a.Threshold, a.Basis),
		},
	}
}

// budgetMail is the subject and body of a budget notice: what the budget
// covers, which threshold the cost so far or the projection crossed, the
// figures, and what the organization can do.
func budgetMail(t db.BudgetNoticeTargetRow, a EmailArgs) (subject, text string) {
	const day = "2 Jan 2006 15:04 MST"
	money := func(d decimal.Decimal) string { return a.Currency + " " + d.String() }
	if cur, err := metering.CurrencyOf(a.Currency); err == nil {
		money = func(d decimal.Decimal) string { return a.Currency + " " + cur.Format(d) }
	}
	what := fmt.Sprintf("all subscriptions of %s in %s this month", oneLine(t.OrganizationName), a.Currency)
	if a.SubscriptionID != nil {
		what = fmt.Sprintf("your subscription to %s this billing period", oneLine(t.ApiName))
	}
	level := a.Amount.Mul(decimal.NewFromInt(int64(a.Threshold))).Div(decimal.NewFromInt(100))
	var b strings.Builder
	if a.Basis == BasisProjected {
		subject = fmt.Sprintf("Budget alert: spending is projected to reach %d%% of your %s budget", a.Threshold, money(a.Amount))
		fmt.Fprintf(&b, "At the current pace, the cost of %s is projected to reach %s by %s: %d%% of your budget of %s is %s.\n\n",
			what, money(a.Cost), a.PeriodEnd.UTC().Format(day), a.Threshold, money(a.Amount), money(level))
	} else {
		subject = fmt.Sprintf("Budget alert: you have spent %d%% of your %s budget", a.Threshold, money(a.Amount))
		fmt.Fprintf(&b, "The cost of %s has reached %s: %d%% of your budget of %s is %s.\n\n",
			what, money(a.Cost), a.Threshold, money(a.Amount), money(level))
	}
	switch {
	case t.Hard && a.Threshold >= 100 && a.Basis == BasisActual:
		b.WriteString("This budget is hard: the gateway refuses the subscription's calls with 429 once the usage and base fee before discounts and tax reach it, until the period ends or the budget is raised or removed. The cost above is after discounts and tax, so the gateway may not block yet, or may block already. After a plan change this period the gateway rates the period at the dearest of its plan versions.\n\n")
	case t.Hard:
		b.WriteString("This budget is hard: once the usage and base fee before discounts and tax reach it, the gateway refuses the subscription's calls with 429 until the period ends or the budget is raised or removed. After a plan change this period the gateway rates the period at the dearest of its plan versions.\n\n")
	default:
		b.WriteString("Calls keep working: a budget only warns, it does not stop usage.\n\n")
	}
	fmt.Fprintf(&b, "Budget: %s\nPeriod: %s to %s\n", a.BudgetID, a.PeriodStart.UTC().Format(day), a.PeriodEnd.UTC().Format(day))
	if a.SubscriptionID != nil {
		fmt.Fprintf(&b, "Subscription: %s\n\nSee where it stands with GET /v1/subscriptions/%s/preview. ", a.SubscriptionID, a.SubscriptionID)
	} else {
		b.WriteString("\nSee where each subscription stands with GET /v1/subscriptions/{id}/preview. ")
	}
	fmt.Fprintf(&b, "To change the budget or its thresholds, PUT /v1/budgets/%s.\n", a.BudgetID)
	return subject, b.String()
}

// oneLine keeps a name from another party (an API's, an organization's)
// on one line of the email.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// noticeCounter is veil_controlplane_budget_notices_total of a channel
// and result.
func (s *Service) noticeCounter(channel, result string) *metrics.Counter {
	return s.cfg.Metrics.GetOrCreateCounter(fmt.Sprintf(`veil_controlplane_budget_notices_total{channel=%q,result=%q}`, channel, result))
}
