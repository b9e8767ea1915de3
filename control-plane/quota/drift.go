package quota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"
	"github.com/riverqueue/river"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/gatewayrecord"
	"github.com/veil-platform/veil/schemas/usage"
)

// ErrNoClickHouse: the drift check needs Config.ClickHouse, and it is nil.
var ErrNoClickHouse = errors.New("no ClickHouse connection (Config.ClickHouse)")

// DefaultDriftSettle is Config.DriftSettle's default: how long the drift
// check waits, once it found a subscription drifted, before it looks at
// Redis again and heals. It outlasts a processor batch (500 ms at most by
// default), so a batch ClickHouse already holds and Redis is applying
// shows up as a change rather than as drift.
const DefaultDriftSettle = 2 * time.Second

// UsageReport is what one usage drift check found and did.
type UsageReport struct {
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// Checked is the number of live subscriptions looked at.
	Checked int `json:"checked"`
	// InFlight counts subscriptions left for the next run because
	// ClickHouse is behind Redis or the processors moved while they were
	// checked.
	InFlight int `json:"in_flight"`
	// Drifted counts subscriptions whose counter or watermarks disagreed
	// with ClickHouse; Healed those repaired.
	Drifted int `json:"drifted"`
	Healed  int `json:"healed"`
	// Unhealed lists the drift that could not be repaired, with why.
	Unhealed []UsageUnhealed `json:"unhealed"`
	// Drift describes every drifted subscription.
	Drift []UsageDrift `json:"drift"`
}

// UsageUnhealed is drift the check could not repair.
type UsageUnhealed struct {
	SubscriptionID uuid.UUID `json:"subscription_id"`
	Reason         string    `json:"reason"`
}

// UsageDrift is one subscription whose Redis period counter disagreed with
// ClickHouse. Units are decimal strings, exact to the micro-unit.
type UsageDrift struct {
	SubscriptionID     uuid.UUID `json:"subscription_id"`
	PeriodStart        time.Time `json:"period_start"`
	RedisRequests      int64     `json:"redis_requests"`
	ClickHouseRequests int64     `json:"clickhouse_requests"`
	RedisUnits         string    `json:"redis_units"`
	ClickHouseUnits    string    `json:"clickhouse_units"`
	// WatermarksBehind: Redis had no readable watermark for a partition
	// ClickHouse holds rows of (after a flush, say), whatever the counter
	// said.
	WatermarksBehind bool `json:"watermarks_behind"`
	// Blocked reports whether the subscription is blocked after the heal.
	Blocked bool `json:"blocked"`
	Healed  bool `json:"healed"`
}

// Lifetime of a healed period counter: the processors' (periodTTL there).
const driftCounterTTL = 400 * 24 * time.Hour

// driftChunk is how many subscriptions are read from Postgres and Redis,
// and asked of ClickHouse for their offsets, at a time.
const driftChunk = 500

// driftRunsKept is how many runs usage_reconcile_runs keeps.
const driftRunsKept = 100

// driftLookback is how far before a period's start the offset query
// looks. The processors refuse events older than the late window or
// further ahead than the future allowance, judged when they process
// them, and process a partition in offset order. So every row from a
// partition at or after a row of the period (time ≥ start, processed no
// earlier than start minus the allowance) is younger than start minus
// both: for every partition with rows of the period, the bounded maximum
// is the true one. Older rows are only scanned, not needed.
const driftLookback = usage.DefaultLateWindow + usage.DefaultMaxFuture

// ReconcileUsage checks, for every live subscription (trialing, active,
// past_due, suspended), that its Redis counter for the current period
// holds exactly what ClickHouse says the processors applied, and heals the
// counter, the offset watermarks, the threshold crossings and the quota
// block when not. The run is stored (see LastUsageReport).
//
// What is compared: the counter's requests and units against ClickHouse's
// admitted rows (no refusal) of the period [start, end) from each
// partition up to the offset Redis's watermark for that partition says
// was applied. The processors write ClickHouse and Redis in parallel, so
// rows beyond a watermark are a batch Redis has not applied yet: they are
// ignored, and the watermark is never moved forward over them. A
// partition ClickHouse holds rows of and Redis has no watermark for at
// all means Redis lost it (a flush): it counts up to ClickHouse's highest
// offset there, and the heal writes that watermark. A watermark beyond
// what ClickHouse holds means ClickHouse is behind: when the figures then
// disagree the subscription is in flight and left for the next run.
//
// A subscription found drifted is not healed at once: after a settle
// (Config.DriftSettle) its Redis state is read again, and only when the
// watermarks and the counter did not move and the figures, recomputed,
// still differ is it healed, by a compare-and-set against that state.
// One that moved is in flight.
//
// Period bounds and quotas come from Postgres, so a flushed Redis, the
// subscription record included, is healed too; where the record is there
// and names the same period, its quota wins (see driftHealScript).
func (s *Service) ReconcileUsage(ctx context.Context) (UsageReport, error) {
	return s.reconcileUsage(ctx, s.driftSettle)
}

// reconcileUsage is ReconcileUsage with the settle between the finding and
// the heal as a function, which tests use to act during it.
func (s *Service) reconcileUsage(ctx context.Context, settle func(context.Context) error) (UsageReport, error) {
	rep := UsageReport{StartedAt: s.now().UTC(), Unhealed: []UsageUnhealed{}, Drift: []UsageDrift{}}
	if s.cfg.ClickHouse == nil {
		return rep, fmt.Errorf("reconcile usage: %w", ErrNoClickHouse)
	}
	after := uuid.Nil
	for {
		subs, err := s.driftLoadSubs(ctx, after)
		if err != nil {
			return rep, err
		}
		if len(subs) == 0 {
			break
		}
		if err := s.driftCheckChunk(ctx, subs, settle, &rep); err != nil {
			return rep, err
		}
		after = subs[len(subs)-1].id
		if len(subs) < driftChunk {
			break
		}
	}
	rep.FinishedAt = s.now().UTC()
	s.cfg.Metrics.GetOrCreateGauge(`veil_controlplane_usage_drift_subscriptions`, nil).Set(float64(rep.Drifted))
	s.cfg.Metrics.GetOrCreateGauge(`veil_controlplane_usage_in_flight_subscriptions`, nil).Set(float64(rep.InFlight))
	if err := s.driftStore(ctx, rep); err != nil {
		return rep, err
	}
	return rep, nil
}

// driftSettle waits Config.DriftSettle (DefaultDriftSettle when zero).
func (s *Service) driftSettle(ctx context.Context) error {
	d := s.cfg.DriftSettle
	if d <= 0 {
		d = DefaultDriftSettle
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("settle usage drift: %w", ctx.Err())
	case <-t.C:
		return nil
	}
}

// LastUsageReport returns the newest stored drift check; false when no
// check has run.
func (s *Service) LastUsageReport(ctx context.Context) (UsageReport, bool, error) {
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT report FROM usage_reconcile_runs ORDER BY started_at DESC, id DESC LIMIT 1`).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return UsageReport{}, false, nil
	}
	if err != nil {
		return UsageReport{}, false, fmt.Errorf("load usage report: %w", err)
	}
	var rep UsageReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		return UsageReport{}, false, fmt.Errorf("decode usage report: %w", err)
	}
	return rep, true, nil
}

// driftStore records the run and drops all but the newest runs.
func (s *Service) driftStore(ctx context.Context, rep UsageReport) error {
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
			SELECT id FROM usage_reconcile_runs ORDER BY started_at DESC, id DESC OFFSET $1)`, driftRunsKept)
		return err
	})
	if err != nil {
		return fmt.Errorf("store usage report: %w", err)
	}
	return nil
}

// driftSub is a live subscription as Postgres has it.
type driftSub struct {
	id         uuid.UUID
	start, end time.Time
	// quota is the period's effective request quota (the plan's plus the
	// period's adjustments), -1 for unlimited.
	quota int64
	hard  bool
}

// driftLoadSubs returns the next chunk of live subscriptions after the id.
func (s *Service) driftLoadSubs(ctx context.Context, after uuid.UUID) ([]driftSub, error) {
	rows, err := s.pool.Query(ctx, `SELECT s.id, s.current_period_start, s.current_period_end, v.quota_requests, v.quota_hard,
		COALESCE((SELECT sum(q.requests) FROM quota_adjustments q
			WHERE q.subscription_id = s.id AND q.period_start = s.current_period_start), 0)::bigint
		FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id
		WHERE s.status IN ('trialing', 'active', 'past_due', 'suspended') AND s.id > $1
		ORDER BY s.id LIMIT $2`, after, driftChunk)
	if err != nil {
		return nil, fmt.Errorf("load subscriptions: %w", err)
	}
	subs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (driftSub, error) {
		var (
			d           driftSub
			plan        *int64
			adjustments int64
		)
		if err := r.Scan(&d.id, &d.start, &d.end, &plan, &d.hard, &adjustments); err != nil {
			return d, err
		}
		// The processors and the gateway keep periods in Unix seconds.
		d.start, d.end = time.Unix(d.start.Unix(), 0).UTC(), time.Unix(d.end.Unix(), 0).UTC()
		d.quota = -1
		if plan != nil {
			d.quota = *plan + adjustments
		}
		return d, nil
	})
	if err != nil {
		return nil, fmt.Errorf("load subscriptions: %w", err)
	}
	return subs, nil
}

// driftRedis is what Redis held of a subscription when it was read, raw,
// so that the heal can check nothing moved since.
type driftRedis struct {
	// watermarks is the watermark hash: partition → offset.
	watermarks map[string]string
	// requests and units are the period counter's fields, "" when absent.
	requests, units string
}

func (r driftRedis) equal(o driftRedis) bool {
	return r.requests == o.requests && r.units == o.units && maps.Equal(r.watermarks, o.watermarks)
}

// driftVerdict is what comparing one subscription concluded.
type driftVerdict int

const (
	// driftInSync: Redis holds what ClickHouse says; nothing to do.
	driftInSync driftVerdict = iota
	// driftInFlight: they disagree while ClickHouse is behind Redis.
	driftInFlight
	// driftDiffers: they disagree and ClickHouse is not behind.
	driftDiffers
)

// driftFinding is the comparison of one subscription's Redis state with
// ClickHouse.
type driftFinding struct {
	verdict driftVerdict
	// target is the watermark hash a heal writes: Redis's readable
	// watermarks, plus ClickHouse's highest offset for each partition
	// Redis has none for.
	target map[int32]int64
	// want* are ClickHouse's figures up to target, got* Redis's.
	wantRequests, wantUnits int64
	gotRequests, gotUnits   int64
	// behind: target adds or rewrites watermarks.
	behind bool
}

// driftCheckChunk compares a chunk of subscriptions with ClickHouse and
// heals the drifted ones after the settle. Only a failure that concerns
// the whole run is returned; a failed heal is reported.
func (s *Service) driftCheckChunk(ctx context.Context, subs []driftSub, settle func(context.Context) error, rep *UsageReport) error {
	states, err := s.driftReadRedis(ctx, subs)
	if err != nil {
		return err
	}
	offsets, err := s.driftMaxOffsets(ctx, subs)
	if err != nil {
		return err
	}
	var (
		drifted  []driftSub
		read     []driftRedis
		findings []driftFinding
	)
	for i, sub := range subs {
		rep.Checked++
		f, err := s.driftCompare(ctx, sub, states[i], offsets[sub.id.String()])
		if err != nil {
			return err
		}
		switch f.verdict {
		case driftInFlight:
			rep.InFlight++
		case driftDiffers:
			drifted, read, findings = append(drifted, sub), append(read, states[i]), append(findings, f)
		}
	}
	if len(drifted) == 0 {
		return nil
	}

	// Give a batch Redis is applying time to land, then look again: the
	// first look may have caught ClickHouse holding a batch whose Redis
	// script had not run yet.
	if err := settle(ctx); err != nil {
		return err
	}
	states, err = s.driftReadRedis(ctx, drifted)
	if err != nil {
		return err
	}
	offsets, err = s.driftMaxOffsets(ctx, drifted)
	if err != nil {
		return err
	}
	for i, sub := range drifted {
		if !states[i].equal(read[i]) {
			rep.InFlight++ // the processors moved: what was compared is stale
			continue
		}
		f, err := s.driftCompare(ctx, sub, states[i], offsets[sub.id.String()])
		if err != nil {
			return err
		}
		switch {
		case f.verdict == driftInSync:
			continue
		case f.verdict == driftInFlight, !maps.Equal(f.target, findings[i].target):
			// ClickHouse moved on a partition Redis has no watermark for:
			// a batch Redis has yet to apply.
			rep.InFlight++
			continue
		}
		s.driftHealOne(ctx, sub, states[i], f, rep)
	}
	return nil
}

// driftReadRedis reads the watermarks and period counters of the
// subscriptions in one round trip.
func (s *Service) driftReadRedis(ctx context.Context, subs []driftSub) ([]driftRedis, error) {
	cmds := make(rueidis.Commands, 0, 2*len(subs))
	for _, sub := range subs {
		id := sub.id.String()
		cmds = append(cmds,
			s.cfg.Redis.B().Hgetall().Key(gatewayrecord.WatermarkName(id)).Build(),
			s.cfg.Redis.B().Hmget().Key(gatewayrecord.PeriodCounterName(id, sub.start)).Field("requests", "units_micro").Build())
	}
	results := s.cfg.Redis.DoMulti(ctx, cmds...)
	states := make([]driftRedis, len(subs))
	for i, sub := range subs {
		wm, err := results[2*i].AsStrMap()
		if err != nil {
			return nil, fmt.Errorf("read watermarks of %s: %w", sub.id, err)
		}
		counter, err := results[2*i+1].ToArray()
		if err != nil {
			return nil, fmt.Errorf("read period counter of %s: %w", sub.id, err)
		}
		if len(counter) != 2 {
			return nil, fmt.Errorf("read period counter of %s: %d fields, want 2", sub.id, len(counter))
		}
		st := driftRedis{watermarks: wm}
		for j, dst := range []*string{&st.requests, &st.units} {
			v, err := counter[j].ToString()
			if err != nil && !rueidis.IsRedisNil(err) {
				return nil, fmt.Errorf("read period counter of %s: %w", sub.id, err)
			}
			*dst = v
		}
		states[i] = st
	}
	return states, nil
}

// driftMaxOffsets returns, per subject of the chunk, the highest Kafka
// offset ClickHouse holds from each partition (refused rows too: the
// watermarks count every row), over the rows since the earliest period
// start of the chunk less driftLookback.
func (s *Service) driftMaxOffsets(ctx context.Context, subs []driftSub) (map[string]map[int32]int64, error) {
	query, args := driftMaxOffsetsQuery(subs)
	rows, err := s.cfg.ClickHouse.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read clickhouse offsets: %w", err)
	}
	defer rows.Close()
	out := map[string]map[int32]int64{}
	for rows.Next() {
		var (
			subject   string
			partition int32
			offset    int64
		)
		if err := rows.Scan(&subject, &partition, &offset); err != nil {
			return nil, fmt.Errorf("read clickhouse offsets: %w", err)
		}
		if out[subject] == nil {
			out[subject] = map[int32]int64{}
		}
		out[subject][partition] = offset
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read clickhouse offsets: %w", err)
	}
	return out, nil
}

// driftMaxOffsetsQuery bounds the scan by time so that a run reads the
// recent part of each subject, not its whole history: the table is
// ordered by (subject, time). One bound serves the chunk (the earliest
// start's); a later subscription is scanned a little further back than
// it needs, which changes none of its figures that matter (see
// driftLookback).
func driftMaxOffsetsQuery(subs []driftSub) (string, []any) {
	ids := make([]any, len(subs))
	since := subs[0].start
	for i, sub := range subs {
		ids[i] = sub.id.String()
		if sub.start.Before(since) {
			since = sub.start
		}
	}
	return `SELECT subject, kafka_partition, max(kafka_offset) FROM usage_events
		WHERE subject IN ? AND time >= ? GROUP BY subject, kafka_partition`,
		[]any{clickhouse.GroupSet{Value: ids}, since.Add(-driftLookback)}
}

// driftCompare compares one subscription's Redis state, as read, with
// ClickHouse. chMax is ClickHouse's highest offset per partition for the
// subject (see driftMaxOffsets).
func (s *Service) driftCompare(ctx context.Context, sub driftSub, red driftRedis, chMax map[int32]int64) (driftFinding, error) {
	f := driftFinding{target: map[int32]int64{}}
	if len(chMax) == 0 && len(red.watermarks) == 0 && red.requests == "" && red.units == "" {
		return f, nil // never used: nothing to compare
	}
	ahead := false
	for field, v := range red.watermarks {
		p, err1 := strconv.ParseInt(field, 10, 32)
		off, err2 := strconv.ParseInt(v, 10, 64)
		if err1 != nil || err2 != nil || off < 0 || strconv.FormatInt(p, 10) != field || strconv.FormatInt(off, 10) != v {
			f.behind = true // unreadable: as if lost, and rewritten by the heal
			continue
		}
		f.target[int32(p)] = off
		if ch, ok := chMax[int32(p)]; !ok || off > ch {
			ahead = true
		}
	}
	for p, ch := range chMax {
		if _, ok := f.target[p]; !ok {
			f.target[p] = ch // Redis lost this partition's watermark
			f.behind = true
		}
	}
	var err error
	if len(chMax) > 0 {
		// Without rows since the lookback ClickHouse has none of the
		// period either.
		if f.wantRequests, f.wantUnits, err = s.driftCount(ctx, sub, f.target); err != nil {
			return f, err
		}
	}
	var err1, err2 error
	f.gotRequests, err1 = driftParse(red.requests)
	f.gotUnits, err2 = driftParse(red.units)
	switch {
	case err1 == nil && err2 == nil && f.gotRequests == f.wantRequests && f.gotUnits == f.wantUnits && !f.behind:
		// Also when ahead: Redis applied rows ClickHouse does not hold
		// (yet, or not since the lookback: a partition idle for long), and
		// the figures agree all the same.
		f.verdict = driftInSync
	case ahead:
		f.verdict = driftInFlight
	default:
		f.verdict = driftDiffers
	}
	return f, nil
}

// driftHealOne heals one drifted subscription from its finding, against
// the Redis state red, and reports it.
func (s *Service) driftHealOne(ctx context.Context, sub driftSub, red driftRedis, f driftFinding, rep *UsageReport) {
	applied, blocked, err := s.driftHeal(ctx, sub, red, f.target, f.wantRequests, f.wantUnits)
	if err == nil && !applied {
		// The processors moved (or Redis changed) since the read: what
		// was compared is stale.
		rep.InFlight++
		return
	}
	rep.Drifted++
	d := UsageDrift{
		SubscriptionID: sub.id, PeriodStart: sub.start,
		RedisRequests: f.gotRequests, ClickHouseRequests: f.wantRequests,
		RedisUnits: decimal.New(f.gotUnits, -6).String(), ClickHouseUnits: decimal.New(f.wantUnits, -6).String(),
		WatermarksBehind: f.behind, Blocked: blocked, Healed: err == nil,
	}
	rep.Drift = append(rep.Drift, d)
	attrs := []any{"subscription_id", sub.id, "period_start", sub.start, "redis_requests", d.RedisRequests,
		"clickhouse_requests", d.ClickHouseRequests, "redis_units", d.RedisUnits, "clickhouse_units", d.ClickHouseUnits,
		"watermarks_behind", f.behind, "blocked", blocked}
	if err != nil {
		rep.Unhealed = append(rep.Unhealed, UsageUnhealed{SubscriptionID: sub.id, Reason: err.Error()})
		s.cfg.Metrics.GetOrCreateCounter(`veil_controlplane_reconcile_unhealed_total{kind="usage"}`).Inc()
		s.log.ErrorContext(ctx, "usage drift not healed", append(attrs, "err", err)...)
		return
	}
	rep.Healed++
	s.cfg.Metrics.GetOrCreateCounter(`veil_controlplane_reconcile_healed_total{kind="usage"}`).Inc()
	s.log.WarnContext(ctx, "usage drift healed", attrs...)
}

// driftParse reads a counter field; absent is zero.
func driftParse(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	return strconv.ParseInt(v, 10, 64)
}

// driftFormat is a watermark map as the hash stores it.
func driftFormat(wm map[int32]int64) map[string]string {
	out := make(map[string]string, len(wm))
	for p, off := range wm {
		out[strconv.Itoa(int(p))] = strconv.FormatInt(off, 10)
	}
	return out
}

// driftCount returns how many admitted requests, and how many units in
// micro-units, ClickHouse holds for the subscription's period up to the
// watermarks.
func (s *Service) driftCount(ctx context.Context, sub driftSub, watermarks map[int32]int64) (requests, unitsMicro int64, err error) {
	if len(watermarks) == 0 {
		return 0, 0, nil
	}
	query, args := driftCountQuery(sub, watermarks)
	var (
		n     uint64
		units decimal.Decimal
	)
	if err := s.cfg.ClickHouse.QueryRow(ctx, query, args...).Scan(&n, &units); err != nil {
		return 0, 0, fmt.Errorf("count usage of %s: %w", sub.id, err)
	}
	return int64(n), units.Shift(6).IntPart(), nil
}

// driftCountQuery counts the admitted rows of the period up to each
// partition's watermark: rows beyond it are a batch Redis has not applied
// yet, and partitions without one hold nothing Redis counted.
func driftCountQuery(sub driftSub, watermarks map[int32]int64) (string, []any) {
	var b strings.Builder
	b.WriteString("SELECT count(), sum(units) FROM usage_events WHERE subject = ? AND time >= ? AND time < ? AND refusal = '' AND (")
	args := []any{sub.id.String(), sub.start, sub.end}
	for i, p := range slices.Sorted(maps.Keys(watermarks)) {
		if i > 0 {
			b.WriteString(" OR ")
		}
		b.WriteString("(kafka_partition = ? AND kafka_offset <= ?)")
		args = append(args, p, watermarks[p])
	}
	b.WriteString(")")
	return b.String(), args
}

// driftHealScript rewrites one subscription's period counter and offset
// watermarks from ClickHouse's figures, if the watermark hash and the
// counter still hold what the check read (compare-and-set: when the
// processors moved in between, it gives up and the next run looks again).
// The watermarks written are the ones read plus those Redis had lost:
// a watermark is never moved forward over a batch Redis has yet to apply.
// Writing lost ones matters: a processor whose cached watermark is older
// finds it moved, reloads it and skips rows ClickHouse already has.
//
// It then recomputes what the counter implies from the effective quota.
// That is the subscription record's quota and hardness when the record is
// there and names the same period: a credit or a plan change written
// since the check read Postgres is in it, and must not be undone (a heal
// that blocked again right after a credit lifted the block). Only without
// such a record (after a flush) does the quota from ARGV, read from
// Postgres, apply. Every threshold (80, 90, 100%) of a positive quota
// reached and not yet recorded for this quota is recorded
// (crossed_<pct> = quota) and its line pushed to the quota outbox, for the
// processors' sweep to produce, so a crossing lost with a flushed Redis
// is still announced (the control plane dedupes); a threshold no longer
// reached is forgotten. A hard quota (0 included) used up blocks until
// the period's end, anything else lifts the block, as the record's own
// write decides (gatewayrecord's putSubscriptionScript). The block is
// rewritten only when it changes, so the gateway's cached copy is
// invalidated only then.
//
// KEYS[1] watermark hash, KEYS[2] period counter, KEYS[3] block, KEYS[4]
// the subscription record (period_start, quota_requests, quota_hard),
// KEYS[5] quota outbox; all carry the subscription's hash tag.
// ARGV[1], ARGV[2] the counter's requests and units_micro as read ("" for
// absent), ARGV[3], ARGV[4] the new ones, ARGV[5], ARGV[6] period start and
// end (Unix seconds), ARGV[7] counter ttl seconds, ARGV[8] quota (-1
// unlimited), ARGV[9] hard "1" or "0", ARGV[10] n, then n partition,
// offset pairs as read, then the pairs to write.
// Returns {0} when something moved, {1, blocked, crossings} otherwise.
var driftHealScript = rueidis.NewLuaScript(`
local n = tonumber(ARGV[10])
local cur = redis.call('HGETALL', KEYS[1])
if #cur ~= 2 * n then return {0} end
local read = {}
for i = 11, 10 + 2 * n, 2 do read[ARGV[i]] = ARGV[i + 1] end
for i = 1, #cur, 2 do
  if read[cur[i]] ~= cur[i + 1] then return {0} end
end
local c = redis.call('HMGET', KEYS[2], 'requests', 'units_micro')
if (c[1] or '') ~= ARGV[1] or (c[2] or '') ~= ARGV[2] then return {0} end

redis.call('DEL', KEYS[1])
if #ARGV > 10 + 2 * n then
  redis.call('HSET', KEYS[1], unpack(ARGV, 11 + 2 * n))
end
redis.call('HSET', KEYS[2], 'requests', ARGV[3], 'units_micro', ARGV[4], 'period_end', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])

local quota, hard = tonumber(ARGV[8]), ARGV[9]
if redis.call('TYPE', KEYS[4])['ok'] == 'hash' then
  local rec = redis.call('HMGET', KEYS[4], 'period_start', 'quota_requests', 'quota_hard')
  local q = tonumber(rec[2])
  if tonumber(rec[1]) == tonumber(ARGV[5]) and q then
    quota = math.floor(q)
    hard = rec[3] == '1' and '1' or '0'
  end
end
local qs = string.format('%d', quota)
local used = tonumber(ARGV[3])
local crossed = 0
if quota > 0 then
  for _, pct in ipairs({80, 90, 100}) do
    local field = 'crossed_' .. pct
    if used >= math.ceil(quota * pct / 100) then
      if redis.call('HGET', KEYS[2], field) ~= qs then
        redis.call('HSET', KEYS[2], field, qs)
        redis.call('RPUSH', KEYS[5], 'v1|' .. ARGV[5] .. '|' .. ARGV[6] .. '|' .. pct .. '|' .. qs .. '|' .. ARGV[3] .. '|' .. hard)
        crossed = crossed + 1
      end
    else
      redis.call('HDEL', KEYS[2], field)
    end
  end
end
local blocked = 0
if quota >= 0 and hard == '1' and used >= quota then
  if redis.call('GET', KEYS[3]) ~= ARGV[6] then
    redis.call('SET', KEYS[3], ARGV[6], 'EXAT', ARGV[6])
  end
  blocked = 1
else
  redis.call('DEL', KEYS[3])
end
return {1, blocked, crossed}
`)

// driftHeal runs driftHealScript. applied is false when Redis no longer
// holds what red says was read.
func (s *Service) driftHeal(ctx context.Context, sub driftSub, red driftRedis, watermarks map[int32]int64, requests, unitsMicro int64) (applied, blocked bool, err error) {
	id := sub.id.String()
	keys := []string{
		gatewayrecord.WatermarkName(id), gatewayrecord.PeriodCounterName(id, sub.start), gatewayrecord.BlockName(id),
		gatewayrecord.SubscriptionName(id), gatewayrecord.QuotaOutboxName(id),
	}
	hard := "0"
	if sub.hard {
		hard = "1"
	}
	args := make([]string, 0, 10+2*len(red.watermarks)+2*len(watermarks))
	args = append(args, red.requests, red.units, strconv.FormatInt(requests, 10), strconv.FormatInt(unitsMicro, 10),
		strconv.FormatInt(sub.start.Unix(), 10), strconv.FormatInt(sub.end.Unix(), 10),
		strconv.Itoa(int(driftCounterTTL/time.Second)), strconv.FormatInt(sub.quota, 10), hard,
		strconv.Itoa(len(red.watermarks)))
	for field, v := range red.watermarks {
		args = append(args, field, v)
	}
	for p, off := range driftFormat(watermarks) {
		args = append(args, p, off)
	}
	res, err := driftHealScript.Exec(ctx, s.cfg.Redis, keys, args).AsIntSlice()
	if err != nil {
		return false, false, fmt.Errorf("heal usage counter: %w", err)
	}
	if len(res) == 0 || res[0] == 0 {
		return false, false, nil
	}
	if len(res) != 3 {
		return false, false, fmt.Errorf("heal usage counter: unexpected reply %v", res)
	}
	return true, res[1] == 1, nil
}

// ReconcileUsageArgs is the scheduled usage drift check.
type ReconcileUsageArgs struct{}

// Kind implements river.JobArgs.
func (ReconcileUsageArgs) Kind() string { return "usage_reconcile" }

// ReconcileUsageWorker runs ReconcileUsageArgs jobs.
type ReconcileUsageWorker struct {
	river.WorkerDefaults[ReconcileUsageArgs]
	s *Service
}

// ReconcileUsageWorker returns the worker of scheduled drift checks.
func (s *Service) ReconcileUsageWorker() *ReconcileUsageWorker { return &ReconcileUsageWorker{s: s} }

// reconcileUsageTimeout bounds one scheduled run. River rescues a job
// still running after the control plane's --job-rescue-after (1 minute by
// default) and runs it again, so a longer run would be checked, and
// healed, twice at once. A run cut short loses nothing: its heals are
// compare-and-set, and the next scheduled run starts over.
const reconcileUsageTimeout = 50 * time.Second

// Timeout bounds one run (see reconcileUsageTimeout).
func (w *ReconcileUsageWorker) Timeout(*river.Job[ReconcileUsageArgs]) time.Duration {
	return reconcileUsageTimeout
}

// Work checks and logs the report.
func (w *ReconcileUsageWorker) Work(ctx context.Context, _ *river.Job[ReconcileUsageArgs]) error {
	rep, err := w.s.ReconcileUsage(ctx)
	if err != nil {
		return err
	}
	lvl := slog.LevelInfo
	if rep.Drifted > 0 || len(rep.Unhealed) > 0 {
		lvl = slog.LevelWarn
	}
	w.s.log.Log(ctx, lvl, "usage reconciliation", "checked", rep.Checked, "in_flight", rep.InFlight,
		"drifted", rep.Drifted, "healed", rep.Healed, "unhealed", len(rep.Unhealed))
	return nil
}
