package keys

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/keys/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/validation"
)

// SyncAttempts is the retry budget of one job that writes a gateway
// record, a key's or a subscription's: with the backoff capped at RetryMax
// it keeps trying for hours; reconciliation queues a new job for anything
// still unsynced after that.
const SyncAttempts = 1000

// SyncKeyArgs is the outbox job that writes a key's gateway record. Every
// change to a key bumps its sync_version and inserts this job in the same
// transaction, so a change that committed always reaches Redis.
type SyncKeyArgs struct {
	KeyID uuid.UUID `json:"key_id"`
}

// Kind implements river.JobArgs.
func (SyncKeyArgs) Kind() string { return "key_sync" }

// DeleteRecordArgs removes the gateway record of a deleted key.
type DeleteRecordArgs struct {
	Hash    string `json:"hash"`
	Version int64  `json:"version"`
}

// Kind implements river.JobArgs.
func (DeleteRecordArgs) Kind() string { return "key_record_delete" }

// keyRecord is what the gateway is told of k. A key the gateway does not
// hold yet is written as active: writing it is what activates it. A
// revoked key's grace ends at its revocation (or its rotation grace, if
// earlier), which also lets Redis drop the record a day later.
func keyRecord(k Key) enforcement.KeyRecord {
	r := enforcement.KeyRecord{
		Hash: k.hash, KeyID: k.ID.String(), SubscriptionID: k.SubscriptionID.String(), APIID: k.APIID.String(),
		Methods: k.Methods, Routes: k.Routes, Version: k.syncVersion,
	}
	switch k.State {
	case StateSuspended:
		r.Status = enforcement.KeySuspended
	case StateRevoked:
		r.Status = enforcement.KeyRevoked
	case StateExpired:
		r.Status = enforcement.KeyExpired
	default:
		r.Status = enforcement.KeyActive
	}
	if k.RatePerSecond != nil {
		r.RatePerSecond = *k.RatePerSecond
	}
	if k.RatePerMinute != nil {
		r.RatePerMinute = *k.RatePerMinute
	}
	if k.ExpiresAt != nil {
		r.ExpiresAt = k.ExpiresAt.UTC()
	}
	if k.GraceUntil != nil {
		r.GraceUntil = k.GraceUntil.UTC()
	}
	if k.RevokedAt != nil && (r.GraceUntil.IsZero() || k.RevokedAt.Before(r.GraceUntil)) {
		r.GraceUntil = k.RevokedAt.UTC().Truncate(time.Second)
		if r.GraceUntil.Unix() <= 0 {
			r.GraceUntil = time.Unix(1, 0)
		}
	}
	return r
}

// SyncKey writes the key's current record to the gateway's Redis. On
// success a pending or failed_sync key becomes active (when no newer change
// is waiting); on failure the attempt is counted, and a pending key whose
// attempts reach SyncFailAfter becomes failed_sync. A deleted key is a no-op.
func (s *Service) SyncKey(ctx context.Context, id uuid.UUID) error {
	k, err := toKey(db.New(s.pool).KeyGetByID(ctx, id))
	if errors.Is(err, ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := s.cfg.Records.PutKey(ctx, keyRecord(k)); err != nil {
		s.metrics.syncErrors.Inc()
		if ferr := s.syncFailed(ctx, id, err); ferr != nil {
			s.log.ErrorContext(ctx, "recording a failed key sync", "key_id", id, "error", ferr)
		}
		return err
	}
	s.metrics.synced.Inc()
	return s.synced(ctx, id, k.syncVersion)
}

// synced records that the gateway holds version v of the key.
func (s *Service) synced(ctx context.Context, id uuid.UUID, v int64) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		k, err := s.lockKey(ctx, tx, id)
		if errors.Is(err, ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		activate := k.syncVersion == v && (k.State == StatePending || k.State == StateFailedSync)
		to := k.State
		if activate {
			to = StateActive
		}
		if err := db.New(tx).KeyMarkSynced(ctx, db.KeyMarkSyncedParams{ID: id, SyncedVersion: v, State: db.KeyState(to)}); err != nil {
			return fmt.Errorf("record key sync: %w", err)
		}
		if !activate {
			return nil
		}
		after, err := s.lockKey(ctx, tx, id)
		if err != nil {
			return err
		}
		return s.record(ctx, tx, identity.System, k.org, "key.transition.active", id,
			map[string]State{"state": k.State}, map[string]any{"state": StateActive, "reason": "written to the gateway"},
			"key.activated", map[string]any{"key": after.audited(), "from": k.State, "to": StateActive})
	})
}

// syncFailed counts a failed attempt.
func (s *Service) syncFailed(ctx context.Context, id uuid.UUID, cause error) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		k, err := s.lockKey(ctx, tx, id)
		if errors.Is(err, ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		attempts := k.SyncAttempts + 1
		fail := k.State == StatePending && attempts >= s.cfg.SyncFailAfter
		to := k.State
		if fail {
			to = StateFailedSync
		}
		if err := db.New(tx).KeySyncFailed(ctx, db.KeySyncFailedParams{
			ID: id, SyncAttempts: attempts, SyncError: validation.Reason(cause.Error()), State: db.KeyState(to),
		}); err != nil {
			return fmt.Errorf("record failed key sync: %w", err)
		}
		if !fail {
			return nil
		}
		s.metrics.failedSync.Inc()
		s.log.WarnContext(ctx, "key failed to reach the gateway; retries go on", "key_id", id, "attempts", attempts, "error", cause)
		after, err := s.lockKey(ctx, tx, id)
		if err != nil {
			return err
		}
		return s.record(ctx, tx, identity.System, k.org, "key.transition.failed_sync", id,
			map[string]State{"state": k.State}, map[string]any{"state": to, "reason": cause.Error()},
			"key.sync_failed", map[string]any{"key": after.audited(), "from": k.State, "to": to, "reason": cause.Error()})
	})
}

// SyncKeyWorker runs SyncKeyArgs jobs.
type SyncKeyWorker struct {
	river.WorkerDefaults[SyncKeyArgs]
	s *Service
}

// SyncKeyWorker returns the worker of key syncs.
func (s *Service) SyncKeyWorker() *SyncKeyWorker { return &SyncKeyWorker{s: s} }

// NextRetry implements the backoff.
func (w *SyncKeyWorker) NextRetry(job *river.Job[SyncKeyArgs]) time.Time {
	return time.Now().Add(w.s.Backoff(job.Attempt))
}

// Timeout bounds one attempt.
func (w *SyncKeyWorker) Timeout(*river.Job[SyncKeyArgs]) time.Duration { return 15 * time.Second }

// Work syncs the key.
func (w *SyncKeyWorker) Work(ctx context.Context, job *river.Job[SyncKeyArgs]) error {
	return w.s.SyncKey(ctx, job.Args.KeyID)
}

// DeleteRecordWorker runs DeleteRecordArgs jobs.
type DeleteRecordWorker struct {
	river.WorkerDefaults[DeleteRecordArgs]
	s *Service
}

// DeleteRecordWorker returns the worker that removes deleted keys' records.
func (s *Service) DeleteRecordWorker() *DeleteRecordWorker { return &DeleteRecordWorker{s: s} }

// NextRetry implements the backoff.
func (w *DeleteRecordWorker) NextRetry(job *river.Job[DeleteRecordArgs]) time.Time {
	return time.Now().Add(w.s.Backoff(job.Attempt))
}

// Work deletes the record.
func (w *DeleteRecordWorker) Work(ctx context.Context, job *river.Job[DeleteRecordArgs]) error {
	_, err := w.s.cfg.Records.DeleteKey(ctx, job.Args.Hash, job.Args.Version)
	return err
}
