package processors

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
)

// quotaFixture is one subscription's Redis state and a sink counting into it.
type quotaFixture struct {
	t          *testing.T
	client     rueidis.Client
	sink       *redisSink
	start, end time.Time
	offset     int64
	seen       int // outbox lines already returned by send
}

func newQuotaFixture(t *testing.T) *quotaFixture {
	t.Helper()
	client, _ := testenv.RedisDB(t)
	start := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	return &quotaFixture{t: t, client: client, sink: newRedisSink(client), start: start, end: start.AddDate(0, 1, 0)}
}

// record writes the subscription record's fields the processors read, the
// way the control plane does on a plan change or a credit.
func (f *quotaFixture) record(quota int64, hard bool) {
	f.t.Helper()
	h := "0"
	if hard {
		h = "1"
	}
	putRecord(f.t, f.client, "sub", f.start, f.end, "quota_requests", strconv.FormatInt(quota, 10), "quota_hard", h)
}

func (f *quotaFixture) do(cmd rueidis.Completed) rueidis.RedisResult {
	f.t.Helper()
	r := f.client.Do(f.t.Context(), cmd)
	if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
		f.t.Fatal(err)
	}
	return r
}

// send counts n requests at time at, then replays the same batch through a
// fresh sink (a restarted processor), and returns the outbox lines pushed
// since the last call.
func (f *quotaFixture) send(n int, at time.Time) []string {
	f.t.Helper()
	var items []item
	for range n {
		f.offset++
		items = append(items, item{subject: "sub", keyID: "key_1", partition: 0, offset: f.offset, time: at, unitsMicro: 1})
	}
	outboxed, _, err := f.sink.apply(f.t.Context(), items)
	if err != nil {
		f.t.Fatal(err)
	}
	if replayed, _, err := newRedisSink(f.client).apply(f.t.Context(), items); err != nil || len(replayed) > 0 {
		f.t.Fatalf("apply(replay) = %q, %v; want no outbox lines, nil", replayed, err)
	}
	lines := f.outbox()
	pushed := lines[f.seen:]
	f.seen = len(lines)
	if want := len(pushed) > 0; want != slices.Equal(outboxed, []string{"sub"}) {
		f.t.Fatalf("apply outboxed %q with %d lines pushed; want %q exactly when lines were pushed", outboxed, len(pushed), "sub")
	}
	if len(pushed) == 0 {
		return nil
	}
	return pushed
}

func (f *quotaFixture) outbox() []string {
	f.t.Helper()
	lines, err := f.do(f.client.B().Lrange().Key(enforcement.QuotaOutboxName("sub")).Start(0).Stop(-1).Build()).AsStrSlice()
	if err != nil {
		f.t.Fatal(err)
	}
	return lines
}

// line is the outbox line the script must push.
func (f *quotaFixture) line(pct int, quota, used int64, hard bool) string {
	return enforcement.OutboxLine(enforcement.Crossing{SubscriptionID: "sub", PeriodStart: f.start, PeriodEnd: f.end,
		Threshold: pct, Quota: quota, Used: used, Hard: hard})
}

// block returns the block's value and expiry (Unix seconds), "" and -2
// when there is none.
func (f *quotaFixture) block() (string, int64) {
	f.t.Helper()
	v, err := f.do(f.client.B().Get().Key(enforcement.BlockName("sub")).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		v = ""
	}
	exp, err := f.do(f.client.B().Expiretime().Key(enforcement.BlockName("sub")).Build()).AsInt64()
	if err != nil {
		f.t.Fatal(err)
	}
	return v, exp
}

// TestQuotaCrossingsToOutbox: the period counter's crossings of 80, 90 and
// 100% of the quota in the subscription record are pushed onto the outbox
// once each, however the requests are batched and replayed; a hard quota
// blocks the subscription until the period's end, a soft one never does.
func TestQuotaCrossingsToOutbox(t *testing.T) {
	for _, hard := range []bool{true, false} {
		t.Run(fmt.Sprintf("hard=%v", hard), func(t *testing.T) {
			f := newQuotaFixture(t)
			f.record(10, hard)
			at := f.start.Add(time.Minute)
			for _, step := range []struct {
				n    int
				want []string
			}{
				{7, nil},
				{1, []string{f.line(80, 10, 8, hard)}},
				{3, []string{f.line(90, 10, 11, hard), f.line(100, 10, 11, hard)}},
				{5, nil},
			} {
				if got := f.send(step.n, at); !slices.Equal(got, step.want) {
					t.Fatalf("after %d more requests: outbox lines %q; want %q", step.n, got, step.want)
				}
			}
			v, exp := f.block()
			want, wantExp := "", int64(-2)
			if hard {
				want, wantExp = strconv.FormatInt(f.end.Unix(), 10), f.end.Unix()
			}
			if v != want || exp != wantExp {
				t.Fatalf("block = %q expiring at %d; want %q expiring at %d", v, exp, want, wantExp)
			}
		})
	}
}

// TestQuotaCreditFiresAgain: a credit raises the record's quota after 100%
// was crossed; the thresholds of the new quota are crossed once each, and
// replays fire nothing.
func TestQuotaCreditFiresAgain(t *testing.T) {
	f := newQuotaFixture(t)
	f.record(10, true)
	at := f.start.Add(time.Minute)
	if got := f.send(12, at); len(got) != 3 {
		t.Fatalf("outbox lines after 12 requests of 10 = %q; want 80, 90 and 100", got)
	}
	f.record(20, true)
	for _, step := range []struct {
		n    int
		want []string
	}{
		{3, nil}, // 15 of 20
		{1, []string{f.line(80, 20, 16, true)}},
		{2, []string{f.line(90, 20, 18, true)}},
		{1, nil},
		{1, []string{f.line(100, 20, 20, true)}},
		{4, nil},
	} {
		if got := f.send(step.n, at); !slices.Equal(got, step.want) {
			t.Fatalf("after %d more requests: outbox lines %q; want %q", step.n, got, step.want)
		}
	}
	crossed, err := f.do(f.client.B().Hmget().Key(enforcement.PeriodCounterName("sub", f.start)).Field("crossed_80", "crossed_90", "crossed_100").Build()).AsStrSlice()
	if err != nil || !slices.Equal(crossed, []string{"20", "20", "20"}) {
		t.Fatalf("crossed_80, 90, 100 = %q, %v; want the quota they fired for, 20", crossed, err)
	}
}

// TestQuotaOnlyForTheRecordsPeriod: a counter of another period than the
// record's (an event outside it counts into a neighbouring period) has no
// quota: nothing fires, nothing blocks. Nor does an unlimited one.
func TestQuotaOnlyForTheRecordsPeriod(t *testing.T) {
	for _, tc := range []struct {
		name  string
		quota int64
		at    func(f *quotaFixture) time.Time
	}{
		{"another period", 10, func(f *quotaFixture) time.Time { return f.start.AddDate(0, -2, 0) }},
		{"unlimited", -1, func(f *quotaFixture) time.Time { return f.start.Add(time.Minute) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newQuotaFixture(t)
			f.record(tc.quota, true)
			at := tc.at(f)
			if got := f.send(20, at); got != nil {
				t.Fatalf("outbox lines = %q; want none", got)
			}
			counter := enforcement.PeriodCounterName("sub", enforcement.PeriodAt(&enforcement.RecordedPeriod{Start: f.start, End: f.end}, at).Start)
			n, err := f.do(f.client.B().Hget().Key(counter).Field("requests").Build()).AsInt64()
			if err != nil || n != 20 {
				t.Fatalf("requests of %s = %d, %v; want 20", counter, n, err)
			}
			if v, _ := f.block(); v != "" {
				t.Fatalf("block = %q; want none", v)
			}
		})
	}
}

// TestQuotaBlockRestoredNotRewritten: while a hard quota is used up, every
// request counted restores a block that went missing, and leaves one that
// is there alone (NX: the gateway's cached copy stays valid).
func TestQuotaBlockRestoredNotRewritten(t *testing.T) {
	f := newQuotaFixture(t)
	f.record(10, true)
	at := f.start.Add(time.Minute)
	f.send(10, at)
	want := strconv.FormatInt(f.end.Unix(), 10)
	if v, exp := f.block(); v != want || exp != f.end.Unix() {
		t.Fatalf("block at 100%% = %q expiring at %d; want %q expiring at %d", v, exp, want, f.end.Unix())
	}

	f.do(f.client.B().Del().Key(enforcement.BlockName("sub")).Build()) // a flush, say
	if got := f.send(1, at); got != nil {
		t.Fatalf("outbox lines past 100%% = %q; want none", got)
	}
	if v, exp := f.block(); v != want || exp != f.end.Unix() {
		t.Fatalf("block after it was deleted and one more request = %q expiring at %d; want %q expiring at %d", v, exp, want, f.end.Unix())
	}

	f.do(f.client.B().Set().Key(enforcement.BlockName("sub")).Value("marker").Keepttl().Build())
	f.send(1, at)
	if v, _ := f.block(); v != "marker" {
		t.Fatalf("block after one more request = %q; want it left alone (%q)", v, "marker")
	}
}
