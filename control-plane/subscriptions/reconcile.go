package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
)

// ReconcileReport is what a key reconciliation found and did.
type ReconcileReport struct {
	// KeysChecked is the number of keys in Postgres compared with Redis.
	KeysChecked int `json:"keys_checked"`
	// Missing: live keys with no record in Redis.
	Missing int `json:"missing"`
	// Different: records that differ from their key.
	Different int `json:"different"`
	// Orphaned: records with no key behind them.
	Orphaned int `json:"orphaned"`
	// Corrupt: records that could not be decoded.
	Corrupt int `json:"corrupt"`
	// SubscriptionsChecked, SubscriptionsMissing, SubscriptionsDifferent:
	// the same for subscription records.
	SubscriptionsChecked   int `json:"subscriptions_checked"`
	SubscriptionsMissing   int `json:"subscriptions_missing"`
	SubscriptionsDifferent int `json:"subscriptions_different"`
	// Healed counts the repairs that succeeded.
	Healed int `json:"healed"`
	// Unhealed lists what could not be repaired, with why.
	Unhealed []Unhealed `json:"unhealed"`
}

// Unhealed is drift that reconciliation could not repair.
type Unhealed struct {
	Kind  string `json:"kind"` // key, subscription or record
	ID    string `json:"id"`   // key or subscription id, or the record's hash
	Error string `json:"error"`
}

// ReconcileKeys compares every key and subscription in Postgres with the
// gateway's Redis records and heals both directions: missing or different
// records are written again (with a new version, so the write wins over
// whatever is stored), records with no key behind them and undecodable
// ones are removed. Keys still pending or failed_sync whose record is
// right are marked active.
func (s *Service) ReconcileKeys(ctx context.Context) (ReconcileReport, error) {
	rep := ReconcileReport{Unhealed: []Unhealed{}}
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+keyFrom)
	if err != nil {
		return rep, fmt.Errorf("load keys: %w", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Key, error) { return scanKey(r) })
	if err != nil {
		return rep, fmt.Errorf("load keys: %w", err)
	}
	byHash := make(map[string]Key, len(all))
	for _, k := range all {
		byHash[k.hash] = k
	}
	stored := map[string]enforcement.KeyRecord{}
	err = s.cfg.Records.ScanKeys(ctx, func(r enforcement.KeyRecord) error {
		stored[r.Hash] = r
		return nil
	})
	var bad *enforcement.ScanError
	if err != nil && !errors.As(err, &bad) {
		return rep, fmt.Errorf("scan gateway records: %w", err)
	}
	heal := func(kind, id string, err error) {
		if err != nil {
			rep.Unhealed = append(rep.Unhealed, Unhealed{Kind: kind, ID: id, Error: err.Error()})
			s.metrics.reconcileLeft.Inc()
			return
		}
		rep.Healed++
		s.metrics.reconcileFixed.Inc()
	}
	if bad != nil {
		for _, h := range bad.Hashes {
			rep.Corrupt++
			delete(stored, h)
			_, err := s.cfg.Records.DeleteKey(ctx, h, math.MaxInt64)
			heal("record", h, err)
		}
	}
	for h, r := range stored {
		if _, ok := byHash[h]; ok {
			continue
		}
		// A key created after the load above may have been written since:
		// look again before calling its record an orphan.
		var exists bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM api_keys WHERE hash = $1)`, h).Scan(&exists); err != nil {
			heal("record", h, err)
			continue
		}
		if exists {
			continue
		}
		rep.Orphaned++
		_, err := s.cfg.Records.DeleteKey(ctx, h, max(r.Version, math.MaxInt64))
		heal("record", h, err)
	}
	for _, k := range all {
		rep.KeysChecked++
		r, ok := stored[k.hash]
		live := !k.State.Terminal()
		switch {
		case !ok && live:
			rep.Missing++
			heal("key", k.ID.String(), s.rewriteKey(ctx, k.ID))
		case ok && !sameKeyRecord(r, keyRecord(k)):
			rep.Different++
			heal("key", k.ID.String(), s.rewriteKey(ctx, k.ID))
		case ok && (k.State == keys.StatePending || k.State == keys.StateFailedSync):
			// The record is right but the key never heard: its job died.
			if err := s.synced(ctx, k.ID, k.syncVersion); err != nil {
				heal("key", k.ID.String(), err)
			}
		}
	}
	if err := s.reconcileSubscriptions(ctx, &rep, heal); err != nil {
		return rep, err
	}
	return rep, nil
}

// rewriteKey bumps the key's version and writes its record now.
func (s *Service) rewriteKey(ctx context.Context, id uuid.UUID) error {
	if _, err := s.pool.Exec(ctx, `UPDATE api_keys SET sync_version = sync_version + 1 WHERE id = $1`, id); err != nil {
		return fmt.Errorf("bump key version: %w", err)
	}
	return s.SyncKey(ctx, id)
}

// sameKeyRecord compares what the gateway decides on; versions aside.
func sameKeyRecord(a, b enforcement.KeyRecord) bool {
	return a.Status == b.Status && a.KeyID == b.KeyID && a.SubscriptionID == b.SubscriptionID && a.APIID == b.APIID &&
		slices.Equal(nonEmpty(a.Methods), nonEmpty(b.Methods)) && slices.Equal(nonEmpty(a.Routes), nonEmpty(b.Routes)) &&
		a.RatePerSecond == b.RatePerSecond && a.RatePerMinute == b.RatePerMinute &&
		sameSecond(a.ExpiresAt, b.ExpiresAt) && sameSecond(a.GraceUntil, b.GraceUntil)
}

func nonEmpty(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

func sameSecond(a, b time.Time) bool { return a.Unix() == b.Unix() || a.IsZero() && b.IsZero() }

func (s *Service) reconcileSubscriptions(ctx context.Context, rep *ReconcileReport, heal func(kind, id string, err error)) error {
	rows, err := db.New(s.pool).SubscriptionListAll(ctx)
	if err != nil {
		return fmt.Errorf("load subscriptions: %w", err)
	}
	subs := toSubs(rows)
	for _, sub := range subs {
		rep.SubscriptionsChecked++
		want := subscriptionRecord(sub)
		got, err := s.cfg.Records.GetSubscription(ctx, sub.ID.String())
		switch {
		case errors.Is(err, enforcement.ErrNotFound):
			rep.SubscriptionsMissing++
		case err != nil && !errors.Is(err, enforcement.ErrCorruptRecord):
			heal("subscription", sub.ID.String(), err)
			continue
		case err == nil && sameSubscriptionRecord(got, want):
			continue
		default:
			rep.SubscriptionsDifferent++
		}
		if err := db.New(s.pool).SubscriptionBumpSyncVersion(ctx, sub.ID); err != nil {
			heal("subscription", sub.ID.String(), err)
			continue
		}
		heal("subscription", sub.ID.String(), s.SyncSubscription(ctx, sub.ID))
	}
	return nil
}

func sameSubscriptionRecord(a, b enforcement.SubscriptionRecord) bool {
	a.Version, b.Version = 0, 0
	return a.APIID == b.APIID && a.PlanID == b.PlanID && a.Status == b.Status && a.PeriodStart.Unix() == b.PeriodStart.Unix() &&
		a.PeriodEnd.Unix() == b.PeriodEnd.Unix() && a.QuotaRequests == b.QuotaRequests && a.QuotaHard == b.QuotaHard &&
		a.RatePerSecond == b.RatePerSecond && a.RatePerMinute == b.RatePerMinute
}

// ReconcileKeysArgs is the scheduled key reconciliation.
type ReconcileKeysArgs struct{}

// Kind implements river.JobArgs.
func (ReconcileKeysArgs) Kind() string { return "key_reconcile" }

// ReconcileKeysWorker runs ReconcileKeysArgs jobs.
type ReconcileKeysWorker struct {
	river.WorkerDefaults[ReconcileKeysArgs]
	s *Service
}

// ReconcileKeysWorker returns the worker of scheduled reconciliations.
func (s *Service) ReconcileKeysWorker() *ReconcileKeysWorker { return &ReconcileKeysWorker{s: s} }

// Timeout bounds one run below the control plane's rescue of stuck jobs,
// as MaintenanceWorker's does; a run cut short is taken up by the next.
func (w *ReconcileKeysWorker) Timeout(*river.Job[ReconcileKeysArgs]) time.Duration {
	return 50 * time.Second
}

// Work reconciles and logs the report.
func (w *ReconcileKeysWorker) Work(ctx context.Context, _ *river.Job[ReconcileKeysArgs]) error {
	rep, err := w.s.ReconcileKeys(ctx)
	if err != nil {
		return err
	}
	lvl := slogLevel(len(rep.Unhealed) > 0 || rep.Missing+rep.Different+rep.Orphaned+rep.Corrupt > 0)
	w.s.log.Log(ctx, lvl, "key reconciliation", "checked", rep.KeysChecked, "missing", rep.Missing,
		"different", rep.Different, "orphaned", rep.Orphaned, "corrupt", rep.Corrupt, "healed", rep.Healed,
		"unhealed", len(rep.Unhealed))
	return nil
}
