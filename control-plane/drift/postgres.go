package drift

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

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
}

// loadSubscriptions returns the next limit live subscriptions after the id
// and up to upTo, in id order.
func (s *Checker) loadSubscriptions(ctx context.Context, after, upTo uuid.UUID, limit int) ([]subscription, error) {
	rows, err := s.pool.Query(ctx, `SELECT s.id, s.current_period_start, s.current_period_end, v.quota_requests, v.quota_hard,
		COALESCE((SELECT sum(q.requests) FROM quota_adjustments q
			WHERE q.subscription_id = s.id AND q.period_start = s.current_period_start), 0)::bigint
		FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id
		WHERE s.status IN ('trialing', 'active', 'past_due', 'suspended') AND s.id > $1 AND s.id <= $2
		ORDER BY s.id LIMIT $3`, after, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("load subscriptions: %w", err)
	}
	subs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (subscription, error) {
		var (
			d           subscription
			plan        *int64
			adjustments int64
		)
		if err := r.Scan(&d.id, &d.start, &d.end, &plan, &d.hard, &adjustments); err != nil {
			return d, err
		}
		// The processors and the gateway keep periods in Unix seconds.
		d.start, d.end = time.Unix(d.start.Unix(), 0).UTC(), time.Unix(d.end.Unix(), 0).UTC()
		d.quota = enforcement.Limit(plan, adjustments)
		return d, nil
	})
	if err != nil {
		return nil, fmt.Errorf("load subscriptions: %w", err)
	}
	return subs, nil
}

// Last returns the newest stored drift check; false when no
// check has run.
func (s *Checker) Last(ctx context.Context) (Report, bool, error) {
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT report FROM usage_reconcile_runs ORDER BY started_at DESC, id DESC LIMIT 1`).Scan(&raw)
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
	return rep, true, nil
}

// storeReport records the run and drops all but the newest runs.
func (s *Checker) storeReport(ctx context.Context, rep Report) error {
	raw, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode usage report: %w", err)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO usage_reconcile_runs (started_at, finished_at, report) VALUES ($1, $2, $3)`,
			rep.StartedAt, rep.FinishedAt, raw); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM usage_reconcile_runs WHERE id IN (
			SELECT id FROM usage_reconcile_runs ORDER BY started_at DESC, id DESC OFFSET $1)`, runsKept)
		return err
	})
	if err != nil {
		return fmt.Errorf("store usage report: %w", err)
	}
	return nil
}
