package processors

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/enforcement"
)

func TestCounterArgsSkipsGatewayRefusals(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	k := subjectPartition{subject: "sub", partition: 3}
	period := enforcement.PeriodCounterName("sub", enforcement.CalendarMonth(at).Start)
	keyDay := enforcement.KeyDayCounterName("sub", "key_1", at)
	fixed := []string{enforcement.WatermarkName("sub"), enforcement.BlockName("sub"), enforcement.SubscriptionName("sub"), enforcement.QuotaOutboxName("sub"),
		enforcement.RefusalName("sub")}
	admitted := func(offset int64) item {
		return item{subject: "sub", keyID: "key_1", partition: 3, offset: offset, time: at, unitsMicro: 1_500_000}
	}
	refused := func(offset int64) item {
		it := admitted(offset)
		it.gatewayRefused = true
		return it
	}
	tests := []struct {
		name     string
		items    []item
		wm       int64
		keys     []string
		requests []string // per counter key, in order
		last     int64
	}{
		{"admitted only", []item{admitted(5), admitted(6)}, 4, append(slices.Clone(fixed), period, keyDay), []string{"2", "2"}, 6},
		{"mixed counts only the admitted", []item{refused(5), admitted(6), refused(7)}, 4, append(slices.Clone(fixed), period, keyDay), []string{"1", "1"}, 7},
		{"refused only moves the watermark", []item{refused(5), refused(6)}, 4, fixed, nil, 6},
		{"refused at or below the watermark", []item{refused(3), refused(4)}, 4, nil, nil, 4},
		{"nothing new", []item{admitted(2)}, 4, nil, nil, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, last, err := counterArgs(k, tc.items, tc.wm, nil, nil)
			var keys, args []string
			if c != nil {
				ex := c.Exec()
				keys, args = ex.Keys, ex.Args
			}
			if err != nil || !slices.Equal(keys, tc.keys) || last != tc.last {
				t.Fatalf("counterArgs keys, last = %q, %d; want %q, %d", keys, last, tc.keys, tc.last)
			}
			if keys == nil {
				return
			}
			if want := []string{"3", fmt.Sprint(tc.wm), fmt.Sprint(tc.last), ""}; !slices.Equal(args[:4], want) {
				t.Fatalf("counterArgs watermark and mismatch args = %q; want %q", args[:4], want)
			}
			var requests []string
			// Six arguments per counter without meters (enforcement.Count.Exec).
			for i := 5; i < len(args); i += 6 {
				requests = append(requests, args[i])
			}
			if !slices.Equal(requests, tc.requests) {
				t.Fatalf("counterArgs requests = %q; want %q", requests, tc.requests)
			}
		})
	}
}

// TestCompensateSkipsGatewayRefusals: refusals were never counted, so there
// is nothing to take back; the sink has no client here, and must not need one.
func TestCompensateSkipsGatewayRefusals(t *testing.T) {
	s := &redisSink{}
	items := []item{{subject: "sub", offset: 1, gatewayRefused: true}}
	if err := s.compensate(t.Context(), items, "topic"); err != nil {
		t.Fatalf("compensate(refused only) = %v; want nil", err)
	}
	if !items[0].gatewayRefused {
		t.Fatal("compensate changed its caller's items")
	}
}
