package processors

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/gatewayrecord"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestQuotaThresholds: the period counter's crossings of 80, 90 and 100%
// of the subscription's quota are reported once each, however the
// requests are batched and replayed, and a hard quota blocks the
// subscription until the period's end; a soft one only reports.
func TestQuotaThresholds(t *testing.T) {
	for _, hard := range []bool{true, false} {
		t.Run(fmt.Sprintf("hard=%v", hard), func(t *testing.T) {
			client, _ := testenv.RedisDB(t)
			ctx := t.Context()
			store := gatewayrecord.New(client)
			start := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
			end := start.AddDate(0, 1, 0)
			if _, err := store.PutSubscription(ctx, gatewayrecord.SubscriptionRecord{
				ID: "sub", APIID: "api", PlanID: "plan", Status: "active", PeriodStart: start, PeriodEnd: end,
				QuotaRequests: 10, QuotaHard: hard, Version: 1,
			}); err != nil {
				t.Fatal(err)
			}
			sink := newRedisSink(client)
			offset := int64(0)
			send := func(n int) []string {
				t.Helper()
				var items []item
				for range n {
					offset++
					items = append(items, item{subject: "sub", partition: 0, offset: offset, time: start.Add(time.Minute), unitsMicro: 1})
				}
				if err := sink.apply(ctx, items); err != nil {
					t.Fatal(err)
				}
				// A replay of the same batch changes nothing.
				if err := newRedisSink(client).apply(ctx, items); err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, c := range sink.takeCrossings() {
					got = append(got, c.Percent)
				}
				return got
			}
			for _, step := range []struct {
				n    int
				want []string
			}{
				{7, nil}, {1, []string{"80"}}, {3, []string{"90", "100"}}, {5, nil},
			} {
				if got := send(step.n); !slices.Equal(got, step.want) {
					t.Fatalf("after %d more requests: crossings %v; want %v", step.n, got, step.want)
				}
			}
			until, err := store.BlockedUntilCached(ctx, "sub", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if hard && !until.Equal(end) || !hard && !until.IsZero() {
				t.Fatalf("block until %v with hard=%v; want %v", until, hard, map[bool]any{true: end, false: "none"}[hard])
			}
		})
	}
}
