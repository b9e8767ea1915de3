package quota_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/internal/enforcement"
)

// TestMeterCrossingNotices: a meter's crossing gets its own webhook and
// email, which name the meter and give its quota as a quantity, even at
// the threshold and quota of a request crossing already notified; each
// goes out once.
func TestMeterCrossingNotices(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.start()
	s := f.subscribe(requests(1000), true, "")
	for _, m := range []struct{ slug, agg, field string }{{"searches", "count", ""}, {"tokens", "sum", "units"}} {
		if _, err := f.pool.Exec(f.ctx, `INSERT INTO meters (api_id, slug, aggregation, field) VALUES ($1, $2, $3, $4)`,
			f.apiID, m.slug, m.agg, m.field); err != nil {
			t.Fatal(err)
		}
	}
	req := f.crossing(s, 80, 1000, true)
	searches := req
	searches.Meter, searches.Hard = "searches", false
	tokens := f.crossing(s, 100, 5_000_000, true)
	tokens.Meter = "tokens"
	for _, e := range []enforcement.Crossing{req, searches, tokens} {
		for i, want := range []int{2, 0} {
			if got, err := f.svc.HandleCrossing(f.ctx, e); err != nil || got != want {
				t.Fatalf("HandleCrossing(%s) #%d = %d, %v; want %d, nil", e.ID(), i+1, got, err, want)
			}
		}
	}
	hooks := f.deliveries(s)
	if len(hooks) != 3 {
		t.Fatalf("webhook deliveries = %+v; want 3", hooks)
	}
	if h := hooks[0]; h.Meter != "" || h.MeterQuota != "" || h.Quota != 1000 {
		t.Errorf("request webhook = %+v; want no meter", h)
	}
	if h := hooks[1]; h.Meter != "searches" || h.MeterQuota != "1000" || h.MeterUsed != "800" || h.Threshold != 80 || h.Hard || h.Blocked {
		t.Errorf("searches webhook = %+v; want meter searches at 80%% of 1000, soft", h)
	}
	if h := hooks[2]; h.Meter != "tokens" || h.MeterQuota != "5" || h.MeterUsed != "5" || h.Quota != 5_000_000 || !h.Blocked {
		t.Errorf("tokens webhook = %+v; want meter tokens used up at 5 units (5000000 micro), blocked", h)
	}
	if got := f.notices(s); got != 6 {
		t.Errorf("quota_notices rows = %d; want 6 (3 crossings × 2 channels)", got)
	}

	msgs := f.mail.WaitMessages(t, s.email, 3, 10*time.Second)
	if len(msgs) != 3 {
		t.Fatalf("emails = %d; want 3", len(msgs))
	}
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[strings.Join(m.Headers["Message-Id"], "")] = true
		meter := strings.Join(m.Headers["X-Veil-Meter"], ",")
		switch meter {
		case "":
			if m.Subject != "Your Weather quota is 80% used" {
				t.Errorf("request email subject = %q", m.Subject)
			}
		case "searches":
			if m.Subject != "Your Weather quota of searches is 80% used" || !strings.Contains(m.Text, "used 800 of its quota of 1000 searches") {
				t.Errorf("searches email = %q\n%s", m.Subject, m.Text)
			}
		case "tokens":
			if !strings.HasPrefix(m.Subject, "Your Weather quota of tokens is used up: requests are refused until ") ||
				!strings.Contains(m.Text, "Used: 5 of 5") || !strings.Contains(m.Text, "not only those metered as tokens") {
				t.Errorf("tokens email = %q\n%s", m.Subject, m.Text)
			}
		default:
			t.Errorf("email with X-Veil-Meter %q", meter)
		}
	}
	if len(ids) != 3 {
		t.Errorf("emails share a Message-ID: %v", ids)
	}
}

// TestStatusMeters: the quota status lists the meters of the gateway's
// record with what the period counter holds of each, as quantities, and
// the thresholds of each meter's quota reached.
func TestStatusMeters(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	s := f.subscribe(nil, false, "")
	id := s.id.String()
	counter := enforcement.PeriodCounterName(id, f.periodStart)
	for _, cmd := range []rueidis.Completed{
		f.redis.B().Hset().Key(enforcement.SubscriptionName(id)).FieldValue().FieldValue("meters", `[`+
			`{"slug":"tokens","aggregation":"sum","field":"units","filter":{"methods":[],"routes":[],"status_classes":[]},"quota":"2500000","quota_hard":true},`+
			`{"slug":"users","aggregation":"unique_count","field":"key_id","filter":{"methods":[],"routes":[],"status_classes":[]},"quota_hard":false}]`).Build(),
		f.redis.B().Hset().Key(counter).FieldValue().FieldValue("m:tokens", "2250000").Build(),
		f.redis.B().Sadd().Key(enforcement.MeterSetName(counter, "users")).Member("k1", "k2").Build(),
	} {
		if err := f.redis.Do(f.ctx, cmd).Error(); err != nil {
			t.Fatal(err)
		}
	}
	st, err := f.svc.Status(f.ctx, s.id)
	if err != nil {
		t.Fatal(err)
	}
	limit := "2.5"
	want := []quota.MeterStatus{
		{Meter: "tokens", Used: "2.25", Quota: &limit, Hard: true, ThresholdsCrossed: []int{80, 90}},
		{Meter: "users", Used: "2", ThresholdsCrossed: []int{}},
	}
	if !reflect.DeepEqual(st.Meters, want) || !st.Unlimited {
		t.Fatalf("Status meters = %+v; want %+v", st.Meters, want)
	}
}
