package drift

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/drift/internal/db"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/enforcement"
)

// subscription is a live subscription as Postgres has it.
type subscription struct {
	id         uuid.UUID
	start, end time.Time
	// quota is the period's effective request quota (the plan's plus the
	// period's adjustments), -1 for unlimited.
	quota int64
	hard  bool
	// metersSince is when the meters of the subscription's record began
	// to count in this period: the period's start, or when its current
	// plan version took effect if later (a plan change keeps the period).
	// The processors count a meter only from when the record names it, so
	// ClickHouse's figure for a meter starts there too.
	metersSince time.Time
}

// loadSubscriptions returns the next limit live subscriptions after the id
// and up to upTo, in id order.
func (s *Checker) loadSubscriptions(ctx context.Context, after, upTo uuid.UUID, limit int) ([]subscription, error) {
	rows, err := db.New(s.pool).SubscriptionListLive(ctx, db.SubscriptionListLiveParams{After: after, UpTo: upTo, RowLimit: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("load subscriptions: %w", err)
	}
	subs := make([]subscription, 0, len(rows))
	for _, r := range rows {
		// The processors and the gateway keep periods in Unix seconds.
		sub := subscription{
			id: r.ID, start: time.Unix(r.CurrentPeriodStart.Unix(), 0).UTC(), end: time.Unix(r.CurrentPeriodEnd.Unix(), 0).UTC(),
			quota: enforcement.Limit(r.QuotaRequests, r.Adjustments), hard: r.QuotaHard,
		}
		sub.metersSince = sub.start
		if since := time.Unix(r.VersionSince.Unix(), 0).UTC(); since.After(sub.start) {
			sub.metersSince = since
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

// Last returns the newest stored drift check; false when no
// check has run.
func (s *Checker) Last(ctx context.Context) (Report, bool, error) {
	raw, err := db.New(s.pool).RunGetLastReport(ctx)
	if errors.Is(err, pgx.ErrNoRows) {
		return Report{}, false, nil
	}
	if err != nil {
		return Report{}, false, fmt.Errorf("load usage report: %w", err)
	}
	var rep Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		return Report{}, false, fmt.Errorf("decode usage report: %w", err)
	}
	if rep.MeterDrift == nil {
		rep.MeterDrift = []MeterDrifted{} // a run stored before meters were checked
	}
	return rep, true, nil
}

// storeReport records the run and drops all but the newest runs; the
// audit entry of a run someone asked for (by) goes in the same
// transaction.
func (s *Checker) storeReport(ctx context.Context, rep Report, by *identity.Actor) error {
	raw, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode usage report: %w", err)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := q.RunInsert(ctx, db.RunInsertParams{StartedAt: rep.StartedAt, FinishedAt: rep.FinishedAt, Report: raw}); err != nil {
			return err
		}
		if err := q.RunDeleteOld(ctx, runsKept); err != nil {
			return err
		}
		if by == nil {
			return nil
		}
		return audit.Record(ctx, tx, audit.Change{
			Actor: by.Subject, ActorRole: string(by.Role), Action: "usage.reconcile",
			TargetType: "usage", TargetID: "counters", After: rep,
		})
	})
	if err != nil {
		return fmt.Errorf("store usage report: %w", err)
	}
	return nil
}
