package analytics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kadm"
	"golang.org/x/sync/errgroup"

	"github.com/veil-platform/veil/control-plane/identity"
)

// GroupLagger reads consumer group lag (a *kadm.Client).
type GroupLagger interface {
	Lag(ctx context.Context, groups ...string) (kadm.DescribedGroupLags, error)
}

// overviewPartTimeout bounds each part of the overview, so that a store
// that hangs costs that part, not the page.
const overviewPartTimeout = 3 * time.Second

// Overview answers GET /v1/admin/overview. A part whose store did not
// answer is null, and Unavailable says which and why.
type Overview struct {
	AsOf        time.Time               `json:"as_of"`
	Volume      *Volume                 `json:"volume"`
	Revenue     map[string]RevenueTotal `json:"revenue"`
	Pipeline    Pipeline                `json:"pipeline"`
	Approvals   *ApprovalQueue          `json:"approvals"`
	Unavailable []UnavailablePart       `json:"unavailable"`
}

// UnavailablePart names a part of the overview that is null and why.
type UnavailablePart struct {
	Part   string `json:"part"`
	Reason string `json:"reason"`
}

// Volume is the platform's calls: the last 24 hours (whole UTC hours, the
// current one included), the last 30 UTC days (today included) and each
// of those days.
type Volume struct {
	Calls24h uint64      `json:"calls_24h"`
	Calls30d uint64      `json:"calls_30d"`
	ByDay    []DayVolume `json:"by_day"`
}

// DayVolume is one UTC day's calls.
type DayVolume struct {
	Day   string `json:"day"`
	Calls uint64 `json:"calls"`
}

// RevenueTotal is one currency's revenue over the last 30 days: invoiced
// (finalized invoices' totals, void ones left out), paid (invoices paid in
// those days) and accrued (the cost so far of live subscriptions' current
// periods, from their outlooks).
type RevenueTotal struct {
	Invoiced decimal.Decimal `json:"invoiced"`
	Paid     decimal.Decimal `json:"paid"`
	Accrued  decimal.Decimal `json:"accrued"`
}

// Pipeline is the usage pipeline's health; each part null when its store
// did not answer.
type Pipeline struct {
	ConsumerLag *ConsumerLag `json:"consumer_lag"`
	DLQ         *DLQHealth   `json:"dlq"`
	Drift       *DriftRun    `json:"drift"`
}

// ConsumerLag is how many records the processors' consumer group has yet
// to read, in all and per topic.
type ConsumerLag struct {
	Group   string           `json:"group"`
	State   string           `json:"state"`
	Members int              `json:"members"`
	Total   int64            `json:"total"`
	Topics  map[string]int64 `json:"topics"`
}

// DLQHealth is the last hour of the dead-letter queue: records the
// processors refused (usage_rejects), events they wrote, and the share
// refused (4 decimals).
type DLQHealth struct {
	RejectsLastHour uint64 `json:"rejects_last_hour"`
	EventsLastHour  uint64 `json:"events_last_hour"`
	RejectRate      string `json:"reject_rate"`
}

// DriftRun summarizes the last usage reconciliation (null before any).
type DriftRun struct {
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	Checked    int       `json:"checked"`
	InFlight   int       `json:"in_flight"`
	Drifted    int       `json:"drifted"`
	Healed     int       `json:"healed"`
	Unhealed   int       `json:"unhealed"`
	MeterDrift int       `json:"meter_drift"`
}

// ApprovalQueue is the API approval requests waiting for a decision.
type ApprovalQueue struct {
	Pending int        `json:"pending"`
	Oldest  *time.Time `json:"oldest"`
}

// Overview answers the admin overview; identity.ErrForbidden for anyone
// but an admin. It never fails as a whole: each part that fails is null
// (its store's error logged) and named in Unavailable.
func (s *Service) Overview(ctx context.Context, act identity.Actor) (Overview, error) {
	if !act.IsAdmin() {
		return Overview{}, identity.ErrForbidden
	}
	now := s.now().UTC()
	out := Overview{AsOf: now.Truncate(time.Second), Unavailable: []UnavailablePart{}}
	type part struct {
		name string
		run  func(context.Context) error
		none string // why it cannot run at all; "" when it can
	}
	noCH := ""
	if s.ch == nil {
		noCH = "no ClickHouse is configured"
	}
	noKafka := ""
	if s.cfg.Kafka == nil {
		noKafka = "no Kafka admin client is configured"
	}
	parts := []part{
		{"volume", func(ctx context.Context) (err error) { out.Volume, err = s.volume(ctx, now); return err }, noCH},
		{"revenue", func(ctx context.Context) (err error) { out.Revenue, err = s.revenueTotals(ctx, now); return err }, ""},
		{"pipeline.consumer_lag", func(ctx context.Context) (err error) { out.Pipeline.ConsumerLag, err = s.consumerLag(ctx); return err }, noKafka},
		{"pipeline.dlq", func(ctx context.Context) (err error) { out.Pipeline.DLQ, err = s.dlq(ctx, now); return err }, noCH},
		{"pipeline.drift", func(ctx context.Context) (err error) { out.Pipeline.Drift, err = s.lastDrift(ctx); return err }, ""},
		{"approvals", func(ctx context.Context) (err error) { out.Approvals, err = s.approvals(ctx); return err }, ""},
	}
	failed := make([]string, len(parts))
	var g errgroup.Group
	for i, p := range parts {
		if p.none != "" {
			failed[i] = p.none
			continue
		}
		g.Go(func() error {
			pctx, cancel := context.WithTimeout(ctx, overviewPartTimeout)
			defer cancel()
			if err := p.run(pctx); err != nil {
				s.log.WarnContext(ctx, "admin overview part unavailable", "part", p.name, "error", err)
				failed[i] = reasonOf(err)
			}
			return nil
		})
	}
	_ = g.Wait()
	for i, p := range parts {
		if failed[i] != "" {
			out.Unavailable = append(out.Unavailable, UnavailablePart{Part: p.name, Reason: failed[i]})
		}
	}
	return out, nil
}

// reasonOf says why a part failed without the store's own words (logged).
func reasonOf(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "the store did not answer in time"
	case errors.Is(err, errPostgres):
		return "Postgres did not answer"
	case errors.Is(err, errClickHouse):
		return "ClickHouse did not answer"
	case errors.Is(err, errKafka):
		return "Kafka did not answer"
	}
	return "the store did not answer"
}

var (
	errPostgres   = errors.New("postgres")
	errClickHouse = errors.New("clickhouse")
	errKafka      = errors.New("kafka")
)

func (s *Service) volume(ctx context.Context, now time.Time) (*Volume, error) {
	today := now.Truncate(24 * time.Hour)
	rows, err := s.ch.Query(ctx, `SELECT toString(bucket) AS day, countMerge(requests) AS calls FROM usage_api_day
WHERE bucket >= toDate(@from) GROUP BY day ORDER BY day`, clickhouse.Named("from", today.AddDate(0, 0, -29)))
	if err != nil {
		return nil, fmt.Errorf("%w: read volume: %w", errClickHouse, err)
	}
	defer rows.Close()
	v := &Volume{ByDay: []DayVolume{}}
	for rows.Next() {
		var d DayVolume
		if err := rows.Scan(&d.Day, &d.Calls); err != nil {
			return nil, fmt.Errorf("%w: read volume: %w", errClickHouse, err)
		}
		v.ByDay = append(v.ByDay, d)
		v.Calls30d += d.Calls
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: read volume: %w", errClickHouse, err)
	}
	if err := s.ch.QueryRow(ctx, `SELECT countMerge(requests) FROM usage_api_hour WHERE bucket >= @from`,
		clickhouse.Named("from", now.Truncate(time.Hour).Add(-23*time.Hour))).Scan(&v.Calls24h); err != nil {
		return nil, fmt.Errorf("%w: read volume: %w", errClickHouse, err)
	}
	return v, nil
}

func (s *Service) revenueTotals(ctx context.Context, now time.Time) (map[string]RevenueTotal, error) {
	rows, err := s.pool.Query(ctx, `SELECT currency, sum(total) FILTER (WHERE finalized_at >= $1), sum(total) FILTER (WHERE status = 'paid' AND paid_at >= $1), 0::numeric
FROM invoices WHERE status IN ('open', 'paid', 'uncollectible') AND (finalized_at >= $1 OR paid_at >= $1) GROUP BY currency
UNION ALL
SELECT o.currency, 0, 0, sum(o.cost_so_far) FROM subscription_outlooks o JOIN subscriptions s ON s.id = o.subscription_id
WHERE s.status IN `+liveStatuses+` AND o.period_start = s.current_period_start GROUP BY o.currency`, now.AddDate(0, 0, -30))
	if err != nil {
		return nil, fmt.Errorf("%w: read revenue: %w", errPostgres, err)
	}
	defer rows.Close()
	out := map[string]RevenueTotal{}
	for rows.Next() {
		var (
			cur                     string
			invoiced, paid, accrued decimal.NullDecimal
		)
		if err := rows.Scan(&cur, &invoiced, &paid, &accrued); err != nil {
			return nil, fmt.Errorf("%w: read revenue: %w", errPostgres, err)
		}
		t := out[cur]
		t.Invoiced = t.Invoiced.Add(invoiced.Decimal)
		t.Paid = t.Paid.Add(paid.Decimal)
		t.Accrued = t.Accrued.Add(accrued.Decimal)
		out[cur] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: read revenue: %w", errPostgres, err)
	}
	return out, nil
}

func (s *Service) consumerLag(ctx context.Context) (*ConsumerLag, error) {
	group := s.cfg.ProcessorGroup
	lags, err := s.cfg.Kafka.Lag(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("%w: read lag of %s: %w", errKafka, group, err)
	}
	l, ok := lags[group]
	if !ok {
		return nil, fmt.Errorf("%w: no lag of %s", errKafka, group)
	}
	if err := l.Error(); err != nil {
		return nil, fmt.Errorf("%w: read lag of %s: %w", errKafka, group, err)
	}
	out := &ConsumerLag{Group: group, State: l.State, Members: len(l.Members), Topics: map[string]int64{}}
	for topic, parts := range l.Lag {
		var sum int64
		for _, p := range parts {
			if p.Err != nil || p.Lag < 0 {
				return nil, fmt.Errorf("%w: lag of %s on %s/%d: %v", errKafka, group, topic, p.Partition, p.Err)
			}
			sum += p.Lag
		}
		out.Topics[topic] = sum
		out.Total += sum
	}
	return out, nil
}

func (s *Service) dlq(ctx context.Context, now time.Time) (*DLQHealth, error) {
	since := clickhouse.Named("since", now.Add(-time.Hour))
	d := &DLQHealth{}
	if err := s.ch.QueryRow(ctx, `SELECT count() FROM usage_rejects WHERE received_at >= @since`, since).Scan(&d.RejectsLastHour); err != nil {
		return nil, fmt.Errorf("%w: read rejects: %w", errClickHouse, err)
	}
	// By the processors' write time, like received_at. usage_events is
	// partitioned by event time: time >= @old skips old months (an event
	// more than 35 days old written in the last hour is left out).
	if err := s.ch.QueryRow(ctx, `SELECT count() FROM usage_events WHERE ingested_at >= @since AND time >= @old`,
		since, clickhouse.Named("old", now.AddDate(0, 0, -35))).Scan(&d.EventsLastHour); err != nil {
		return nil, fmt.Errorf("%w: read events: %w", errClickHouse, err)
	}
	d.RejectRate = rate(d.RejectsLastHour, d.RejectsLastHour+d.EventsLastHour)
	return d, nil
}

func (s *Service) lastDrift(ctx context.Context) (*DriftRun, error) {
	var (
		d      DriftRun
		report []byte
	)
	err := s.pool.QueryRow(ctx, `SELECT started_at, finished_at, report FROM usage_reconcile_runs ORDER BY started_at DESC, id DESC LIMIT 1`).
		Scan(&d.StartedAt, &d.FinishedAt, &report)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read the last drift check: %w", errPostgres, err)
	}
	var r struct {
		Checked    int               `json:"checked"`
		InFlight   int               `json:"in_flight"`
		Drifted    int               `json:"drifted"`
		Healed     int               `json:"healed"`
		Unhealed   []json.RawMessage `json:"unhealed"`
		MeterDrift []json.RawMessage `json:"meter_drift"`
	}
	if err := json.Unmarshal(report, &r); err != nil {
		return nil, fmt.Errorf("%w: decode the last drift report: %w", errPostgres, err)
	}
	d.StartedAt, d.FinishedAt = d.StartedAt.UTC(), d.FinishedAt.UTC()
	d.Checked, d.InFlight, d.Drifted, d.Healed, d.Unhealed, d.MeterDrift = r.Checked, r.InFlight, r.Drifted, r.Healed, len(r.Unhealed), len(r.MeterDrift)
	return &d, nil
}

func (s *Service) approvals(ctx context.Context) (*ApprovalQueue, error) {
	var q ApprovalQueue
	if err := s.pool.QueryRow(ctx, `SELECT count(*), min(created_at) FROM approval_requests WHERE status IN ('pending', 'escalated')`).
		Scan(&q.Pending, &q.Oldest); err != nil {
		return nil, fmt.Errorf("%w: read approvals: %w", errPostgres, err)
	}
	if q.Oldest != nil {
		t := q.Oldest.UTC()
		q.Oldest = &t
	}
	return &q, nil
}
