package processors

import (
	"strconv"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/usage"
)

// TestApplyRefusesOnlyWhatOverflows: one batch of 9,230 events at the units
// cap for one subject, whose sum no int64 holds, and a subject beside it.
// The counters take the first 9,223 (the most that fit), refuse the other 7
// without writing a byte of them (requests included), and count the other
// subject in full; a restarted sink replaying the batch reports the same 7
// and changes nothing.
func TestApplyRefusesOnlyWhatOverflows(t *testing.T) {
	client, _ := testenv.RedisDB(t)
	at := time.Now().UTC()
	var items []item
	for i := range 9230 {
		items = append(items, item{subject: "full", keyID: "key_1", partition: 0, offset: int64(i), time: at, unitsMicro: usage.MaxUnitsMicro})
	}
	items = append(items, item{subject: "beside", partition: 0, offset: 9230, time: at, unitsMicro: 3})

	check := func(name string, overflowed []item) {
		t.Helper()
		if len(overflowed) != 7 || overflowed[0].offset != 9223 || overflowed[6].offset != 9229 {
			t.Fatalf("%s: apply overflowed %d items (first %v); want the 7 from offset 9223", name, len(overflowed), overflowed[:min(1, len(overflowed))])
		}
		start := enforcement.CalendarMonth(at).Start
		for _, c := range []struct {
			key  string
			want []string
		}{
			{enforcement.PeriodCounterName("full", start), []string{"9223", strconv.FormatInt(9223*usage.MaxUnitsMicro, 10)}},
			{"veil:usage:{full}:k:key_1:" + at.Format("20060102"), []string{"9223", strconv.FormatInt(9223*usage.MaxUnitsMicro, 10)}},
			{enforcement.PeriodCounterName("beside", start), []string{"1", "3"}},
		} {
			wantCounterFields(t, client, name, c.key, c.want[0], c.want[1])
		}
	}
	_, overflowed, err := newRedisSink(client).apply(t.Context(), items)
	if err != nil {
		t.Fatal(err)
	}
	check("first apply", overflowed)
	_, overflowed, err = newRedisSink(client).apply(t.Context(), items)
	if err != nil {
		t.Fatal(err)
	}
	check("replay", overflowed)
}
