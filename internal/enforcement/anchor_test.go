package enforcement_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/enforcement"
)

// TestPeriodAnchorOneRule: the record store and the processors read a
// record's period_anchor by one rule: an anchor the store refuses as
// corrupt is none to the processors (they step unanchored), and one it
// accepts is the processors' anchor too.
func TestPeriodAnchorOneRule(t *testing.T) {
	f := setup(t)
	ctx := t.Context()
	start := time.Date(2026, 4, 3, 10, 0, 0, 0, time.UTC)
	for i, c := range []struct {
		value string // "-" leaves the field out
		want  time.Time
		bad   bool
	}{
		{value: "-"},
		{value: "0"},
		{value: fmt.Sprint(start.Unix()), want: start},
		{value: "4611686018427387904", want: time.Unix(1<<62, 0).UTC()},
		{value: "4611686018427387905", bad: true},
		{value: "-5", bad: true},
		{value: "soon", bad: true},
		{value: "", bad: true},
		{value: "1.7e9", bad: true},
	} {
		id := fmt.Sprintf("sub_anchor_%s_%d", f.suffix, i)
		name := enforcement.SubscriptionName(id)
		t.Cleanup(func() { f.client.Do(context.Background(), f.client.B().Del().Key(name).Build()) })
		r := enforcement.SubscriptionRecord{ID: id, APIID: "api_1", PlanID: "plan_1", Status: enforcement.SubscriptionActive,
			PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0), QuotaRequests: -1, Version: 1}
		if _, err := f.store.PutSubscription(ctx, r); err != nil {
			t.Fatal(err)
		}
		if c.value == "-" {
			if err := f.client.Do(ctx, f.client.B().Hdel().Key(name).Field("period_anchor").Build()).Error(); err != nil {
				t.Fatal(err)
			}
		} else {
			f.hset(t, name, "period_anchor", c.value)
		}
		got, err := f.store.GetSubscription(ctx, id)
		if c.bad != errors.Is(err, enforcement.ErrCorruptRecord) {
			t.Errorf("period_anchor %q: GetSubscription = %v; refused: want %t", c.value, err, c.bad)
		}
		if err == nil && !got.PeriodAnchor.Equal(c.want) {
			t.Errorf("period_anchor %q: GetSubscription anchor = %s; want %s", c.value, got.PeriodAnchor, c.want)
		}
		recs, err := enforcement.RecordedPeriods(ctx, f.client, []string{id}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if rec := recs[id]; rec == nil || !rec.Anchor.Equal(c.want) {
			t.Errorf("period_anchor %q: RecordedPeriods = %+v; want the record with anchor %s", c.value, rec, c.want)
		}
	}
}
