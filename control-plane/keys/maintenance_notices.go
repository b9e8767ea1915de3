package keys

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/keys/internal/db"
)

// Notice kinds (key_notices.kind).
const (
	noticeExpiry7d       = "expiry_7d"
	noticeExpiry3d       = "expiry_3d"
	noticeExpiry1d       = "expiry_1d"
	noticeRotationBefore = "rotation_before"
	noticeRotationAfter  = "rotation_after"
)

// ExpiryNotices gives notice of the keys that expire within 7 days.
func (s *Service) ExpiryNotices(ctx context.Context, rep *MaintenanceReport) error {
	now := s.now().UTC()
	until := now.Add(7 * 24 * time.Hour)
	rows, err := db.New(s.pool).KeyListExpiring(ctx, db.KeyListExpiringParams{After: &now, Until: &until})
	if err != nil {
		return err
	}
	due, err := toKeys(rows)
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range due {
		kind := expiryWindow(k.ExpiresAt.Sub(now))
		days := strings.TrimSuffix(strings.TrimPrefix(kind, "expiry_"), "d")
		n, err := s.notice(ctx, k, kind, *k.ExpiresAt, "key.expiring",
			fmt.Sprintf("Your API key %s expires in %s day(s)", k.Masked, days),
			fmt.Sprintf("The API key %s (%s) of subscription %s expires at %s.\n\n"+
				"Issue a new key with POST /v1/subscriptions/%s/keys, or rotate this one with POST /v1/keys/%s/rotate, "+
				"and deploy it before then. Calls with an expired key are refused with 401.\n",
				k.Masked, displayName(k), k.SubscriptionID, k.ExpiresAt.UTC().Format(time.RFC1123), k.SubscriptionID, k.ID))
		rep.Notices += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// expiryWindow is the notice due for a key expiring in left: the nearest
// window it is inside.
func expiryWindow(left time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case left <= day:
		return noticeExpiry1d
	case left <= 3*day:
		return noticeExpiry3d
	default:
		return noticeExpiry7d
	}
}

func displayName(k Key) string {
	if k.Name == "" {
		return "unnamed"
	}
	return k.Name
}

// notice gives notice about a key, once per (key, kind, event time) and
// channel, each claimed by a key_notices row: a webhook (event, when set)
// delivered exactly once through the outbox, and an email to the
// subscriber, queued as a KeyNoticeEmailArgs job in the claim's
// transaction. Maintenance never waits on the mail server: a slow or
// unreachable one holds up the job, not the run, and the job sends the
// email at least once (see KeyNoticeEmailWorker.Work).
//
// It returns how many notices it claimed: the webhook published and the
// email queued, whether or not the email has gone out yet. No email is
// queued without a Mailer, or for a subscriber without an address.
func (s *Service) notice(ctx context.Context, k Key, kind string, eventAt time.Time, event, subject, text string) (int, error) {
	sent := 0
	claim := func(tx pgx.Tx, channel string) (bool, error) {
		n, err := db.New(tx).KeyNoticeClaim(ctx, db.KeyNoticeClaimParams{KeyID: k.ID, Kind: db.KeyNoticeKind(kind), Channel: channel, EventAt: eventAt})
		if err != nil {
			return false, fmt.Errorf("claim notice: %w", err)
		}
		return n == 1, nil
	}
	if event != "" {
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			ok, err := claim(tx, "webhook")
			if err != nil || !ok {
				return err
			}
			sent++
			return s.cfg.Publisher.Publish(ctx, tx, k.org, event, map[string]any{
				"key": k.audited(), "notice": kind, "at": eventAt,
			})
		})
		if err != nil {
			s.metrics.noticeErrors.Inc()
			return 0, fmt.Errorf("webhook notice %s for key %s: %w", kind, k.ID, err)
		}
		s.metrics.noticesSent.Add(sent)
	}
	if s.cfg.Mailer == nil {
		return sent, nil
	}
	// Checked here as well as when sending, so that a subscriber without
	// an address has nothing claimed: the notice can still go out should
	// they get one before the event.
	_, err := s.noticeRecipient(ctx, k.ID)
	switch {
	case errors.Is(err, errNoRecipient):
		s.log.WarnContext(ctx, "no email address for a key notice", "key_id", k.ID, "notice", kind)
		return sent, nil
	case errors.Is(err, pgx.ErrNoRows):
		// Deleted meanwhile.
		return sent, nil
	case err != nil:
		s.metrics.noticeErrors.Inc()
		return sent, fmt.Errorf("email notice %s for key %s: %w", kind, k.ID, err)
	}
	queued := false
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		queued = false
		ok, err := claim(tx, "email")
		if err != nil || !ok {
			return err
		}
		args := KeyNoticeEmailArgs{KeyID: k.ID, Notice: kind, EventAt: eventAt.UTC(), Subject: subject, Text: text}
		if _, err := s.cfg.Jobs.InsertTx(ctx, tx, args, &river.InsertOpts{MaxAttempts: keyEmailMaxAttempts}); err != nil {
			return fmt.Errorf("enqueue email: %w", err)
		}
		queued = true
		return nil
	})
	if err != nil {
		s.metrics.noticeErrors.Inc()
		return sent, fmt.Errorf("email notice %s for key %s: %w", kind, k.ID, err)
	}
	if queued {
		sent++
	}
	return sent, nil
}
