package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
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
// right are marked active. The scheduled job runs it; a run an admin asks
// for is ReconcileKeysRequested.
func (s *Service) ReconcileKeys(ctx context.Context) (ReconcileReport, error) {
	return s.reconcileKeys(ctx, nil)
}

// ReconcileKeysRequested is ReconcileKeys run because actor asked for it,
// audited as "gateway.reconcile" (target keys) with the drift found. The
// records a run heals are the gateway's, in Redis, which no transaction of
// ours can hold; so the entry is the request's, and it commits after the
// drift is found and before the first write that heals it. If it cannot be
// written, nothing is changed; once it is, every change the run makes has
// an entry that asked for it. Recording after the run, as the HTTP layer
// did, could leave records rewritten with no entry.
func (s *Service) ReconcileKeysRequested(ctx context.Context, actor identity.Actor) (ReconcileReport, error) {
	return s.reconcileKeys(ctx, func(found ReconcileReport) error {
		return audit.RecordNow(ctx, s.pool, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), Action: "gateway.reconcile",
			TargetType: "gateway", TargetID: "keys", After: found,
		})
	})
}

// reconcileKeys finds the drift, calls record (when not nil) with what was
// found and, unless it fails, heals.
func (s *Service) reconcileKeys(ctx context.Context, record func(found ReconcileReport) error) (ReconcileReport, error) {
	rep := ReconcileReport{Unhealed: []Unhealed{}}
	d, err := s.findKeyDrift(ctx, &rep)
	if err != nil {
		return rep, err
	}
	if record != nil {
		if err := record(rep); err != nil {
			return rep, fmt.Errorf("record reconciliation: %w", err)
		}
	}
	s.healKeyDrift(ctx, &rep, d)
	return rep, nil
}

// keyDrift is what a key reconciliation found, before it heals anything.
type keyDrift struct {
	corrupt []string                // hashes of records that could not be decoded
	orphans []enforcement.KeyRecord // records with no key behind them
	rewrite []uuid.UUID             // keys whose record is missing or different
	synced  []Key                   // pending or failed_sync keys whose record is right
	subs    []uuid.UUID             // subscriptions whose record is missing or different
}

// healed counts the outcome of one repair in rep.
func (s *Service) healed(rep *ReconcileReport, kind, id string, err error) {
	if err != nil {
		rep.Unhealed = append(rep.Unhealed, Unhealed{Kind: kind, ID: id, Error: err.Error()})
		s.metrics.reconcileLeft.Inc()
		return
	}
	rep.Healed++
	s.metrics.reconcileFixed.Inc()
}

// findKeyDrift compares the keys and subscriptions with their records,
// counting in rep what differs; it changes nothing.
func (s *Service) findKeyDrift(ctx context.Context, rep *ReconcileReport) (keyDrift, error) {
	var d keyDrift
	rows, err := db.New(s.pool).KeyListAll(ctx)
	if err != nil {
		return d, fmt.Errorf("load keys: %w", err)
	}
	all, err := toKeys(rows)
	if err != nil {
		return d, fmt.Errorf("load keys: %w", err)
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
		return d, fmt.Errorf("scan gateway records: %w", err)
	}
	if bad != nil {
		for _, h := range bad.Hashes {
			rep.Corrupt++
			delete(stored, h)
			d.corrupt = append(d.corrupt, h)
		}
	}
	for h, r := range stored {
		if _, ok := byHash[h]; ok {
			continue
		}
		// A key created after the load above may have been written since:
		// look again before calling its record an orphan.
		exists, err := db.New(s.pool).KeyExistsByHash(ctx, h)
		if err != nil {
			s.healed(rep, "record", h, err)
			continue
		}
		if exists {
			continue
		}
		rep.Orphaned++
		d.orphans = append(d.orphans, r)
	}
	for _, k := range all {
		rep.KeysChecked++
		r, ok := stored[k.hash]
		live := !k.State.Terminal()
		switch {
		case !ok && live:
			rep.Missing++
			d.rewrite = append(d.rewrite, k.ID)
		case ok && !sameKeyRecord(r, keyRecord(k)):
			rep.Different++
			d.rewrite = append(d.rewrite, k.ID)
		case ok && (k.State == keys.StatePending || k.State == keys.StateFailedSync):
			// The record is right but the key never heard: its job died.
			d.synced = append(d.synced, k)
		}
	}
	return d, s.findSubscriptionDrift(ctx, rep, &d)
}

// healKeyDrift heals what findKeyDrift found, counting in rep what it
// healed and what it could not.
func (s *Service) healKeyDrift(ctx context.Context, rep *ReconcileReport, d keyDrift) {
	for _, h := range d.corrupt {
		_, err := s.cfg.Records.DeleteKey(ctx, h, math.MaxInt64)
		s.healed(rep, "record", h, err)
	}
	for _, r := range d.orphans {
		_, err := s.cfg.Records.DeleteKey(ctx, r.Hash, max(r.Version, math.MaxInt64))
		s.healed(rep, "record", r.Hash, err)
	}
	for _, id := range d.rewrite {
		s.healed(rep, "key", id.String(), s.rewriteKey(ctx, id))
	}
	for _, k := range d.synced {
		if err := s.synced(ctx, k.ID, k.syncVersion); err != nil {
			s.healed(rep, "key", k.ID.String(), err)
		}
	}
	for _, id := range d.subs {
		if err := db.New(s.pool).SubscriptionBumpSyncVersion(ctx, id); err != nil {
			s.healed(rep, "subscription", id.String(), err)
			continue
		}
		s.healed(rep, "subscription", id.String(), s.SyncSubscription(ctx, id))
	}
}

// rewriteKey bumps the key's version and writes its record now.
func (s *Service) rewriteKey(ctx context.Context, id uuid.UUID) error {
	if err := db.New(s.pool).KeyBumpSyncVersion(ctx, id); err != nil {
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

// findSubscriptionDrift adds to d each subscription whose record is
// missing or different.
func (s *Service) findSubscriptionDrift(ctx context.Context, rep *ReconcileReport, d *keyDrift) error {
	rows, err := db.New(s.pool).SubscriptionListAll(ctx)
	if err != nil {
		return fmt.Errorf("load subscriptions: %w", err)
	}
	for _, sub := range toSubs(rows) {
		rep.SubscriptionsChecked++
		want := subscriptionRecord(sub)
		got, err := s.cfg.Records.GetSubscription(ctx, sub.ID.String())
		switch {
		case errors.Is(err, enforcement.ErrNotFound):
			rep.SubscriptionsMissing++
		case err != nil && !errors.Is(err, enforcement.ErrCorruptRecord):
			s.healed(rep, "subscription", sub.ID.String(), err)
			continue
		case err == nil && sameSubscriptionRecord(got, want):
			continue
		default:
			rep.SubscriptionsDifferent++
		}
		d.subs = append(d.subs, sub.ID)
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
