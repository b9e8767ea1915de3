package keys

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

	"github.com/veil-platform/veil/control-plane/keys/internal/db"
	"github.com/veil-platform/veil/control-plane/notify"
)

// Key notice email jobs.
const (
	// keyEmailMaxAttempts bounds the sends of one email: with River's
	// default backoff (attempt⁴ seconds) the last falls some four hours
	// after the first, long enough to ride out a mail server's outage.
	keyEmailMaxAttempts = 10
	// keyEmailTimeout bounds one attempt: reading the recipient and the
	// SMTP dialog.
	keyEmailTimeout = 30 * time.Second
)

// errNoRecipient: the key's subscriber has no address to write to.
var errNoRecipient = errors.New("no email address for the subscriber")

// KeyNoticeEmailArgs is the email of one key notice, enqueued by
// maintenance with the notice's key_notices claim. Subject and Text are
// the message as written then; they name the key by its masked form and
// id only, never its plaintext, since job args are stored in the clear.
// The recipient is read when the email is sent.
type KeyNoticeEmailArgs struct {
	KeyID uuid.UUID `json:"key_id"`
	// Notice is the notice's kind (key_notices.kind), e.g. "expiry_7d";
	// the field cannot be called Kind, which is the job kind's method.
	Notice string `json:"notice"`
	// EventAt is the event the notice is about: the expiry or the
	// rotation.
	EventAt time.Time `json:"event_at"`
	Subject string    `json:"subject"`
	Text    string    `json:"text"`
}

// Kind implements river.JobArgs.
func (KeyNoticeEmailArgs) Kind() string { return "key_notice_email" }

// KeyNoticeEmailWorker sends the emails of key notices: one SMTP attempt
// per job run.
type KeyNoticeEmailWorker struct {
	river.WorkerDefaults[KeyNoticeEmailArgs]
	s       *Service
	refused *metrics.Counter
}

var _ river.Worker[KeyNoticeEmailArgs] = (*KeyNoticeEmailWorker)(nil)

// KeyNoticeEmailWorker returns the worker of KeyNoticeEmailArgs jobs, to
// register with the River client whose Inserter is Config.Jobs.
func (s *Service) KeyNoticeEmailWorker() *KeyNoticeEmailWorker {
	return &KeyNoticeEmailWorker{
		s:       s,
		refused: s.cfg.Metrics.GetOrCreateCounter(`veil_controlplane_key_notices_total{result="refused"}`),
	}
}

// Timeout bounds one attempt, so a mail server that never answers costs
// one job run, not the worker.
func (w *KeyNoticeEmailWorker) Timeout(*river.Job[KeyNoticeEmailArgs]) time.Duration {
	return keyEmailTimeout
}

// Work sends the email of one key notice to the subscriber's current
// address. The email goes out at least once, not exactly once: a crash or
// a lost connection to Postgres after the mail server took the message but
// before River recorded the job complete sends it again on the job's next
// run. Its Message-ID is stable per notice, so mail clients drop the copy.
//
// A refusal for good (an SMTP 5xx reply to the recipient or the message,
// or an address the mailer cannot take) is logged and counted, and
// cancels the job: retrying would only be refused again. Any other failure
// (the mail server unreachable or slow, a 4xx reply, Postgres) returns the
// error, and River retries with its backoff up to keyEmailMaxAttempts
// runs. A key deleted meanwhile, or whose subscriber has no address any
// more, gets no email.
func (w *KeyNoticeEmailWorker) Work(ctx context.Context, job *river.Job[KeyNoticeEmailArgs]) error {
	s, a := w.s, job.Args
	log := s.log.With("key_id", a.KeyID, "notice", a.Notice, "job_id", job.ID, "attempt", job.Attempt)
	if s.cfg.Mailer == nil {
		// Queued by a control plane configured with a mailer, worked by
		// one without.
		log.WarnContext(ctx, "no mailer for a queued key notice email: not sent")
		return nil
	}
	to, err := s.noticeRecipient(ctx, a.KeyID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		log.InfoContext(ctx, "key notice email of a deleted key: not sent")
		return nil
	case errors.Is(err, errNoRecipient):
		log.WarnContext(ctx, "no email address for a key notice")
		return nil
	case err != nil:
		s.metrics.noticeErrors.Inc()
		return fmt.Errorf("send key notice email: %w", err)
	}

	err = s.cfg.Mailer.Send(ctx, keyNoticeMessage(to, a))
	switch {
	case err == nil:
		s.metrics.noticesSent.Inc()
		log.InfoContext(ctx, "key notice email sent")
		return nil
	case notify.Refused(err):
		// Logged here with the key, since the job's cancellation keeps the
		// error but not who it was for.
		log.ErrorContext(ctx, "key notice email refused: not retried", "error", err)
		w.refused.Inc()
		return river.JobCancel(fmt.Errorf("send key notice email: %w", err))
	default:
		s.metrics.noticeErrors.Inc()
		if job.Attempt >= job.MaxAttempts {
			log.ErrorContext(ctx, "key notice email failed on its last attempt: not sent", "error", err)
		}
		return fmt.Errorf("send key notice email: %w", err)
	}
}

// noticeRecipient is the address of the subscriber of key id's
// subscription: pgx.ErrNoRows when the key is gone, errNoRecipient when
// there is nobody to write to.
func (s *Service) noticeRecipient(ctx context.Context, id uuid.UUID) (string, error) {
	to, err := db.New(s.pool).KeyNoticeRecipient(ctx, id)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", err
	case err != nil:
		return "", fmt.Errorf("find notice recipient: %w", err)
	}
	// Users whose token carried no email are provisioned with an address
	// under .invalid (RFC 2606): nobody reads it.
	if to == nil || *to == "" || strings.HasSuffix(*to, ".invalid") {
		return "", errNoRecipient
	}
	return *to, nil
}

// keyNoticeMessage is the email of notice a to address to.
func keyNoticeMessage(to string, a KeyNoticeEmailArgs) notify.Message {
	return notify.Message{
		To: []string{to}, Subject: a.Subject, Text: a.Text,
		Headers: map[string]string{
			"X-Veil-Notice": a.Notice,
			"X-Veil-Key-Id": a.KeyID.String(),
			// Stable per notice, so a mail client drops the copy a
			// retried send delivers.
			"Message-ID": fmt.Sprintf("<key-%s-%s-%d@notice.veil>", a.KeyID, a.Notice, a.EventAt.Unix()),
		},
	}
}
