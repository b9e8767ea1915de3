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
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"
	"github.com/riverqueue/river"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/schemas/usage"
)

// ErrNoClickHouse: the drift check needs Config.ClickHouse, and it is nil.
var ErrNoClickHouse = errors.New("no ClickHouse connection (Config.ClickHouse)")

// DefaultDriftSettle is Config.DriftSettle's default: how long the drift
// check waits, once it found a subscription drifted with a watermark
// missing or unreadable, before it looks at Redis again and heals. It
// outlasts a processor batch (500 ms at most by default), so a batch
// ClickHouse already holds and Redis is applying shows up as a change
// rather than as drift. Drift with every watermark readable is not waited
// on: rows beyond the watermarks are left out of the comparison anyway.
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

// ErrUnitsPastCounter: ClickHouse's units for a subscription's period pass
// what a Redis counter of micro-units holds (usage.MaxCounterMicro), which
// only rows written before the units cap can do. The drift is reported,
// never written: the rows need an operator.
var ErrUnitsPastCounter = errors.New("units past what a counter holds")

// Lifetime of a healed period counter: the processors' (periodTTL there).
const driftCounterTTL = 400 * 24 * time.Hour

// driftChunk is how many subscriptions are read from Postgres and Redis,
// and asked of ClickHouse in one query, at a time.
const driftChunk = 500

// driftRunsKept is how many runs usage_reconcile_runs keeps.
const driftRunsKept = 100

// driftLookback is how far before a period's start the usage query
// looks. The processors refuse events older than the late window or
// further ahead than the future allowance, judged when they process
// them, and process a partition in offset order. So every row from a
// partition at or after a row of the period (time ≥ start, processed no
// earlier than start minus the allowance) is younger than start minus
// both: for every partition with rows of the period, the bounded maximum
// is the true one. Older rows are only scanned, not needed.
const driftLookback = usage.DefaultLateWindow + usage.DefaultMaxFuture

// driftHealAttempts is how many compare-and-set heals a drifted
// subscription gets in one run, each after a fresh read when the
// processors moved, before it is left in flight.
const driftHealAttempts = 3

// driftFresh: a partition ClickHouse holds rows of and Redis has no
// watermark for is lost only when ClickHouse ingested its newest row
// longer ago than this. A younger row is most likely a first batch whose
// Redis apply is still under way.
const driftFresh = time.Minute

// driftDeadlineMargin is the time a run keeps in hand before its
// context's deadline: it checks no further chunk past it, so that what it
// checked is still stored.
const driftDeadlineMargin = 5 * time.Second

// ReconcileUsage checks, for every live subscription (trialing, active,
// past_due, suspended), that its Redis counter for the current period
// holds exactly what ClickHouse says the processors applied, and heals the
// counter, the offset watermarks, the threshold crossings and the quota
// block when not. The run is stored (see LastUsageReport).
//
// What is compared: the counter's requests and units against ClickHouse's
// admitted rows (no refusal) of the period [start, end) from each
// partition up to the offset Redis's watermark for that partition says
// was applied. The watermark hash and the counter are read together, by
// one script, so they always belong to the same batch. Rows beyond a
// watermark are a batch Redis has not applied yet (processors before the
// units cap wrote both sinks at once; today's write Redis first): they
// are ignored, and the watermark is never moved forward over them. A watermark beyond what ClickHouse
// holds means ClickHouse is behind: when the figures then disagree the
// subscription is in flight and left for the next run. A watermark for a
// partition ClickHouse has no rows of since driftLookback is beyond it
// only when ClickHouse's whole history of that partition stops short of
// it: an idle partition is not in flight.
//
// A partition ClickHouse holds rows of and Redis has no readable
// watermark for means Redis lost it (a flush): it counts up to
// ClickHouse's highest offset there, and the heal writes that watermark,
// unless ClickHouse ingested the partition's newest row within the last
// minute (driftFresh), in which case it is a first batch Redis is still
// applying and the subscription is in flight. Such a subscription is
// healed only after a settle (Config.DriftSettle), once its Redis state
// is read again and found unmoved and the figures, recomputed, still
// differ. Any other drift is healed at once by a compare-and-set against
// the state read: when the processors moved in between (a busy
// subscription), the state and ClickHouse's figures up to the new
// watermarks are read again and the heal retried, up to three attempts,
// after which the subscription is in flight.
//
// Period bounds and quotas come from Postgres, so a flushed Redis, the
// subscription record included, is healed too; where the record is there
// and names the same period, its quota wins, and where it names a later
// one, Postgres is stale and the subscription is in flight (see
// driftHealScript).
//
// When ctx has a deadline, the run checks no further chunk of
// subscriptions once fewer than 5 s are left and stores what it checked
// so far; a run always checks its first chunk. ReconcileUsage starts from
// the first subscription; ReconcileUsageWorker resumes where the previous
// run of its process stopped.
func (s *Service) ReconcileUsage(ctx context.Context) (UsageReport, error) {
	rep, _, err := s.reconcileUsage(ctx, driftRun{chunk: driftChunk, settle: s.driftSettle})
	return rep, err
}

// driftRun is how one run goes.
type driftRun struct {
	// after: the run checks the subscriptions after this id, then wraps
	// around to the first and stops at it. uuid.Nil runs from the first
	// to the last.
	after uuid.UUID
	// chunk is how many subscriptions are checked at a time (driftChunk).
	chunk int
	// settle waits between finding a lost watermark and healing
	// (Service.driftSettle); tests act during it.
	settle func(context.Context) error
	// beforeHeal, when set, runs before each round of compare-and-set
	// heals; tests move Redis there as the processors would.
	beforeHeal func()
}

// reconcileUsage is one run. It returns, besides the report, the id to
// resume after: the last subscription checked when the deadline cut the
// run short, uuid.Nil when the run went all the way round.
func (s *Service) reconcileUsage(ctx context.Context, run driftRun) (UsageReport, uuid.UUID, error) {
	rep := UsageReport{StartedAt: s.now().UTC(), Unhealed: []UsageUnhealed{}, Drift: []UsageDrift{}}
	if s.cfg.ClickHouse == nil {
		return rep, run.after, fmt.Errorf("reconcile usage: %w", ErrNoClickHouse)
	}
	// First the ids after run.after, then, wrapped, those up to it.
	cursor, upTo, wrapped := run.after, uuid.Max, run.after == uuid.Nil
	resume, checked := uuid.Nil, false
	for {
		if checked && s.driftNearDeadline(ctx) {
			break
		}
		subs, err := s.driftLoadSubs(ctx, cursor, upTo, run.chunk)
		if err != nil {
			return rep, run.after, err
		}
		if len(subs) > 0 {
			if err := s.driftCheckChunk(ctx, subs, run, &rep); err != nil {
				return rep, run.after, err
			}
			cursor, checked = subs[len(subs)-1].id, true
			resume = cursor
		}
		if len(subs) < run.chunk {
			if wrapped {
				resume = uuid.Nil // all the way round
				break
			}
			cursor, upTo, wrapped = uuid.Nil, run.after, true
		}
	}
	rep.FinishedAt = s.now().UTC()
	s.cfg.Metrics.GetOrCreateGauge(`veil_controlplane_usage_drift_subscriptions`, nil).Set(float64(rep.Drifted))
	s.cfg.Metrics.GetOrCreateGauge(`veil_controlplane_usage_in_flight_subscriptions`, nil).Set(float64(rep.InFlight))
	if err := s.driftStore(ctx, rep); err != nil {
		return rep, run.after, err
	}
	return rep, resume, nil
}

// driftNearDeadline reports whether ctx ends within driftDeadlineMargin.
func (s *Service) driftNearDeadline(ctx context.Context) bool {
	deadline, ok := ctx.Deadline()
	return ok && deadline.Sub(s.now()) < driftDeadlineMargin
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

// driftLoadSubs returns the next limit live subscriptions after the id
// and up to upTo, in id order.
func (s *Service) driftLoadSubs(ctx context.Context, after, upTo uuid.UUID, limit int) ([]driftSub, error) {
	rows, err := s.pool.Query(ctx, `SELECT s.id, s.current_period_start, s.current_period_end, v.quota_requests, v.quota_hard,
		COALESCE((SELECT sum(q.requests) FROM quota_adjustments q
			WHERE q.subscription_id = s.id AND q.period_start = s.current_period_start), 0)::bigint
		FROM subscriptions s JOIN plan_versions v ON v.id = s.plan_version_id
		WHERE s.status IN ('trialing', 'active', 'past_due', 'suspended') AND s.id > $1 AND s.id <= $2
		ORDER BY s.id LIMIT $3`, after, upTo, limit)
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
		d.quota = Limit(plan, adjustments)
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

// readable returns the watermarks that parse as a partition and an
// offset, and whether any did not.
func (r driftRedis) readable() (map[int32]int64, bool) {
	out := make(map[int32]int64, len(r.watermarks))
	garbled := false
	for field, v := range r.watermarks {
		p, err1 := strconv.ParseInt(field, 10, 32)
		off, err2 := strconv.ParseInt(v, 10, 64)
		if err1 != nil || err2 != nil || off < 0 || strconv.FormatInt(p, 10) != field || strconv.FormatInt(off, 10) != v {
			garbled = true
			continue
		}
		out[int32(p)] = off
	}
	return out, garbled
}

// driftVerdict is what comparing one subscription concluded.
type driftVerdict int

const (
	// driftInSync: Redis holds what ClickHouse says; nothing to do.
	driftInSync driftVerdict = iota
	// driftInFlight: they disagree while ClickHouse is behind Redis, or
	// holds a fresh batch of a partition Redis has no watermark for.
	driftInFlight
	// driftDiffers: they disagree, and every partition has a readable
	// watermark: healed at once.
	driftDiffers
	// driftLost: a partition's watermark is lost or unreadable: healed
	// after the settle.
	driftLost
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
	// chUnits is ClickHouse's units, exact; unitsTooLarge reports that
	// they pass what a counter holds (usage.MaxCounterMicro), rows
	// written before the units cap: wantUnits is then meaningless and the
	// heal refuses (ErrUnitsPastCounter) rather than write a wrapped sum.
	chUnits       decimal.Decimal
	unitsTooLarge bool
	// behind: target adds or rewrites watermarks.
	behind bool
	// idle are the watermarks of partitions ClickHouse has no rows of
	// since the lookback: partition → offset. Whether they are ahead of
	// ClickHouse takes its whole history (driftResolveIdle).
	idle map[int32]int64
}

// driftCase is a subscription, its Redis state as read and what comparing
// it found.
type driftCase struct {
	sub driftSub
	red driftRedis
	f   driftFinding
}

// driftCheckChunk compares a chunk of subscriptions with ClickHouse and
// heals the drifted ones. Only a failure that concerns the whole run is
// returned; a failed heal is reported.
func (s *Service) driftCheckChunk(ctx context.Context, subs []driftSub, run driftRun, rep *UsageReport) error {
	cases, err := s.driftAssess(ctx, subs)
	if err != nil {
		return err
	}
	var direct, lost []driftCase
	for _, c := range cases {
		rep.Checked++
		switch c.f.verdict {
		case driftInFlight:
			rep.InFlight++
		case driftDiffers:
			direct = append(direct, c)
		case driftLost:
			lost = append(lost, c)
		}
	}
	if err := s.driftHealDirect(ctx, direct, run.beforeHeal, rep); err != nil {
		return err
	}
	return s.driftHealLost(ctx, lost, run.settle, rep)
}

// driftAssess reads the subscriptions' Redis state and compares it with
// ClickHouse: one Redis round trip and one ClickHouse query for them all,
// and one more query when idle partitions need looking up.
func (s *Service) driftAssess(ctx context.Context, subs []driftSub) ([]driftCase, error) {
	states, err := s.driftReadRedis(ctx, subs)
	if err != nil {
		return nil, err
	}
	bounds := make([]map[int32]int64, len(subs))
	for i, st := range states {
		bounds[i], _ = st.readable()
	}
	parts, err := s.driftUsage(ctx, subs, bounds)
	if err != nil {
		return nil, err
	}
	now := s.now()
	cases := make([]driftCase, len(subs))
	for i, sub := range subs {
		cases[i] = driftCase{sub: sub, red: states[i], f: driftCompare(states[i], parts[sub.id.String()], now)}
	}
	if err := s.driftResolveIdle(ctx, cases); err != nil {
		return nil, err
	}
	return cases, nil
}

// driftHealDirect heals drift found with every watermark readable, by
// compare-and-set; those whose Redis state moved meanwhile are read and
// compared again and retried, up to driftHealAttempts in all.
func (s *Service) driftHealDirect(ctx context.Context, cases []driftCase, beforeHeal func(), rep *UsageReport) error {
	for attempt := 1; len(cases) > 0; attempt++ {
		if beforeHeal != nil {
			beforeHeal()
		}
		moved := s.driftHealReport(ctx, cases, rep)
		if len(moved) == 0 {
			return nil
		}
		if attempt == driftHealAttempts {
			rep.InFlight += len(moved)
			return nil
		}
		subs := make([]driftSub, len(moved))
		for i, c := range moved {
			subs[i] = c.sub
		}
		again, err := s.driftAssess(ctx, subs)
		if err != nil {
			return err
		}
		cases = cases[:0]
		for _, c := range again {
			switch c.f.verdict {
			case driftInFlight, driftLost:
				// A lost watermark now: the next run settles it.
				rep.InFlight++
			case driftDiffers:
				cases = append(cases, c)
			}
		}
	}
	return nil
}

// driftHealLost heals drift found with a watermark lost or unreadable,
// after the settle, and only if nothing moved during it.
func (s *Service) driftHealLost(ctx context.Context, cases []driftCase, settle func(context.Context) error, rep *UsageReport) error {
	if len(cases) == 0 {
		return nil
	}
	// Give a batch Redis is applying time to land, then look again: the
	// first look may have caught ClickHouse holding a batch whose Redis
	// script had not run yet.
	if err := settle(ctx); err != nil {
		return err
	}
	subs := make([]driftSub, len(cases))
	for i, c := range cases {
		subs[i] = c.sub
	}
	again, err := s.driftAssess(ctx, subs)
	if err != nil {
		return err
	}
	var heal []driftCase
	for i, c := range again {
		switch {
		case !c.red.equal(cases[i].red):
			rep.InFlight++ // the processors moved: what was compared is stale
		case c.f.verdict == driftInSync:
		case c.f.verdict == driftInFlight, !maps.Equal(c.f.target, cases[i].f.target):
			// ClickHouse moved on a partition Redis has no watermark for:
			// a batch Redis has yet to apply.
			rep.InFlight++
		default:
			heal = append(heal, c)
		}
	}
	rep.InFlight += len(s.driftHealReport(ctx, heal, rep))
	return nil
}

// driftReadScript reads a subscription's watermark hash and period
// counter at once, so the two always come from the same processor batch.
// KEYS[1] watermark hash, KEYS[2] period counter (same hash tag).
var driftReadScript = rueidis.NewLuaScript(`
return {redis.call('HGETALL', KEYS[1]), redis.call('HMGET', KEYS[2], 'requests', 'units_micro')}
`)

// driftReadRedis reads the watermarks and period counters of the
// subscriptions in one round trip.
func (s *Service) driftReadRedis(ctx context.Context, subs []driftSub) ([]driftRedis, error) {
	execs := make([]rueidis.LuaExec, len(subs))
	for i, sub := range subs {
		id := sub.id.String()
		execs[i] = rueidis.LuaExec{Keys: []string{enforcement.WatermarkName(id), enforcement.PeriodCounterName(id, sub.start)}}
	}
	results := driftReadScript.ExecMulti(ctx, s.cfg.Redis, execs...)
	states := make([]driftRedis, len(subs))
	for i, sub := range subs {
		reply, err := results[i].ToArray()
		if err != nil {
			return nil, fmt.Errorf("read usage state of %s: %w", sub.id, err)
		}
		if len(reply) != 2 {
			return nil, fmt.Errorf("read usage state of %s: %d replies, want 2", sub.id, len(reply))
		}
		wm, err := reply[0].AsStrMap()
		if err != nil {
			return nil, fmt.Errorf("read watermarks of %s: %w", sub.id, err)
		}
		counter, err := reply[1].ToArray()
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

// driftPart is what ClickHouse holds of one subject's partition since the
// lookback.
type driftPart struct {
	// maxOffset is the highest offset (refused rows too: the watermarks
	// count every row), newest the latest ingested_at.
	maxOffset int64
	newest    time.Time
	// requests and units sum the admitted rows of the subject's period up
	// to the partition's watermark (all of them without one). units stays
	// a decimal: rows written before the units cap may sum past what a
	// counter of micro-units holds.
	requests int64
	units    decimal.Decimal
}

// driftUsage asks ClickHouse, in one query, for each subject of the chunk
// and each partition, what driftPart says. bounds are the subscriptions'
// readable watermarks, in the order of subs.
func (s *Service) driftUsage(ctx context.Context, subs []driftSub, bounds []map[int32]int64) (map[string]map[int32]driftPart, error) {
	query, args := driftUsageQuery(subs, bounds)
	rows, err := s.cfg.ClickHouse.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read clickhouse usage: %w", err)
	}
	defer rows.Close()
	out := map[string]map[int32]driftPart{}
	for rows.Next() {
		var (
			subject   string
			partition int32
			p         driftPart
			n         uint64
			units     decimal.Decimal
		)
		if err := rows.Scan(&subject, &partition, &p.maxOffset, &p.newest, &n, &units); err != nil {
			return nil, fmt.Errorf("read clickhouse usage: %w", err)
		}
		p.requests, p.units = int64(n), units
		if out[subject] == nil {
			out[subject] = map[int32]driftPart{}
		}
		out[subject][partition] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read clickhouse usage: %w", err)
	}
	return out, nil
}

// driftKey names a subject's partition in the queries' lookup arrays.
func driftKey(subject string, partition int32) string {
	return subject + "/" + strconv.Itoa(int(partition))
}

// driftUsageQuery reads a chunk's figures in one pass over its subjects'
// recent rows, grouped by subject and partition. Each subject's period
// bounds, and each partition's watermark, are looked up per row with
// transform() from constant arrays (a hash lookup, and portable down to
// ClickHouse 18.16); a partition without a watermark falls back to the
// largest offset, so all its rows count, consistent with the maximum the
// same query reports. The scan is bounded by time so that it reads the
// recent part of each subject, not its whole history: the table is
// ordered by (subject, time). One bound serves the chunk (the earliest
// start's); a later subscription is scanned a little further back than
// it needs, which changes none of its figures that matter (see
// driftLookback).
func driftUsageQuery(subs []driftSub, bounds []map[int32]int64) (string, []any) {
	ids := make([]string, len(subs))
	set := make([]any, len(subs))
	starts, ends := make([]uint32, len(subs)), make([]uint32, len(subs))
	var (
		keys    []string
		offsets []int64
	)
	since := subs[0].start
	for i, sub := range subs {
		ids[i] = sub.id.String()
		set[i] = ids[i]
		starts[i], ends[i] = uint32(sub.start.Unix()), uint32(sub.end.Unix())
		if sub.start.Before(since) {
			since = sub.start
		}
		for _, p := range slices.Sorted(maps.Keys(bounds[i])) {
			keys = append(keys, driftKey(ids[i], p))
			offsets = append(offsets, bounds[i][p])
		}
	}
	query := `SELECT subject, kafka_partition, max(kafka_offset), max(ingested_at),
		countIf(refusal = '' AND toUInt32(time) >= transform(subject, ?, ?, toUInt32(0))
			AND toUInt32(time) < transform(subject, ?, ?, toUInt32(0))`
	args := []any{ids, starts, ids, ends}
	if len(keys) > 0 {
		// transform() refuses empty arrays.
		query += `
			AND kafka_offset <= transform(concat(subject, '/', toString(kafka_partition)), ?, ?, toInt64(9223372036854775807))`
		args = append(args, keys, offsets)
	}
	query += ` AS admitted),
		sumIf(units, admitted)
		FROM usage_events WHERE subject IN ? AND time >= ? GROUP BY subject, kafka_partition`
	return query, append(args, clickhouse.GroupSet{Value: set}, since.Add(-driftLookback))
}

// driftCompare compares one subscription's Redis state, as read, with
// what ClickHouse holds of its subject (see driftUsage). now judges
// whether a partition without a watermark is fresh.
func driftCompare(red driftRedis, parts map[int32]driftPart, now time.Time) driftFinding {
	f := driftFinding{target: map[int32]int64{}, idle: map[int32]int64{}}
	if len(parts) == 0 && len(red.watermarks) == 0 && red.requests == "" && red.units == "" {
		return f // never used: nothing to compare
	}
	wm, garbled := red.readable()
	f.behind = garbled // unreadable: as if lost, and rewritten by the heal
	ahead, fresh := false, false
	for p, off := range wm {
		f.target[p] = off
		ch, ok := parts[p]
		switch {
		case !ok:
			f.idle[p] = off
		case off > ch.maxOffset:
			ahead = true
		}
	}
	for p, ch := range parts {
		f.wantRequests += ch.requests
		f.chUnits = f.chUnits.Add(ch.units)
		if _, ok := wm[p]; ok {
			continue
		}
		f.target[p] = ch.maxOffset // Redis lost this partition's watermark
		f.behind = true
		if now.Sub(ch.newest) < driftFresh {
			fresh = true
		}
	}
	if micro := f.chUnits.Shift(6); micro.IsInteger() && !micro.IsNegative() &&
		micro.LessThanOrEqual(decimal.NewFromInt(usage.MaxCounterMicro)) {
		f.wantUnits = micro.IntPart()
	} else {
		f.unitsTooLarge = true
	}
	var err1, err2 error
	f.gotRequests, err1 = driftParse(red.requests)
	f.gotUnits, err2 = driftParse(red.units)
	switch {
	case f.unitsTooLarge && !ahead && !fresh:
		f.verdict = driftDiffers // reported, never written
	case err1 == nil && err2 == nil && f.gotRequests == f.wantRequests && f.gotUnits == f.wantUnits && !f.behind:
		// Also when ahead: Redis applied rows ClickHouse does not hold
		// (yet), and the figures agree all the same.
		f.verdict = driftInSync
	case ahead, fresh:
		f.verdict = driftInFlight
	case f.behind:
		f.verdict = driftLost
	default:
		f.verdict = driftDiffers
	}
	return f
}

// driftResolveIdle settles, for the drifted cases with idle watermarks,
// whether those are ahead of ClickHouse: a partition ClickHouse has no
// rows of since the lookback is idle when its whole history reaches the
// watermark (rows that old are not in flight), and ahead, so the case in
// flight, when it does not (Redis applied a batch ClickHouse has yet to
// get: a new subject's first, say). One query serves them all; it reads
// those subjects' whole history, hence only when needed.
func (s *Service) driftResolveIdle(ctx context.Context, cases []driftCase) error {
	var subjects, keys []any
	for _, c := range cases {
		if (c.f.verdict != driftDiffers && c.f.verdict != driftLost) || len(c.f.idle) == 0 {
			continue
		}
		id := c.sub.id.String()
		subjects = append(subjects, id)
		for _, p := range slices.Sorted(maps.Keys(c.f.idle)) {
			keys = append(keys, driftKey(id, p))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	query, args := driftHistoryQuery(subjects, keys)
	rows, err := s.cfg.ClickHouse.Query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("read clickhouse offsets: %w", err)
	}
	defer rows.Close()
	highest := map[string]int64{}
	for rows.Next() {
		var (
			subject   string
			partition int32
			offset    int64
		)
		if err := rows.Scan(&subject, &partition, &offset); err != nil {
			return fmt.Errorf("read clickhouse offsets: %w", err)
		}
		highest[driftKey(subject, partition)] = offset
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read clickhouse offsets: %w", err)
	}
	for i, c := range cases {
		if c.f.verdict != driftDiffers && c.f.verdict != driftLost {
			continue
		}
		for p, off := range c.f.idle {
			if ch, ok := highest[driftKey(c.sub.id.String(), p)]; !ok || off > ch {
				cases[i].f.verdict = driftInFlight
				break
			}
		}
	}
	return nil
}

// driftHistoryQuery returns the highest offset of each subject's
// partition named by keys (see driftKey), over all time.
func driftHistoryQuery(subjects, keys []any) (string, []any) {
	return `SELECT subject, kafka_partition, max(kafka_offset) FROM usage_events
		WHERE subject IN ? AND concat(subject, '/', toString(kafka_partition)) IN ? GROUP BY subject, kafka_partition`,
		[]any{clickhouse.GroupSet{Value: subjects}, clickhouse.GroupSet{Value: keys}}
}

// driftHealReport heals the cases, in one round trip, and reports each;
// it returns those whose Redis state moved since it was read.
func (s *Service) driftHealReport(ctx context.Context, cases []driftCase, rep *UsageReport) []driftCase {
	var moved []driftCase
	for i, res := range s.driftHeal(ctx, cases) {
		c := cases[i]
		switch {
		case res.err == nil && res.outcome == driftMoved:
			moved = append(moved, c)
			continue
		case res.err == nil && res.outcome == driftStalePeriod:
			// The record names a later period than Postgres said: the
			// check read Postgres before a renewal.
			rep.InFlight++
			continue
		}
		rep.Drifted++
		f := c.f
		d := UsageDrift{
			SubscriptionID: c.sub.id, PeriodStart: c.sub.start,
			RedisRequests: f.gotRequests, ClickHouseRequests: f.wantRequests,
			RedisUnits: decimal.New(f.gotUnits, -6).String(), ClickHouseUnits: f.chUnits.String(),
			WatermarksBehind: f.behind, Blocked: res.blocked, Healed: res.err == nil,
		}
		rep.Drift = append(rep.Drift, d)
		attrs := []any{"subscription_id", c.sub.id, "period_start", c.sub.start, "redis_requests", d.RedisRequests,
			"clickhouse_requests", d.ClickHouseRequests, "redis_units", d.RedisUnits, "clickhouse_units", d.ClickHouseUnits,
			"watermarks_behind", f.behind, "blocked", res.blocked}
		if res.err != nil {
			rep.Unhealed = append(rep.Unhealed, UsageUnhealed{SubscriptionID: c.sub.id, Reason: res.err.Error()})
			s.cfg.Metrics.GetOrCreateCounter(`veil_controlplane_reconcile_unhealed_total{kind="usage"}`).Inc()
			s.log.ErrorContext(ctx, "usage drift not healed", append(attrs, "err", res.err)...)
			continue
		}
		rep.Healed++
		s.cfg.Metrics.GetOrCreateCounter(`veil_controlplane_reconcile_healed_total{kind="usage"}`).Inc()
		s.log.WarnContext(ctx, "usage drift healed", attrs...)
	}
	return moved
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

// driftHealScript rewrites one subscription's period counter and offset
// watermarks from ClickHouse's figures, if the watermark hash and the
// counter still hold what the check read (compare-and-set: when the
// processors moved in between, it gives up and the caller looks again).
// The watermarks written are the ones read plus those Redis had lost:
// a watermark is never moved forward over a batch Redis has yet to apply.
// Writing lost ones matters: a processor whose cached watermark is older
// finds it moved, reloads it and skips rows ClickHouse already has.
//
// A subscription record that names a later period than the one healed
// means the check read Postgres before the subscription renewed: the
// script writes nothing then, lest a stale period's counter clear the
// current period's block.
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
// write decides (enforcement.s putSubscriptionScript). The block is
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
// Returns {0} when something moved, {2} when the record names a later
// period, {1, blocked, crossings} once healed.
var driftHealScript = rueidis.NewLuaScript(enforcement.Lua + `
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

local quota, hard = tonumber(ARGV[8]), ARGV[9]
if redis.call('TYPE', KEYS[4])['ok'] == 'hash' then
  local rec = redis.call('HMGET', KEYS[4], 'period_start', 'quota_requests', 'quota_hard')
  local recStart, q = tonumber(rec[1]), tonumber(rec[2])
  if recStart and recStart > tonumber(ARGV[5]) then return {2} end
  if recStart == tonumber(ARGV[5]) and q then
    quota = math.floor(q)
    hard = rec[3] == '1' and '1' or '0'
  end
end

redis.call('DEL', KEYS[1])
if #ARGV > 10 + 2 * n then
  redis.call('HSET', KEYS[1], unpack(ARGV, 11 + 2 * n))
end
redis.call('HSET', KEYS[2], 'requests', ARGV[3], 'units_micro', ARGV[4], 'period_end', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])

local used = tonumber(ARGV[3])
local crossed = 0
if quota > 0 then
  -- A threshold the true count has not reached is forgotten, so that
  -- the count crossing it later is announced.
  for _, pct in ipairs({80, 90, 100}) do
    if used < math.ceil(quota * pct / 100) then redis.call('HDEL', KEYS[2], 'crossed_' .. pct) end
  end
  crossed = announce(KEYS[2], KEYS[5], ARGV[5], ARGV[6], quota, used, hard == '1', -1)
end
return {1, reblock(KEYS[3], ARGV[6], quota, hard == '1', used), crossed}
`)

// driftOutcome is how one heal ended.
type driftOutcome int

const (
	// driftHealed: written.
	driftHealed driftOutcome = iota
	// driftMoved: Redis no longer held what was read; nothing written.
	driftMoved
	// driftStalePeriod: the subscription record names a later period
	// than the one healed; nothing written.
	driftStalePeriod
)

// driftHealResult is what driftHeal did for one case.
type driftHealResult struct {
	outcome driftOutcome
	blocked bool
	err     error
}

// driftHeal runs driftHealScript for each case, against the Redis state
// it read, with its finding's target watermarks and figures, in one
// round trip.
func (s *Service) driftHeal(ctx context.Context, cases []driftCase) []driftHealResult {
	out := make([]driftHealResult, len(cases))
	if len(cases) == 0 {
		return out
	}
	execs := make([]rueidis.LuaExec, 0, len(cases))
	var sent []int
	for i, c := range cases {
		if c.f.unitsTooLarge {
			out[i].err = fmt.Errorf("heal usage counter: ClickHouse holds %s units, more than a counter of micro-units takes: %w",
				c.f.chUnits, ErrUnitsPastCounter)
			continue
		}
		sent = append(sent, i)
		id := c.sub.id.String()
		hard := "0"
		if c.sub.hard {
			hard = "1"
		}
		args := make([]string, 0, 10+2*len(c.red.watermarks)+2*len(c.f.target))
		args = append(args, c.red.requests, c.red.units, strconv.FormatInt(c.f.wantRequests, 10), strconv.FormatInt(c.f.wantUnits, 10),
			strconv.FormatInt(c.sub.start.Unix(), 10), strconv.FormatInt(c.sub.end.Unix(), 10),
			strconv.Itoa(int(driftCounterTTL/time.Second)), strconv.FormatInt(c.sub.quota, 10), hard,
			strconv.Itoa(len(c.red.watermarks)))
		for field, v := range c.red.watermarks {
			args = append(args, field, v)
		}
		for p, off := range driftFormat(c.f.target) {
			args = append(args, p, off)
		}
		execs = append(execs, rueidis.LuaExec{Keys: []string{
			enforcement.WatermarkName(id), enforcement.PeriodCounterName(id, c.sub.start), enforcement.BlockName(id),
			enforcement.SubscriptionName(id), enforcement.QuotaOutboxName(id),
		}, Args: args})
	}
	if len(execs) == 0 {
		return out
	}
	for j, r := range driftHealScript.ExecMulti(ctx, s.cfg.Redis, execs...) {
		i := sent[j]
		res, err := r.AsIntSlice()
		switch {
		case err != nil:
			out[i].err = fmt.Errorf("heal usage counter: %w", err)
		case len(res) == 1 && res[0] == 0:
			out[i].outcome = driftMoved
		case len(res) == 1 && res[0] == 2:
			out[i].outcome = driftStalePeriod
		case len(res) == 3 && res[0] == 1:
			out[i].outcome, out[i].blocked = driftHealed, res[1] == 1
		default:
			out[i].err = fmt.Errorf("heal usage counter: unexpected reply %v", res)
		}
	}
	return out
}

// ReconcileUsageArgs is the scheduled usage drift check.
type ReconcileUsageArgs struct{}

// Kind implements river.JobArgs.
func (ReconcileUsageArgs) Kind() string { return "usage_reconcile" }

// ReconcileUsageWorker runs ReconcileUsageArgs jobs. A run cut short by
// its deadline stores what it checked, and the worker remembers the last
// subscription it checked: the next run in this process starts after it,
// goes on to the last, and wraps around to it, so that the check covers
// every subscription however many there are. The place is kept in memory:
// a restart, or a run in another process, starts from the first
// subscription, which costs a repeat, never a miss.
type ReconcileUsageWorker struct {
	river.WorkerDefaults[ReconcileUsageArgs]
	s *Service
	// chunk is driftChunk; tests make it small.
	chunk int

	mu sync.Mutex
	// after is the subscription the next run starts after (uuid.Nil:
	// from the first).
	after uuid.UUID
}

// ReconcileUsageWorker returns the worker of scheduled drift checks.
func (s *Service) ReconcileUsageWorker() *ReconcileUsageWorker {
	return &ReconcileUsageWorker{s: s, chunk: driftChunk}
}

// reconcileUsageTimeout bounds one scheduled run. River rescues a job
// still running after the control plane's --job-rescue-after (1 minute by
// default) and runs it again, so a longer run would be checked, and
// healed, twice at once. A run cut short loses nothing: it stops checking
// driftDeadlineMargin before the timeout, its heals are compare-and-set,
// and the next run resumes after the last subscription it checked.
const reconcileUsageTimeout = 50 * time.Second

// Timeout bounds one run (see reconcileUsageTimeout).
func (w *ReconcileUsageWorker) Timeout(*river.Job[ReconcileUsageArgs]) time.Duration {
	return reconcileUsageTimeout
}

// Work checks, resuming where the previous run stopped, and logs the
// report.
func (w *ReconcileUsageWorker) Work(ctx context.Context, _ *river.Job[ReconcileUsageArgs]) error {
	w.mu.Lock()
	after := w.after
	w.mu.Unlock()
	rep, next, err := w.s.reconcileUsage(ctx, driftRun{after: after, chunk: w.chunk, settle: w.s.driftSettle})
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.after = next
	w.mu.Unlock()
	lvl := slog.LevelInfo
	if rep.Drifted > 0 || len(rep.Unhealed) > 0 {
		lvl = slog.LevelWarn
	}
	w.s.log.Log(ctx, lvl, "usage reconciliation", "checked", rep.Checked, "in_flight", rep.InFlight,
		"drifted", rep.Drifted, "healed", rep.Healed, "unhealed", len(rep.Unhealed), "complete", next == uuid.Nil)
	return nil
}
