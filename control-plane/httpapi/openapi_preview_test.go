package httpapi_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/billing"
	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/testenv"
)

// The preview with ClickHouse answers what the document declares: the
// invoice draft with as_of, cost_so_far (its total), the projection and
// each meter's used, projected, quota and run-out; another consumer gets
// 404.
func TestPreviewContract(t *testing.T) {
	ch, _, _ := testenv.ClickHouseDB(t)
	e := newTestEnvWith(t, func(cfg *httpapi.Config) {
		b, err := billing.New(billing.Config{Pool: cfg.Pool, ClickHouse: ch, Logger: cfg.Logger})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Billing = b
	})
	c := newContract(t, e.Server.URL)
	prov := e.token("acme", "alice", identity.RoleProvider)
	buyer := e.token("hooli", "hank", identity.RoleConsumer)
	other := e.token("globex", "gary", identity.RoleConsumer)
	f := newBillingFixture(t, e, c, prov, buyer)
	var meter, sub uuid.UUID
	f.scan(&meter, `INSERT INTO meters (api_id, slug, aggregation) VALUES ($1, 'calls', 'count') RETURNING id`, f.api)
	f.scan(&meter, `INSERT INTO plan_version_charges (plan_version_id, meter_id, model, unit_price, quota, quota_hard)
		VALUES ($1, $2, 'per_unit', 0.01, 1000, true) RETURNING meter_id`, f.version, meter)
	now := time.Now().UTC()
	start := now.Truncate(24*time.Hour).AddDate(0, 0, -10)
	end := start.AddDate(0, 0, 30)
	f.scan(&sub, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, status,
		current_period_start, current_period_end) VALUES ($1, 'hank', $2, $3, 'active', $4, $5) RETURNING id`,
		f.buyer, f.api, f.version, start, end)
	f.scan(&sub, `INSERT INTO subscription_history (subscription_id, plan_version_id, status, effective_at, actor)
		VALUES ($1, $2, 'active', $3, 'hank') RETURNING subscription_id`, sub, f.version, start)
	// 10 calls on each of the last 10 days.
	batch, err := ch.PrepareBatch(context.Background(), `INSERT INTO usage_events (id, source, type, subject, time, api_id,
		key_id, method, route, path, status, latency_ms, request_bytes, response_bytes, units, refusal, ingested_at, kafka_partition, kafka_offset)`)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		at := now.Add(-time.Duration(i/10+1)*24*time.Hour + time.Duration(i%10)*time.Minute)
		if err := batch.Append(uuid.NewString(), "/gw", "veil.api.request", sub.String(), at, f.api.String(), "key_1",
			"GET", "/v1/*", "/v1/x", uint16(200), uint32(5), uint64(10), uint64(20), decimal.NewFromInt(1), "", at, int32(0), int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}

	path := "/v1/subscriptions/" + sub.String() + "/preview"
	var got struct {
		Total      string    `json:"total"`
		CostSoFar  string    `json:"cost_so_far"`
		AsOf       time.Time `json:"as_of"`
		Projection struct {
			Total, TotalLow, TotalHigh string
			Confidence, Method         string
		} `json:"projection"`
		Meters []struct {
			Meter, Used, Projected string
			Quota                  *string
			QuotaHard              bool       `json:"quota_hard"`
			RunsOutAt              *time.Time `json:"runs_out_at"`
		} `json:"meters"`
	}
	c.call(http.StatusOK, "GET", path, buyer, nil).decode(&got)
	if got.CostSoFar != got.Total || got.AsOf.Before(now) || got.Projection.Confidence != "0.8" || got.Projection.Method == "" {
		t.Errorf("preview cost so far %s, total %s, as of %s, projection %+v", got.CostSoFar, got.Total, got.AsOf, got.Projection)
	}
	if len(got.Meters) != 1 || got.Meters[0].Meter != "calls" || got.Meters[0].Used != "100" || got.Meters[0].Quota == nil ||
		*got.Meters[0].Quota != "1000" || !got.Meters[0].QuotaHard || got.Meters[0].RunsOutAt != nil {
		t.Errorf("meters %+v; want calls, 100 used of a hard 1000, not running out", got.Meters)
	}
	// 10 a day for the 20 days left: about 300 calls, 3 EUR of usage.
	if p := decimal.RequireFromString(got.Meters[0].Projected); p.LessThan(decimal.NewFromInt(280)) || p.GreaterThan(decimal.NewFromInt(310)) {
		t.Errorf("calls projected %s; want about 300", p)
	}
	if decimal.RequireFromString(got.Projection.Total).LessThanOrEqual(decimal.RequireFromString(got.CostSoFar)) {
		t.Errorf("projected total %s; want more than the cost so far %s", got.Projection.Total, got.CostSoFar)
	}
	c.call(http.StatusNotFound, "GET", path, other, nil)
	c.call(http.StatusOK, "GET", path, prov, nil)
}
