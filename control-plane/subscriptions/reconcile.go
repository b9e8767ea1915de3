package subscriptions

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions/internal/db"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/periodic"
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
// right are marked active. The keys' part is keys.Service's FindDrift and
// HealDrift. The scheduled job runs it; a run an admin asks
// for is ReconcileKeysRequested.
func (s *Service) ReconcileKeys(ctx context.Context) (ReconcileReport, error) {
	return s.reconcileKeys(ctx, nil)
}

// ReconcileKeysRequested is ReconcileKeys run because actor asked for it,
// audited twice (target keys): "gateway.reconcile" with the drift found,
// then "gateway.reconcile.result" with what the run healed and what it
// could not. The records a run heals are the gateway's, in Redis, which no
// transaction of ours can hold; so the first entry is the request's, and it
// commits after the drift is found and before the first write that heals
// it. If it cannot be written, nothing is changed; once it is, every change
// the run makes has an entry that asked for it, and the second says which
// changes were made.
func (s *Service) ReconcileKeysRequested(ctx context.Context, actor identity.Actor) (ReconcileReport, error) {
	entry := func(action string, rep ReconcileReport) error {
		return audit.RecordNow(ctx, s.pool, audit.Change{
			Actor: actor.Subject, ActorRole: string(actor.Role), Action: action,
			TargetType: "gateway", TargetID: "keys", After: rep,
		})
	}
	rep, err := s.reconcileKeys(ctx, func(found ReconcileReport) error { return entry("gateway.reconcile", found) })
	if err != nil {
		return rep, err
	}
	if err := entry("gateway.reconcile.result", rep); err != nil {
		return rep, fmt.Errorf("record key reconciliation result: %w", err)
	}
	return rep, nil
}

// reconcileKeys finds the drift, calls record (when not nil) with what was
// found and, unless it fails, heals.
func (s *Service) reconcileKeys(ctx context.Context, record func(found ReconcileReport) error) (ReconcileReport, error) {
	rep := ReconcileReport{Unhealed: []Unhealed{}}
	healed := func(kind, id string, err error) { s.healed(&rep, kind, id, err) }
	d, err := s.keys.FindDrift(ctx, healed)
	if err != nil {
		return rep, err
	}
	rep.KeysChecked, rep.Missing, rep.Different, rep.Orphaned, rep.Corrupt = d.Checked, d.Missing, d.Different, d.Orphaned, d.Corrupt
	subs, err := s.findSubscriptionDrift(ctx, &rep)
	if err != nil {
		return rep, err
	}
	if record != nil {
		if err := record(rep); err != nil {
			return rep, fmt.Errorf("record reconciliation: %w", err)
		}
	}
	s.keys.HealDrift(ctx, d, healed)
	for _, id := range subs {
		if err := db.New(s.pool).SubscriptionBumpSyncVersion(ctx, id); err != nil {
			s.healed(&rep, "subscription", id.String(), err)
			continue
		}
		s.healed(&rep, "subscription", id.String(), s.SyncSubscription(ctx, id))
	}
	return rep, nil
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

// findSubscriptionDrift lists the subscriptions whose record is missing
// or different, counting them in rep; it changes nothing.
func (s *Service) findSubscriptionDrift(ctx context.Context, rep *ReconcileReport) ([]uuid.UUID, error) {
	rows, err := db.New(s.pool).SubscriptionListAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("load subscriptions: %w", err)
	}
	subs := toSubs(rows)
	var versions []uuid.UUID
	for _, sub := range subs {
		if !slices.Contains(versions, sub.PlanVersionID) {
			versions = append(versions, sub.PlanVersionID)
		}
	}
	meters, err := versionMeters(ctx, db.New(s.pool), versions...)
	if err != nil {
		return nil, err
	}
	var drifted []uuid.UUID
	for _, sub := range subs {
		rep.SubscriptionsChecked++
		want := subscriptionRecord(sub, meters[sub.PlanVersionID])
		if err := dunningRecord(ctx, db.New(s.pool), sub, &want); err != nil {
			s.healed(rep, "subscription", sub.ID.String(), err)
			continue
		}
		if _, err := budgetRecord(ctx, s.pool, sub, &want); err != nil {
			s.healed(rep, "subscription", sub.ID.String(), err)
			continue
		}
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
		drifted = append(drifted, sub.ID)
	}
	return drifted, nil
}

func sameSubscriptionRecord(a, b enforcement.SubscriptionRecord) bool {
	a.Version, b.Version = 0, 0
	return a.APIID == b.APIID && a.PlanID == b.PlanID && a.Status == b.Status && a.PeriodStart.Unix() == b.PeriodStart.Unix() &&
		a.PeriodEnd.Unix() == b.PeriodEnd.Unix() && a.PeriodAnchor.Unix() == b.PeriodAnchor.Unix() && a.QuotaRequests == b.QuotaRequests && a.QuotaHard == b.QuotaHard &&
		a.RatePerSecond == b.RatePerSecond && a.RatePerMinute == b.RatePerMinute && reflect.DeepEqual(a.Meters, b.Meters) &&
		a.UnpaidInvoiceID == b.UnpaidInvoiceID && a.UnpaidInvoiceNumber == b.UnpaidInvoiceNumber && a.SuspendAt.Unix() == b.SuspendAt.Unix() &&
		a.BudgetKey() == b.BudgetKey()
}

// ReconcileKeysArgs is the scheduled key reconciliation.
type ReconcileKeysArgs struct{}

// Kind implements river.JobArgs.
func (ReconcileKeysArgs) Kind() string { return "key_reconcile" }

// ReconcileKeysWorker returns the worker of scheduled reconciliations,
// which reconciles and logs the report. A run is bounded as maintenance's
// is; a run cut short is taken up by the next.
func (s *Service) ReconcileKeysWorker() *periodic.Worker[ReconcileKeysArgs] {
	return periodic.NewWorker[ReconcileKeysArgs](func(ctx context.Context) error {
		rep, err := s.ReconcileKeys(ctx)
		if err != nil {
			return err
		}
		lvl := slogLevel(len(rep.Unhealed) > 0 || rep.Missing+rep.Different+rep.Orphaned+rep.Corrupt > 0)
		s.log.Log(ctx, lvl, "key reconciliation", "checked", rep.KeysChecked, "missing", rep.Missing,
			"different", rep.Different, "orphaned", rep.Orphaned, "corrupt", rep.Corrupt, "healed", rep.Healed,
			"unhealed", len(rep.Unhealed))
		return nil
	}).WithTimeout(runTimeout)
}
