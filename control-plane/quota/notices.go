package quota

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/control-plane/quota/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/metering"
)

// EventThresholdCrossed is the webhook event type of a quota notice.
const EventThresholdCrossed = "quota.threshold_crossed"

// Notice channels (quota_notices.channel).
const (
	channelWebhook = "webhook"
	channelEmail   = "email"
)

// Results of a notice, the result label of
// veil_controlplane_quota_notices_total. An email is queued by the
// consumer, then sent, failed (an attempt River retries), refused (for
// good: no retry) or skipped (nobody to write to) by its job.
const (
	noticeSent      = "sent"
	noticeQueued    = "queued"
	noticeDuplicate = "duplicate"
	noticeSkipped   = "skipped"
	noticeFailed    = "failed"
	noticeRefused   = "refused"
)

// Email jobs.
const (
	// emailMaxAttempts bounds the sends of one email: with River's default
	// backoff (attempt⁴ seconds) the last falls some four hours after the
	// first, long enough to ride out a mail server's outage.
	emailMaxAttempts = 10
	// emailTimeout bounds one attempt: reading the recipient and the SMTP
	// dialog.
	emailTimeout = 30 * time.Second
)

// crossingSubscription is what a notice tells of the subscription.
type crossingSubscription struct {
	ID     uuid.UUID `json:"id"`
	APIID  uuid.UUID `json:"api_id"`
	PlanID uuid.UUID `json:"plan_id"`
	Status string    `json:"status"`
}

// crossingNotice is the data of a quota.threshold_crossed webhook.
type crossingNotice struct {
	Subscription crossingSubscription `json:"subscription"`
	Threshold    int                  `json:"threshold"`
	Quota        int64                `json:"quota"`
	Used         int64                `json:"used"`
	Hard         bool                 `json:"hard"`
	Blocked      bool                 `json:"blocked"`
	PeriodStart  time.Time            `json:"period_start"`
	PeriodEnd    time.Time            `json:"period_end"`
	// ResetsAt is when the counter starts over: the period's end.
	ResetsAt time.Time `json:"resets_at"`
	// Meter is the slug of the meter whose quota was crossed, absent for
	// the request quota. Quota and Used are then the meter's counter, an
	// integer at the meter's scale (micro-units for a meter of units), and
	// MeterQuota and MeterUsed the same as decimal quantities.
	Meter      string `json:"meter,omitempty"`
	MeterQuota string `json:"meter_quota,omitempty"`
	MeterUsed  string `json:"meter_used,omitempty"`
}

// crossingNoticeOf is the webhook data of crossing e to target t.
func crossingNoticeOf(t crossingTarget, e enforcement.Crossing) crossingNotice {
	n := crossingNotice{
		Subscription: t.sub, Threshold: e.Threshold, Quota: e.Quota, Used: e.Used, Hard: e.Hard, Blocked: e.Blocked(),
		PeriodStart: e.PeriodStart.UTC(), PeriodEnd: e.PeriodEnd.UTC(), ResetsAt: e.PeriodEnd.UTC(),
	}
	if e.Meter != "" {
		n.Meter = e.Meter
		n.MeterQuota = t.meter.Quantity(e.Quota).String()
		n.MeterUsed = t.meter.Quantity(e.Used).String()
	}
	return n
}

// crossingTarget is who a crossing's notices go to.
type crossingTarget struct {
	sub     crossingSubscription
	orgID   uuid.UUID
	apiName string
	// email is the subscriber's address, "" when the subscriber has no
	// user row.
	email string
	// meter is the crossed meter (its slug and field, which give the
	// scale of its integers: metering.Meter.Quantity); the zero Meter,
	// whose integers are whole, for the request quota.
	meter metering.Meter
}

// mailable reports whether the target has an address to write to. Users
// whose token carried no email are provisioned with an address under
// .invalid (RFC 2606): nobody reads it.
func (t crossingTarget) mailable() bool {
	return t.email != "" && !strings.HasSuffix(t.email, ".invalid")
}

// HandleCrossing turns one threshold crossing into its notices: a
// quota.threshold_crossed webhook to the subscribing organization and an
// email to the subscriber. Each goes out once per (subscription, period,
// threshold, quota, channel), claimed by a quota_notices row. Both claims,
// the webhook's outbox delivery (Publish) and the email's job
// (QuotaEmailArgs) commit in one transaction: a crossing is handled
// whole or not at all, and handling it touches only Postgres, so neither
// a mail server that is down nor an address it refuses holds up the
// crossings behind it. Replays and duplicates of e send nothing more.
//
// sent counts the notices this call claimed: the webhook published and
// the email queued. No email is queued without a Mailer, or for a
// subscriber without an address. A subscription that no longer exists
// gets no notices and is not an error. An event whose subscription id is
// not a UUID fails with an error matching enforcement.ErrInvalidCrossing: retrying
// it cannot help. Any other error is Postgres's: retrying later can.
func (s *Service) HandleCrossing(ctx context.Context, e enforcement.Crossing) (sent int, err error) {
	if err := e.Validate(); err != nil {
		return 0, fmt.Errorf("handle quota crossing: %w", err)
	}
	id, err := uuid.Parse(e.SubscriptionID)
	if err != nil {
		return 0, fmt.Errorf("handle quota crossing: %w: subscription_id %q is not a UUID", enforcement.ErrInvalidCrossing, e.SubscriptionID)
	}
	log := s.log.With("subscription_id", id, "event_id", e.ID(), "threshold", e.Threshold, "quota", e.Quota)
	if e.Meter != "" {
		log = log.With("meter", e.Meter)
	}
	target, err := s.crossingTarget(ctx, id, e.Meter)
	if errors.Is(err, pgx.ErrNoRows) {
		log.InfoContext(ctx, "quota crossing of an unknown subscription: no notices")
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("handle quota crossing %s: %w", e.ID(), err)
	}
	mail := s.cfg.Mailer != nil && target.mailable()

	var hook, email bool
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		hook, email = false, false
		ok, err := claimCrossing(ctx, tx, id, e, channelWebhook)
		if err != nil {
			return err
		}
		if ok {
			if err := s.cfg.Publisher.Publish(ctx, tx, target.orgID, EventThresholdCrossed, crossingNoticeOf(target, e)); err != nil {
				return fmt.Errorf("publish webhook notice: %w", err)
			}
		}
		hook = ok
		if !mail {
			return nil
		}
		if ok, err = claimCrossing(ctx, tx, id, e, channelEmail); err != nil {
			return err
		}
		if ok {
			if _, err := s.cfg.Jobs.InsertTx(ctx, tx, emailArgs(id, e), &river.InsertOpts{MaxAttempts: emailMaxAttempts}); err != nil {
				return fmt.Errorf("enqueue email notice: %w", err)
			}
		}
		email = ok
		return nil
	})
	switch {
	case crossingSubscriptionGone(err):
		// Deleted between the read and the claim.
		log.InfoContext(ctx, "quota crossing of a subscription deleted meanwhile: no notices")
		return 0, nil
	case err != nil:
		s.noticeCounter(channelWebhook, noticeFailed).Inc()
		return 0, fmt.Errorf("handle quota crossing %s: %w", e.ID(), err)
	}

	if hook {
		sent++
		s.noticeCounter(channelWebhook, noticeSent).Inc()
	} else {
		s.noticeCounter(channelWebhook, noticeDuplicate).Inc()
	}
	switch {
	case s.cfg.Mailer == nil:
	case !mail:
		log.WarnContext(ctx, "no email address for a quota notice")
		s.noticeCounter(channelEmail, noticeSkipped).Inc()
	case email:
		sent++
		s.noticeCounter(channelEmail, noticeQueued).Inc()
	default:
		s.noticeCounter(channelEmail, noticeDuplicate).Inc()
	}
	return sent, nil
}

// crossingTarget reads who the notices of subscription id go to, and the
// scale of meter's quota ("" for the request quota); a missing
// subscription is pgx.ErrNoRows.
func (s *Service) crossingTarget(ctx context.Context, id uuid.UUID, meter string) (crossingTarget, error) {
	t := crossingTarget{sub: crossingSubscription{ID: id}}
	q := db.New(s.pool)
	row, err := q.SubscriptionNoticeTarget(ctx, id)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return t, err
		}
		return t, fmt.Errorf("read subscription: %w", err)
	}
	t.orgID, t.sub.APIID, t.sub.PlanID, t.sub.Status, t.apiName = row.OrganizationID, row.ApiID, row.PlanID, row.Status, row.Name
	if row.Email != nil {
		t.email = *row.Email
	}
	if meter != "" {
		field, err := q.MeterFieldOfSubscription(ctx, db.MeterFieldOfSubscriptionParams{SubscriptionID: id, Slug: meter})
		// A meter no longer defined under that slug still gets its
		// notice, in the counter's integers.
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return t, fmt.Errorf("read meter %s: %w", meter, err)
		}
		t.meter = metering.Meter{Slug: meter, Field: field}
	}
	return t, nil
}

// claimCrossing inserts the quota_notices row of the crossing on channel
// inside tx; it reports false when the row was there already, that is the
// notice was claimed before.
func claimCrossing(ctx context.Context, tx pgx.Tx, id uuid.UUID, e enforcement.Crossing, channel string) (bool, error) {
	n, err := db.New(tx).NoticeClaim(ctx, db.NoticeClaimParams{
		SubscriptionID: id, PeriodStart: e.PeriodStart, Threshold: int16(e.Threshold), Quota: e.Quota, Channel: channel, Used: e.Used,
		Meter: e.Meter,
	})
	if err != nil {
		return false, fmt.Errorf("claim %s notice: %w", channel, err)
	}
	return n == 1, nil
}

// QuotaEmailArgs is the email notice of one threshold crossing, enqueued
// by HandleCrossing with the notice's claim. It carries the crossing, not
// the message: the recipient and the API's name are read when it is sent.
type QuotaEmailArgs struct {
	SubscriptionID uuid.UUID `json:"subscription_id"`
	PeriodStart    time.Time `json:"period_start"`
	PeriodEnd      time.Time `json:"period_end"`
	Threshold      int       `json:"threshold"`
	Quota          int64     `json:"quota"`
	Used           int64     `json:"used"`
	Hard           bool      `json:"hard"`
	// Meter is the crossed meter's slug, "" for the request quota.
	Meter string `json:"meter,omitempty"`
}

// Kind implements river.JobArgs.
func (QuotaEmailArgs) Kind() string { return "quota_email" }

// emailArgs is the email job of crossing e of subscription id.
func emailArgs(id uuid.UUID, e enforcement.Crossing) QuotaEmailArgs {
	return QuotaEmailArgs{
		SubscriptionID: id, PeriodStart: e.PeriodStart.UTC(), PeriodEnd: e.PeriodEnd.UTC(),
		Threshold: e.Threshold, Quota: e.Quota, Used: e.Used, Hard: e.Hard, Meter: e.Meter,
	}
}

// QuotaEmailWorker sends the email notices of threshold crossings: one
// SMTP attempt per job run.
type QuotaEmailWorker struct {
	river.WorkerDefaults[QuotaEmailArgs]
	s *Service
}

var _ river.Worker[QuotaEmailArgs] = (*QuotaEmailWorker)(nil)

// QuotaEmailWorker returns the worker of QuotaEmailArgs jobs, to register
// with the River client whose Inserter is Config.Jobs.
func (s *Service) QuotaEmailWorker() *QuotaEmailWorker { return &QuotaEmailWorker{s: s} }

// Timeout bounds one attempt.
func (w *QuotaEmailWorker) Timeout(*river.Job[QuotaEmailArgs]) time.Duration { return emailTimeout }

// Work sends the email of one crossing to the subscriber's current
// address. The email goes out at least once, not exactly once: a crash or
// a lost connection to Postgres after the mail server took the message but
// before River recorded the job complete sends it again on the job's next
// run. Its Message-ID is stable per notice, so mail clients drop the copy.
//
// A refusal for good (an SMTP 5xx reply, or an address the mailer cannot
// take) is logged and counted, and cancels the job: retrying would only
// be refused again. Any other failure (the mail server unreachable, a 4xx
// reply, Postgres) returns the error, and River retries with its backoff
// up to emailMaxAttempts runs. A subscription deleted meanwhile, or whose
// subscriber has no address any more, gets no email.
func (w *QuotaEmailWorker) Work(ctx context.Context, job *river.Job[QuotaEmailArgs]) error {
	s, a := w.s, job.Args
	log := s.log.With("subscription_id", a.SubscriptionID, "threshold", a.Threshold, "quota", a.Quota,
		"job_id", job.ID, "attempt", job.Attempt)
	if s.cfg.Mailer == nil {
		// Queued by a control plane configured with a mailer, worked by
		// one without.
		log.WarnContext(ctx, "no mailer for a queued quota notice email: not sent")
		s.noticeCounter(channelEmail, noticeSkipped).Inc()
		return nil
	}
	t, err := s.crossingTarget(ctx, a.SubscriptionID, a.Meter)
	if errors.Is(err, pgx.ErrNoRows) {
		log.InfoContext(ctx, "quota notice email of a deleted subscription: not sent")
		s.noticeCounter(channelEmail, noticeSkipped).Inc()
		return nil
	}
	if err != nil {
		return fmt.Errorf("send quota notice email: %w", err)
	}
	if !t.mailable() {
		log.WarnContext(ctx, "no email address for a quota notice")
		s.noticeCounter(channelEmail, noticeSkipped).Inc()
		return nil
	}

	err = s.cfg.Mailer.Send(ctx, crossingMessage(t, a))
	switch {
	case err == nil:
		s.noticeCounter(channelEmail, noticeSent).Inc()
		log.InfoContext(ctx, "quota notice email sent")
		return nil
	case notify.Refused(err):
		// Logged here with the subscription, since the job's cancellation
		// keeps the error but not who it was for.
		log.ErrorContext(ctx, "quota notice email refused: not retried", "error", err)
		s.noticeCounter(channelEmail, noticeRefused).Inc()
		return river.JobCancel(fmt.Errorf("send quota notice email: %w", err))
	default:
		s.noticeCounter(channelEmail, noticeFailed).Inc()
		if job.Attempt >= job.MaxAttempts {
			log.ErrorContext(ctx, "quota notice email failed on its last attempt: not sent", "error", err)
		}
		return fmt.Errorf("send quota notice email: %w", err)
	}
}

// crossingMessage is the email of crossing a to target t.
func crossingMessage(t crossingTarget, a QuotaEmailArgs) notify.Message {
	subject, text := crossingMail(t, a)
	m := notify.Message{
		To: []string{t.email}, Subject: subject, Text: text,
		Headers: map[string]string{
			"X-Veil-Notice":          fmt.Sprintf("quota_%d", a.Threshold),
			"X-Veil-Subscription-Id": a.SubscriptionID.String(),
			// Stable per notice, so a mail client drops the copy a
			// retried send delivers.
			"Message-ID": fmt.Sprintf("<quota-%s-%d-%d-%d@notice.veil>", a.SubscriptionID, a.PeriodStart.Unix(), a.Threshold, a.Quota),
		},
	}
	if a.Meter != "" {
		m.Headers["X-Veil-Meter"] = a.Meter
		m.Headers["Message-ID"] = fmt.Sprintf("<quota-%s-%d-%d-%d-%s@notice.veil>", a.SubscriptionID, a.PeriodStart.Unix(), a.Threshold, a.Quota, a.Meter)
	}
	return m
}

// crossingMail is the subject and body of a crossing's email.
func crossingMail(t crossingTarget, e QuotaEmailArgs) (subject, text string) {
	if e.Meter != "" {
		return meterMail(t, e)
	}
	const day = "2 Jan 2006 15:04 MST"
	resets := e.PeriodEnd.UTC().Format(day)
	var what, next string
	switch {
	case e.Threshold < 100:
		subject = fmt.Sprintf("Your %s quota is %d%% used", t.apiName, e.Threshold)
		what = fmt.Sprintf("Your subscription to %s has used %d of its %d requests this period (%d%%).",
			t.apiName, e.Used, e.Quota, e.Threshold)
		if e.Hard {
			next = fmt.Sprintf("Once the quota is used up, requests are refused with 429 until it resets at %s.", resets)
		} else {
			next = fmt.Sprintf("Requests beyond the quota keep working and are billed as overage. The quota resets at %s.", resets)
		}
	case e.Hard:
		subject = fmt.Sprintf("Your %s quota is used up: requests are refused until %s", t.apiName, resets)
		what = fmt.Sprintf("Your subscription to %s has used all %d requests of its quota this period.", t.apiName, e.Quota)
		next = fmt.Sprintf("Requests are refused with 429 until the quota resets at %s.", resets)
	default:
		subject = fmt.Sprintf("Your %s subscription is over quota: overage is billed", t.apiName)
		what = fmt.Sprintf("Your subscription to %s has used all %d requests of its quota this period.", t.apiName, e.Quota)
		next = fmt.Sprintf("Requests keep working; those beyond the quota are billed as overage. The quota resets at %s.", resets)
	}
	text = fmt.Sprintf("%s\n\n%s\n\n"+
		"Subscription: %s\nPeriod: %s to %s\nUsed: %d of %d requests\n\n"+
		"See the current figures with GET /v1/subscriptions/%s/quota. "+
		"To get more requests, change to a plan with a larger quota, or ask the API's provider for a credit.\n",
		what, next, t.sub.ID, e.PeriodStart.UTC().Format(day), resets, e.Used, e.Quota, t.sub.ID)
	return subject, text
}

// meterMail is the subject and body of the email of a meter's crossing: it
// names the meter, and its quantities at the meter's scale.
func meterMail(t crossingTarget, e QuotaEmailArgs) (subject, text string) {
	const day = "2 Jan 2006 15:04 MST"
	resets := e.PeriodEnd.UTC().Format(day)
	quota, used := t.meter.Quantity(e.Quota).String(), t.meter.Quantity(e.Used).String()
	var next string
	switch {
	case e.Threshold < 100:
		subject = fmt.Sprintf("Your %s quota of %s is %d%% used", t.apiName, e.Meter, e.Threshold)
		next = fmt.Sprintf("Once it is used up, usage beyond it is billed as overage. The quota resets at %s.", resets)
		if e.Hard {
			next = fmt.Sprintf("Once it is used up, every request of the subscription is refused with 429 until the quota resets at %s.", resets)
		}
	case e.Hard:
		subject = fmt.Sprintf("Your %s quota of %s is used up: requests are refused until %s", t.apiName, e.Meter, resets)
		next = fmt.Sprintf("Every request of the subscription, not only those metered as %s, is refused with 429 until the quota resets at %s.", e.Meter, resets)
	default:
		subject = fmt.Sprintf("Your %s subscription is over its %s quota: overage is billed", t.apiName, e.Meter)
		next = fmt.Sprintf("Requests keep working; %s beyond the quota is billed as overage. The quota resets at %s.", e.Meter, resets)
	}
	text = fmt.Sprintf("Your subscription to %s has used %s of its quota of %s %s this period (%d%%).\n\n%s\n\n"+
		"Subscription: %s\nMeter: %s\nPeriod: %s to %s\nUsed: %s of %s\n\n"+
		"To get more, change to a plan with a larger quota of %s.\n",
		t.apiName, used, quota, e.Meter, e.Threshold, next, t.sub.ID, e.Meter, e.PeriodStart.UTC().Format(day), resets, used, quota, e.Meter)
	return subject, text
}

// noticeCounter is veil_controlplane_quota_notices_total of a channel and
// result. Notices are rare, so the set's lookup on each is cheap enough.
func (s *Service) noticeCounter(channel, result string) *metrics.Counter {
	return s.cfg.Metrics.GetOrCreateCounter(fmt.Sprintf(`veil_controlplane_quota_notices_total{channel=%q,result=%q}`, channel, result))
}

// crossingSubscriptionGone reports whether err is Postgres refusing a row
// whose subscription is gone.
func crossingSubscriptionGone(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}
