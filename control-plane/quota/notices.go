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

	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/internal/quotaevent"
)

// EventThresholdCrossed is the webhook event type of a quota notice.
const EventThresholdCrossed = "quota.threshold_crossed"

// Notice channels (quota_notices.channel).
const (
	channelWebhook = "webhook"
	channelEmail   = "email"
)

// Results of a notice, the result label of
// veil_controlplane_quota_notices_total.
const (
	noticeSent      = "sent"
	noticeDuplicate = "duplicate"
	noticeSkipped   = "skipped"
	noticeFailed    = "failed"
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
}

// crossingTarget is who a crossing's notices go to.
type crossingTarget struct {
	sub     crossingSubscription
	orgID   uuid.UUID
	apiName string
	// email is the subscriber's address, "" when the subscriber has no
	// user row.
	email string
}

// HandleCrossing turns one threshold crossing into its notices: a
// quota.threshold_crossed webhook to the subscribing organization and an
// email to the subscriber. Each goes out once per (subscription, period,
// threshold, quota, channel), claimed by a quota_notices row: the webhook
// exactly once (the claim commits with the outbox delivery Publish writes),
// the email at least once (claimed in a transaction around the send, so a
// crash between sending and committing sends it again on the next try, as
// key notices do). Replays and duplicates of e send nothing more.
//
// sent counts the notices that went out. A subscription that no longer
// exists gets none and is not an error. An event whose subscription id is
// not a UUID fails with an error matching quotaevent.ErrInvalid: retrying
// it cannot help.
func (s *Service) HandleCrossing(ctx context.Context, e quotaevent.Event) (sent int, err error) {
	if err := e.Validate(); err != nil {
		return 0, fmt.Errorf("handle quota crossing: %w", err)
	}
	id, err := uuid.Parse(e.SubscriptionID)
	if err != nil {
		return 0, fmt.Errorf("handle quota crossing: %w: subscription_id %q is not a UUID", quotaevent.ErrInvalid, e.SubscriptionID)
	}
	log := s.log.With("subscription_id", id, "event_id", e.ID(), "threshold", e.Threshold, "quota", e.Quota)
	target, err := s.crossingTarget(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		log.InfoContext(ctx, "quota crossing of an unknown subscription: no notices")
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("handle quota crossing %s: %w", e.ID(), err)
	}

	ok, err := s.crossingWebhook(ctx, id, target, e)
	switch {
	case crossingSubscriptionGone(err):
		// Deleted between the read and the claim.
		log.InfoContext(ctx, "quota crossing of a subscription deleted meanwhile: no notices")
		return 0, nil
	case err != nil:
		s.noticeCounter(channelWebhook, noticeFailed).Inc()
		return 0, fmt.Errorf("webhook notice %s: %w", e.ID(), err)
	case ok:
		sent++
		s.noticeCounter(channelWebhook, noticeSent).Inc()
	default:
		s.noticeCounter(channelWebhook, noticeDuplicate).Inc()
	}

	if s.cfg.Mailer == nil {
		return sent, nil
	}
	// Users whose token carried no email are provisioned with an address
	// under .invalid (RFC 2606): nobody to write to.
	if target.email == "" || strings.HasSuffix(target.email, ".invalid") {
		log.WarnContext(ctx, "no email address for a quota notice")
		s.noticeCounter(channelEmail, noticeSkipped).Inc()
		return sent, nil
	}
	ok, err = s.crossingEmail(ctx, id, target, e)
	switch {
	case errors.Is(err, notify.ErrInvalidMessage):
		// The address on file cannot take mail: retrying would hold up
		// every crossing behind this one for nothing.
		log.ErrorContext(ctx, "quota notice email refused by the mailer", "error", err)
		s.noticeCounter(channelEmail, noticeSkipped).Inc()
	case crossingSubscriptionGone(err):
		log.InfoContext(ctx, "quota crossing of a subscription deleted meanwhile: no email")
	case err != nil:
		s.noticeCounter(channelEmail, noticeFailed).Inc()
		return sent, fmt.Errorf("email notice %s: %w", e.ID(), err)
	case ok:
		sent++
		s.noticeCounter(channelEmail, noticeSent).Inc()
	default:
		s.noticeCounter(channelEmail, noticeDuplicate).Inc()
	}
	return sent, nil
}

// crossingTarget reads who the notices of subscription id go to; a
// missing subscription is pgx.ErrNoRows.
func (s *Service) crossingTarget(ctx context.Context, id uuid.UUID) (crossingTarget, error) {
	t := crossingTarget{sub: crossingSubscription{ID: id}}
	var email *string
	err := s.pool.QueryRow(ctx, `SELECT s.organization_id, s.api_id, v.plan_id, s.status::text, a.name, u.email
		FROM subscriptions s
		JOIN plan_versions v ON v.id = s.plan_version_id
		JOIN apis a ON a.id = s.api_id
		LEFT JOIN users u ON u.subject = s.subscriber
		WHERE s.id = $1`, id).Scan(&t.orgID, &t.sub.APIID, &t.sub.PlanID, &t.sub.Status, &t.apiName, &email)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return t, err
		}
		return t, fmt.Errorf("read subscription: %w", err)
	}
	if email != nil {
		t.email = *email
	}
	return t, nil
}

// claimCrossing inserts the quota_notices row of the crossing on channel
// inside tx; it reports false when the row was there already, that is the
// notice went out before.
func claimCrossing(ctx context.Context, tx pgx.Tx, id uuid.UUID, e quotaevent.Event, channel string) (bool, error) {
	tag, err := tx.Exec(ctx, `INSERT INTO quota_notices (subscription_id, period_start, threshold, quota, channel, used)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
		id, e.PeriodStart, e.Threshold, e.Quota, channel, e.Used)
	if err != nil {
		return false, fmt.Errorf("claim %s notice: %w", channel, err)
	}
	return tag.RowsAffected() == 1, nil
}

// crossingWebhook claims and publishes the webhook in one transaction.
func (s *Service) crossingWebhook(ctx context.Context, id uuid.UUID, t crossingTarget, e quotaevent.Event) (bool, error) {
	claimed := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		ok, err := claimCrossing(ctx, tx, id, e, channelWebhook)
		if err != nil || !ok {
			return err
		}
		claimed = true
		return s.cfg.Publisher.Publish(ctx, tx, t.orgID, EventThresholdCrossed, crossingNotice{
			Subscription: t.sub, Threshold: e.Threshold, Quota: e.Quota, Used: e.Used, Hard: e.Hard, Blocked: e.Blocked(),
			PeriodStart: e.PeriodStart.UTC(), PeriodEnd: e.PeriodEnd.UTC(), ResetsAt: e.PeriodEnd.UTC(),
		})
	})
	return claimed && err == nil, err
}

// crossingEmail claims the email and sends it inside one transaction: the
// claim commits only once the mail server took the message.
func (s *Service) crossingEmail(ctx context.Context, id uuid.UUID, t crossingTarget, e quotaevent.Event) (bool, error) {
	subject, text := crossingMail(t, e)
	claimed := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		ok, err := claimCrossing(ctx, tx, id, e, channelEmail)
		if err != nil || !ok {
			return err
		}
		claimed = true
		return s.cfg.Mailer.Send(ctx, notify.Message{
			To: []string{t.email}, Subject: subject, Text: text,
			Headers: map[string]string{
				"X-Veil-Notice":          fmt.Sprintf("quota_%d", e.Threshold),
				"X-Veil-Subscription-Id": id.String(),
				// Stable per notice, so a mail client drops the copy a
				// retried send delivers.
				"Message-ID": fmt.Sprintf("<quota-%s-%d-%d-%d@notice.veil>", id, e.PeriodStart.Unix(), e.Threshold, e.Quota),
			},
		})
	})
	return claimed && err == nil, err
}

// crossingMail is the subject and body of a crossing's email.
func crossingMail(t crossingTarget, e quotaevent.Event) (subject, text string) {
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
