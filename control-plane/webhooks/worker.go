package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/veil-platform/veil/control-plane/webhooks/internal/db"
)

// DeliveryWorker sends deliveries: one HTTP attempt per job run.
type DeliveryWorker struct {
	river.WorkerDefaults[DeliveryArgs]
	s *Service
}

var _ river.Worker[DeliveryArgs] = (*DeliveryWorker)(nil)

// Worker returns the worker to register with the River client.
func (s *Service) Worker() *DeliveryWorker { return &DeliveryWorker{s: s} }

// NextRetry implements the backoff: RetryBase·2^(attempt-1), capped at one
// hour, with full jitter so endpoints that come back are not hit by every
// retry at once.
func (w *DeliveryWorker) NextRetry(job *river.Job[DeliveryArgs]) time.Time {
	return time.Now().Add(w.s.backoff(job.Attempt))
}

func (s *Service) backoff(attempt int) time.Duration {
	d := s.cfg.RetryBase
	for i := 1; i < attempt && d < maxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, maxRetryDelay)
	return rand.N(d)
}

// Timeout bounds one attempt: the HTTP timeout plus room to record it.
func (w *DeliveryWorker) Timeout(*river.Job[DeliveryArgs]) time.Duration {
	if t := w.s.client.Timeout; t > 0 {
		return t + 15*time.Second
	}
	return 0
}

// maxResponseBytes is how much of a response is read: enough to reuse the
// connection after a short answer, never a large body.
const maxResponseBytes = 64 << 10

// maxErrorLength bounds the error text kept with an attempt.
const maxErrorLength = 1000

// target is a delivery with what sending it needs.
type target struct {
	msgID      string
	payload    []byte
	status     DeliveryStatus
	endpointID uuid.UUID
	url        string
	secret     string
	enabled    bool
}

// result is the outcome of one HTTP attempt.
type result struct {
	code     *int
	err      string
	duration time.Duration
}

func (r result) ok() bool { return r.code != nil && *r.code >= 200 && *r.code < 300 }

// Work makes one attempt. A non-2xx answer or a transport error returns an
// error, so River retries, except on the last attempt, which marks the
// delivery failed and ends the job.
func (w *DeliveryWorker) Work(ctx context.Context, job *river.Job[DeliveryArgs]) error {
	s := w.s
	id := job.Args.DeliveryID
	row, err := db.New(s.pool).DeliveryTarget(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		// Deleting an endpoint deletes its deliveries: nothing is left to
		// send or to mark.
		s.log.InfoContext(ctx, "webhook delivery gone with its endpoint", "delivery_id", id)
		return nil
	}
	if err != nil {
		return fmt.Errorf("load webhook delivery %s: %w", id, err)
	}
	t := target{
		msgID: row.MessageID, payload: row.Payload, status: DeliveryStatus(row.Status),
		endpointID: row.EndpointID, url: row.URL, secret: row.Secret, enabled: row.Enabled,
	}
	if t.status != StatusPending {
		return nil
	}
	if !t.enabled {
		return s.fail(ctx, job, t, "endpoint disabled")
	}

	res := s.send(ctx, t)
	s.metrics.duration.Update(res.duration.Seconds())
	status := StatusPending
	switch {
	case res.ok():
		s.metrics.attemptsOK.Inc()
		status = StatusSucceeded
	case res.code != nil && *res.code == http.StatusGone:
		// The spec's signal that the receiver wants no more webhooks.
		s.metrics.attemptsFailed.Inc()
		res.err += "; endpoint disabled"
		status = StatusFailed
	case job.Attempt >= job.MaxAttempts:
		s.metrics.attemptsFailed.Inc()
		status = StatusFailed
	default:
		s.metrics.attemptsFailed.Inc()
	}

	// Record even when the job's context ended (shutdown, timeout): the
	// attempt happened.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	gone, err := s.record(rctx, job, t.endpointID, res, status)
	if err != nil {
		return err
	}
	if gone {
		return nil
	}
	log := s.log.With("delivery_id", id, "message_id", t.msgID, "endpoint_id", t.endpointID, "attempt", job.Attempt)
	switch status {
	case StatusSucceeded:
		s.metrics.succeeded.Inc()
		log.DebugContext(ctx, "webhook delivered", "status_code", *res.code)
		return nil
	case StatusFailed:
		s.metrics.failed.Inc()
		log.WarnContext(ctx, "webhook delivery failed", "error", res.err)
		return nil
	}
	return fmt.Errorf("deliver webhook %s: %s", t.msgID, res.err)
}

// send POSTs the delivery once.
func (s *Service) send(ctx context.Context, t target) result {
	body := []byte(compactJSON(t.payload))
	ts := s.now()
	sig, err := Sign(t.secret, t.msgID, ts, body)
	if err != nil {
		return result{err: err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return result{err: truncate(fmt.Sprintf("build request: %v", err))}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Veil-Webhooks/1")
	req.Header.Set(HeaderID, t.msgID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(HeaderSignature, sig)
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return result{err: truncate(err.Error()), duration: time.Since(start)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	_ = resp.Body.Close()
	res := result{code: &resp.StatusCode, duration: time.Since(start)}
	switch {
	case res.ok():
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		res.err = truncate(fmt.Sprintf("status %d: redirect to %q not followed; update the endpoint URL",
			resp.StatusCode, resp.Header.Get("Location")))
	default:
		res.err = fmt.Sprintf("status %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return res
}

// record writes the attempt and the delivery's new state; gone reports a
// delivery deleted (with its endpoint) while the attempt ran.
func (s *Service) record(ctx context.Context, job *river.Job[DeliveryArgs], endpointID uuid.UUID, res result, status DeliveryStatus) (gone bool, err error) {
	id := job.Args.DeliveryID
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		n, err := q.DeliveryRecordAttempt(ctx, db.DeliveryRecordAttemptParams{
			ID: id, LastStatusCode: res.code, LastError: res.err, Status: string(status),
		})
		if err != nil {
			return fmt.Errorf("update webhook delivery: %w", err)
		}
		if n == 0 {
			gone = true
			return nil
		}
		err = q.AttemptInsert(ctx, db.AttemptInsertParams{
			DeliveryID: id, StatusCode: res.code, Error: res.err, DurationMS: int(res.duration.Milliseconds()),
		})
		if err != nil {
			return fmt.Errorf("insert webhook attempt: %w", err)
		}
		if res.code != nil && *res.code == http.StatusGone {
			if err := q.EndpointDisable(ctx, endpointID); err != nil {
				return fmt.Errorf("disable webhook endpoint: %w", err)
			}
		}
		if status == StatusPending {
			return nil
		}
		return completeJob(ctx, tx, job)
	})
	return gone, err
}

// completeJob marks the job completed in tx, the transaction that settles
// its delivery. River would otherwise mark it a moment after Work returns,
// and a redelivery in between would find the job still running and, being
// a unique insert, be skipped.
func completeJob(ctx context.Context, tx pgx.Tx, job *river.Job[DeliveryArgs]) error {
	if _, err := river.ClientFromContextSafely[pgx.Tx](ctx); err != nil {
		// Called outside a River client (tests drive Work directly): there
		// is no job row to complete.
		return nil
	}
	if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
		return fmt.Errorf("complete webhook job: %w", err)
	}
	return nil
}

// fail marks a delivery failed without an attempt.
func (s *Service) fail(ctx context.Context, job *river.Job[DeliveryArgs], t target, reason string) error {
	id := job.Args.DeliveryID
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		err := db.New(tx).DeliveryFail(ctx, db.DeliveryFailParams{ID: id, LastError: reason})
		if err != nil {
			return fmt.Errorf("fail webhook delivery: %w", err)
		}
		return completeJob(ctx, tx, job)
	})
	if err != nil {
		return err
	}
	s.metrics.failed.Inc()
	s.log.InfoContext(ctx, "webhook delivery dropped", "delivery_id", id, "message_id", t.msgID,
		"endpoint_id", t.endpointID, "reason", reason)
	return nil
}

func truncate(s string) string {
	if len(s) <= maxErrorLength {
		return s
	}
	// Cut on a rune boundary so the text stays valid UTF-8.
	i := maxErrorLength
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i] + "…"
}
