package processors

import (
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestMismatchReplayKeepsTheStoredDecision: whether an event was counted or
// refused as subject_api_mismatch is decided once, when its offset passes
// the watermark, and a replay of the same offsets (a crash before the commit,
// or a group reading from scratch) reports that decision whatever became of
// the subscription record since. An event counted while its subject had no
// record stays counted, and is neither refused nor counted again, once a
// record of another API appears; an event refused stays refused, and
// uncounted, once its record is gone.
func TestMismatchReplayKeepsTheStoredDecision(t *testing.T) {
	client, db := testenv.RedisDB(t)
	ctx := t.Context()
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	start, end := at.Add(-90*time.Minute), at.Add(24*time.Hour)
	do := func(t *testing.T, cmd rueidis.Completed) {
		t.Helper()
		if err := client.Do(ctx, cmd).Error(); err != nil {
			t.Fatal(err)
		}
	}
	ev := func(subject string, offset int64, api string) item {
		return item{subject: subject, keyID: "key_1", partition: 2, offset: offset, time: at, unitsMicro: 5_000_000, apiID: api}
	}
	// apply runs a sink of its own on a client of its own, as a restarted
	// processor does: no cached watermark nor record.
	apply := func(t *testing.T, items []item) []item {
		t.Helper()
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379")}, SelectDB: db})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, refused, err := newRedisSink(c).apply(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		return refused
	}
	wantCounter := func(t *testing.T, name, key string, requests, micros int64) {
		t.Helper()
		if requests == 0 {
			wantCounterFields(t, client, name, key, "", "")
			return
		}
		wantCounterFields(t, client, name, key, strconv.FormatInt(requests, 10), strconv.FormatInt(micros, 10))
	}
	wantRefused := func(t *testing.T, name string, refused []item, offsets ...int64) {
		t.Helper()
		if len(refused) != len(offsets) {
			t.Fatalf("%s: refused %v; want the mismatches at offsets %v", name, refused, offsets)
		}
		for i, it := range refused {
			if it.offset != offsets[i] || !it.apiMismatch {
				t.Fatalf("%s: refused %v; want the mismatches at offsets %v", name, refused, offsets)
			}
		}
	}

	t.Run("counted without a record", func(t *testing.T) {
		// Counted without a record, then a record of another API appears.
		counted := []item{ev("counted", 0, "api_x"), ev("counted", 1, "api_x")}
		wantRefused(t, "no record", apply(t, counted))
		month := enforcement.PeriodCounterName("counted", enforcement.CalendarMonth(at).Start)
		wantCounter(t, "no record", month, 2, 10_000_000)
		putRecord(t, client, "counted", start, end, "api_id", "api_y")
		wantRefused(t, "replay under a record of another API", apply(t, counted))
		wantCounter(t, "replay under a record of another API", month, 2, 10_000_000)
		wantCounter(t, "replay under a record of another API", enforcement.PeriodCounterName("counted", start), 0, 0)
	})
	t.Run("refused under a record of another API", func(t *testing.T) {
		// Refused under a record of another API, then the record goes.
		refused := []item{ev("refused", 0, "api_x"), ev("refused", 1, "api_y"), ev("refused", 2, "api_x")}
		putRecord(t, client, "refused", start, end, "api_id", "api_y")
		wantRefused(t, "record of another API", apply(t, refused), 0, 2)
		own := enforcement.PeriodCounterName("refused", start)
		wantCounter(t, "record of another API", own, 1, 5_000_000)
		do(t, client.B().Del().Key(enforcement.SubscriptionName("refused")).Build())
		wantRefused(t, "replay without a record", apply(t, refused), 0, 2)
		wantCounter(t, "replay without a record", own, 1, 5_000_000)
		wantCounter(t, "replay without a record", enforcement.PeriodCounterName("refused", enforcement.CalendarMonth(at).Start), 0, 0)

		// A replay that reaches past the watermark decides only the new
		// offsets, from the record as it is now.
		putRecord(t, client, "refused", start, end, "api_id", "api_x")
		wantRefused(t, "replay and a new event", apply(t, append(refused, ev("refused", 3, "api_y"))), 0, 2, 3)
		wantCounter(t, "replay and a new event", own, 1, 5_000_000)
	})
}
