package quota_test

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/internal/enforcement"
)

func TestStatus(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	blockUntil := f.periodEnd
	tests := []struct {
		name      string
		planQuota *int64
		hard      bool
		// adjustments are this period's; earlier are the previous
		// period's, which do not count.
		adjustments, earlier []int64
		// used is the period counter's requests, -1 for no counter.
		used  int64
		block bool
		want  func(id uuid.UUID) quota.Status
	}{
		{
			name: "hard quota with credits, blocked", planQuota: requests(1000), hard: true,
			adjustments: []int64{200, 50}, earlier: []int64{5000}, used: 1150, block: true,
			want: func(id uuid.UUID) quota.Status {
				return quota.Status{
					SubscriptionID: id, Limit: requests(1250), PlanQuota: requests(1000), Adjustments: 250, Used: 1150,
					Remaining: requests(100), Hard: true, ThresholdsCrossed: []int{80, 90}, Blocked: true, BlockedUntil: &blockUntil,
				}
			},
		},
		{
			name: "hard quota, no counter yet", planQuota: requests(1000), hard: true, used: -1,
			want: func(id uuid.UUID) quota.Status {
				return quota.Status{
					SubscriptionID: id, Limit: requests(1000), PlanQuota: requests(1000), Remaining: requests(1000), Hard: true,
					ThresholdsCrossed: []int{},
				}
			},
		},
		{
			// ceil(7*0.8) = 6, ceil(7*0.9) = 7: 6 requests cross only 80%.
			name: "thresholds round up", planQuota: requests(7), hard: true, used: 6,
			want: func(id uuid.UUID) quota.Status {
				return quota.Status{
					SubscriptionID: id, Limit: requests(7), PlanQuota: requests(7), Used: 6, Remaining: requests(1), Hard: true,
					ThresholdsCrossed: []int{80},
				}
			},
		},
		{
			name: "soft quota over", planQuota: requests(10), hard: false, used: 12,
			want: func(id uuid.UUID) quota.Status {
				return quota.Status{
					SubscriptionID: id, Limit: requests(10), PlanQuota: requests(10), Used: 12, Remaining: requests(0),
					ThresholdsCrossed: []int{80, 90, 100},
				}
			},
		},
		{
			name: "unlimited", planQuota: nil, hard: true, adjustments: []int64{100}, used: 5,
			want: func(id uuid.UUID) quota.Status {
				return quota.Status{SubscriptionID: id, Unlimited: true, Adjustments: 100, Used: 5, Hard: true, ThresholdsCrossed: []int{}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := f.subscribe(tt.planQuota, tt.hard, "")
			adjust := func(start time.Time, n int64) {
				if _, err := f.pool.Exec(f.ctx, `INSERT INTO quota_adjustments (subscription_id, period_start, kind, requests, used_at_change, reason, actor)
					VALUES ($1, $2, 'credit', $3, 0, 'goodwill', 'admin-user')`, s.id, start, n); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range tt.adjustments {
				adjust(f.periodStart, n)
			}
			for _, n := range tt.earlier {
				adjust(f.periodStart.AddDate(0, -1, 0), n)
			}
			id := s.id.String()
			if tt.used >= 0 {
				counter := enforcement.PeriodCounterName(id, f.periodStart)
				if err := f.redis.Do(f.ctx, f.redis.B().Hset().Key(counter).FieldValue().
					FieldValue("requests", strconv.FormatInt(tt.used, 10)).FieldValue("units_micro", "0").Build()).Error(); err != nil {
					t.Fatal(err)
				}
			}
			if tt.block {
				if err := enforcement.New(f.redis).PutBlock(f.ctx, id, blockUntil); err != nil {
					t.Fatal(err)
				}
			}
			// Another period's counter is not this period's usage.
			if err := f.redis.Do(f.ctx, f.redis.B().Hset().Key(enforcement.PeriodCounterName(id, f.periodStart.AddDate(0, -1, 0))).
				FieldValue().FieldValue("requests", "999999").Build()).Error(); err != nil {
				t.Fatal(err)
			}

			got, err := f.svc.Status(f.ctx, s.id)
			if err != nil {
				t.Fatalf("Status(%s) = %v", s.id, err)
			}
			want := tt.want(s.id)
			want.PeriodStart, want.PeriodEnd, want.ResetsAt = f.periodStart, f.periodEnd, f.periodEnd
			want.Meters = []quota.MeterStatus{} // no record in Redis: no meters
			if g, w := statusJSON(t, got), statusJSON(t, want); g != w {
				t.Errorf("Status(%s) = %s; want %s", s.id, g, w)
			}
		})
	}
}

func statusJSON(t *testing.T, s quota.Status) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStatusUnknownSubscription(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	id := uuid.New()
	if _, err := f.svc.Status(f.ctx, id); !errors.Is(err, quota.ErrNotFound) {
		t.Errorf("Status(%s) = %v; want %v", id, err, quota.ErrNotFound)
	}
}
