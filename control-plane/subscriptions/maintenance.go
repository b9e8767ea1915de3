package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys"
)

// MaintenanceReport counts what one maintenance run did.
type MaintenanceReport struct {
	PeriodsRolled int `json:"periods_rolled"`
	TrialsEnded   int `json:"trials_ended"`
	Canceled      int `json:"canceled"`
	GraceEnded    int `json:"grace_ended"`
	Expired       int `json:"expired"`
	Renewed       int `json:"renewed"`
	Rotated       int `json:"rotated"`
	Notices       int `json:"notices"`
	// Errors lists the steps that failed; the next run tries them again.
	Errors []string `json:"errors"`
}

// Notice kinds (key_notices.kind).
const (
	noticeExpiry7d       = "expiry_7d"
	noticeExpiry3d       = "expiry_3d"
	noticeExpiry1d       = "expiry_1d"
	noticeRotationBefore = "rotation_before"
	noticeRotationAfter  = "rotation_after"
)

// RunMaintenance does the scheduled work, each item in its own
// transaction so one failure does not hold back the rest:
//
//   - subscriptions: trials end, periods roll over (or the subscription
//     cancels, if asked to at period end);
//   - rotated-out keys whose grace has passed are revoked;
//   - keys past their expiry expire, or are renewed if they auto-renew;
//   - expiry notices go out 7, 3 and 1 days before (the nearest window
//     only, each once per expiry, by webhook and by email, the email
//     queued as a job: see notice);
//   - keys with automatic rotation are announced RotationNotice before
//     they are due and rotated when due.
//
// It is idempotent: running it twice at the same instant does nothing more.
func (s *Service) RunMaintenance(ctx context.Context) (MaintenanceReport, error) {
	rep := MaintenanceReport{Errors: []string{}}
	steps := []struct {
		name string
		fn   func(context.Context, *MaintenanceReport) error
	}{
		{"subscription periods", s.rollPeriods},
		{"rotation grace", s.endGrace},
		{"key expiry", s.expireKeys},
		{"expiry notices", s.expiryNotices},
		{"automatic rotation", s.autoRotate},
	}
	for _, st := range steps {
		if err := st.fn(ctx, &rep); err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			rep.Errors = append(rep.Errors, st.name+": "+err.Error())
			s.log.ErrorContext(ctx, "maintenance step failed", "step", st.name, "error", err)
		}
	}
	return rep, nil
}

// ids runs a query returning ids.
func (s *Service) ids(ctx context.Context, q string, args ...any) ([]uuid.UUID, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
}

// each runs fn for every id in its own transaction, collecting errors.
func (s *Service) each(ctx context.Context, ids []uuid.UUID, fn func(tx pgx.Tx, id uuid.UUID) error) error {
	var errs []error
	for _, id := range ids {
		if err := s.inTx(ctx, func(tx pgx.Tx) error { return fn(tx, id) }); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Service) rollPeriods(ctx context.Context, rep *MaintenanceReport) error {
	now := s.now().UTC()
	ids, err := s.ids(ctx, `SELECT id FROM subscriptions WHERE status <> 'canceled'
		AND (current_period_end <= $1 OR (status = 'trialing' AND trial_ends_at <= $1)) ORDER BY id`, now)
	if err != nil {
		return err
	}
	return s.each(ctx, ids, func(tx pgx.Tx, id uuid.UUID) error {
		sub, err := s.lockSub(ctx, tx, id)
		if err != nil || !sub.Status.live() {
			return err
		}
		if sub.Status == StatusTrialing && sub.TrialEndsAt != nil && !sub.TrialEndsAt.After(now) {
			if sub, err = s.setStatus(ctx, tx, identity.System, sub, StatusActive, "trial ended"); err != nil {
				return err
			}
			rep.TrialsEnded++
		}
		if sub.CurrentPeriodEnd.After(now) {
			return nil
		}
		if sub.CancelAtPeriodEnd {
			rep.Canceled++
			_, err := s.setStatus(ctx, tx, identity.System, sub, StatusCanceled, "canceled at period end")
			return err
		}
		start, end := sub.CurrentPeriodStart, sub.CurrentPeriodEnd
		for !end.After(now) {
			start, end = end, addPeriod(end, sub.terms.Interval)
		}
		if _, err := tx.Exec(ctx, `UPDATE subscriptions SET current_period_start = $2, current_period_end = $3,
				sync_version = sync_version + 1, updated_at = now() WHERE id = $1`, id, start, end); err != nil {
			return fmt.Errorf("roll period: %w", err)
		}
		if err := s.enqueueSubSync(ctx, tx, id); err != nil {
			return err
		}
		rep.PeriodsRolled++
		return s.record(ctx, tx, identity.System, sub.OrganizationID, "subscription.period_renewed", "subscription", id,
			map[string]time.Time{"period_start": sub.CurrentPeriodStart, "period_end": sub.CurrentPeriodEnd},
			map[string]time.Time{"period_start": start, "period_end": end},
			"subscription.renewed", map[string]any{"subscription_id": id, "period_start": start, "period_end": end})
	})
}

func (s *Service) endGrace(ctx context.Context, rep *MaintenanceReport) error {
	ids, err := s.ids(ctx, `SELECT id FROM api_keys WHERE grace_until IS NOT NULL AND grace_until <= $1
		AND state IN ('active', 'suspended') ORDER BY id`, s.now().UTC())
	if err != nil {
		return err
	}
	return s.each(ctx, ids, func(tx pgx.Tx, id uuid.UUID) error {
		k, err := s.lockKey(ctx, tx, id)
		if err != nil || k.State.Terminal() {
			return err
		}
		if _, err := s.transition(ctx, tx, identity.System, k, keys.StateRevoked, "rotation grace ended"); err != nil {
			return err
		}
		rep.GraceEnded++
		s.metrics.graced.Inc()
		return nil
	})
}

func (s *Service) expireKeys(ctx context.Context, rep *MaintenanceReport) error {
	now := s.now().UTC()
	ids, err := s.ids(ctx, `SELECT id FROM api_keys WHERE expires_at <= $1 AND state IN ('active', 'suspended') ORDER BY id`, now)
	if err != nil {
		return err
	}
	return s.each(ctx, ids, func(tx pgx.Tx, id uuid.UUID) error {
		k, err := s.lockKey(ctx, tx, id)
		if err != nil || k.State.Terminal() || k.ExpiresAt == nil || k.ExpiresAt.After(now) {
			return err
		}
		if !k.AutoRenew || k.RenewDays == nil || k.GraceUntil != nil {
			if _, err := s.transition(ctx, tx, identity.System, k, keys.StateExpired, "expired"); err != nil {
				return err
			}
			rep.Expired++
			s.metrics.expired.Inc()
			return nil
		}
		next := *k.ExpiresAt
		for !next.After(now) {
			next = next.AddDate(0, 0, *k.RenewDays)
		}
		if _, err := tx.Exec(ctx, `UPDATE api_keys SET expires_at = $2, sync_version = sync_version + 1, updated_at = now()
			WHERE id = $1`, id, next); err != nil {
			return fmt.Errorf("renew key: %w", err)
		}
		if err := s.enqueueKeySync(ctx, tx, id); err != nil {
			return err
		}
		rep.Renewed++
		s.metrics.renewed.Inc()
		after, err := s.lockKey(ctx, tx, id)
		if err != nil {
			return err
		}
		return s.record(ctx, tx, identity.System, k.org, "key.renew", "key", id,
			map[string]any{"expires_at": k.ExpiresAt}, map[string]any{"expires_at": next},
			"key.renewed", map[string]any{"key": after.audited()})
	})
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

func (s *Service) expiryNotices(ctx context.Context, rep *MaintenanceReport) error {
	now := s.now().UTC()
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+keyFrom+` WHERE k.state IN ('active', 'suspended') AND NOT k.auto_renew
		AND k.grace_until IS NULL AND k.expires_at > $1 AND k.expires_at <= $2 ORDER BY k.id`, now, now.Add(7*24*time.Hour))
	if err != nil {
		return err
	}
	due, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Key, error) { return scanKey(r) })
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

func displayName(k Key) string {
	if k.Name == "" {
		return "unnamed"
	}
	return k.Name
}

func (s *Service) autoRotate(ctx context.Context, rep *MaintenanceReport) error {
	now := s.now().UTC()
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+keyFrom+` WHERE k.auto_rotate AND k.state = 'active' AND k.grace_until IS NULL
		AND coalesce(k.last_rotated_at, k.created_at) + make_interval(days => k.rotate_every_days) <= $1 ORDER BY k.id`,
		now.Add(s.cfg.RotationNotice))
	if err != nil {
		return err
	}
	candidates, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Key, error) { return scanKey(r) })
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range candidates {
		since := k.CreatedAt
		if k.LastRotatedAt != nil {
			since = *k.LastRotatedAt
		}
		due := since.AddDate(0, 0, k.RotateEvery).UTC()
		if due.After(now) {
			n, err := s.notice(ctx, k, noticeRotationBefore, due, "key.rotation_due",
				fmt.Sprintf("Your API key %s will be rotated on %s", k.Masked, due.Format("2 Jan 2006")),
				fmt.Sprintf("The API key %s (%s) is set to rotate automatically every %d days; the next rotation is at %s.\n\n"+
					"Then a successor key is issued: reveal it once with POST /v1/keys/{successor id}/reveal and deploy it. "+
					"This key keeps working for %s after the rotation. Rotate it yourself before then with POST /v1/keys/%s/rotate "+
					"to choose the moment.\n",
					k.Masked, displayName(k), k.RotateEvery, due.Format(time.RFC1123), s.cfg.AutoRotateGrace, k.ID))
			rep.Notices += n
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if s.seal == nil {
			s.log.WarnContext(ctx, "automatic key rotation is due but no key-seal secret is configured", "key_id", k.ID)
			continue
		}
		var next Key
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			old, err := s.lockKey(ctx, tx, k.ID)
			if err != nil {
				return err
			}
			if old.State != keys.StateActive || old.GraceUntil != nil || !old.AutoRotate {
				return nil
			}
			next, err = s.rotate(ctx, tx, identity.System, old, s.cfg.AutoRotateGrace, s.seal)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("rotate %s: %w", k.ID, err))
			continue
		}
		if next.ID == uuid.Nil {
			continue
		}
		rep.Rotated++
		s.metrics.rotated.Inc()
		old, err := s.GetKey(ctx, identity.System, k.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := s.notice(ctx, old, noticeRotationAfter, due, "",
			fmt.Sprintf("Your API key %s was rotated", k.Masked),
			fmt.Sprintf("The API key %s (%s) was rotated automatically. Its successor is %s (id %s).\n\n"+
				"Reveal the successor once with POST /v1/keys/%s/reveal and deploy it: the old key stops working at %s.\n",
				k.Masked, displayName(k), next.Masked, next.ID, next.ID, old.GraceUntil.UTC().Format(time.RFC1123)))
		rep.Notices += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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
		tag, err := tx.Exec(ctx, `INSERT INTO key_notices (key_id, kind, channel, event_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, k.ID, kind, channel, eventAt)
		if err != nil {
			return false, fmt.Errorf("claim notice: %w", err)
		}
		return tag.RowsAffected() == 1, nil
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

// MaintenanceArgs is the scheduled maintenance run.
type MaintenanceArgs struct{}

// Kind implements river.JobArgs.
func (MaintenanceArgs) Kind() string { return "key_maintenance" }

// MaintenanceWorker runs MaintenanceArgs jobs.
type MaintenanceWorker struct {
	river.WorkerDefaults[MaintenanceArgs]
	s *Service
}

// MaintenanceWorker returns the worker of scheduled maintenance.
func (s *Service) MaintenanceWorker() *MaintenanceWorker { return &MaintenanceWorker{s: s} }

// Timeout bounds one run below the control plane's rescue of stuck jobs
// (a longer run would be taken for a dead one and run twice). Every item
// is its own transaction, so a run that is cut short loses nothing: the
// next one carries on.
func (w *MaintenanceWorker) Timeout(*river.Job[MaintenanceArgs]) time.Duration {
	return 50 * time.Second
}

// Work runs maintenance and logs the report.
func (w *MaintenanceWorker) Work(ctx context.Context, _ *river.Job[MaintenanceArgs]) error {
	rep, err := w.s.RunMaintenance(ctx)
	if err != nil {
		return err
	}
	w.s.log.Log(ctx, slogLevel(len(rep.Errors) > 0), "key maintenance", "periods_rolled", rep.PeriodsRolled,
		"trials_ended", rep.TrialsEnded, "canceled", rep.Canceled, "grace_ended", rep.GraceEnded, "expired", rep.Expired,
		"renewed", rep.Renewed, "rotated", rep.Rotated, "notices", rep.Notices, "errors", len(rep.Errors))
	return nil
}

// PeriodRollArgs rolls the billing periods that have ended, more often
// than the rest of maintenance: until a period is rolled, the gateway's
// record still names the old one, so the new period is counted but its
// quota is not enforced.
type PeriodRollArgs struct{}

// Kind implements river.JobArgs.
func (PeriodRollArgs) Kind() string { return "subscription_period_roll" }

// PeriodRollWorker runs PeriodRollArgs jobs.
type PeriodRollWorker struct {
	river.WorkerDefaults[PeriodRollArgs]
	s *Service
}

// PeriodRollWorker returns the worker of period rolls.
func (s *Service) PeriodRollWorker() *PeriodRollWorker { return &PeriodRollWorker{s: s} }

// Timeout is MaintenanceWorker's.
func (w *PeriodRollWorker) Timeout(*river.Job[PeriodRollArgs]) time.Duration { return 50 * time.Second }

// Work rolls the ended periods (and ends due trials, and cancels at period
// end), as maintenance does.
func (w *PeriodRollWorker) Work(ctx context.Context, _ *river.Job[PeriodRollArgs]) error {
	rep := MaintenanceReport{Errors: []string{}}
	if err := w.s.rollPeriods(ctx, &rep); err != nil {
		return err
	}
	if rep.PeriodsRolled+rep.TrialsEnded+rep.Canceled > 0 {
		w.s.log.InfoContext(ctx, "billing periods rolled", "periods_rolled", rep.PeriodsRolled,
			"trials_ended", rep.TrialsEnded, "canceled", rep.Canceled)
	}
	return nil
}

func slogLevel(warn bool) slog.Level {
	if warn {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}
