package enforcement_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/usage"
)

func TestOutboxLineRoundTrip(t *testing.T) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	e := enforcement.Crossing{SubscriptionID: "0b5e0f8e-6a4c-4d52-9d0e-2f4b8f3a9c11", PeriodStart: start, PeriodEnd: start.AddDate(0, 1, 0),
		Threshold: 90, Quota: 1000, Used: 901, Hard: true}
	line := enforcement.OutboxLine(e)
	if want := "v1|1793491200|1796083200|90|1000|901|1"; line != want {
		t.Fatalf("OutboxEntry = %q; want %q", line, want)
	}
	got, err := enforcement.ParseOutboxLine(e.SubscriptionID, line)
	if err != nil || got != e {
		t.Fatalf("ParseOutbox(%q) = %+v, %v; want %+v", line, got, err, e)
	}
	e.At = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := enforcement.UnmarshalCrossing(b)
	if err != nil || back != e {
		t.Fatalf("Unmarshal(Marshal(e)) = %+v, %v; want %+v", back, err, e)
	}
	if id := e.ID(); id != "0b5e0f8e-6a4c-4d52-9d0e-2f4b8f3a9c11:1793491200:90:1000" {
		t.Errorf("ID = %q", id)
	}
	if !(enforcement.Crossing{Threshold: 100, Hard: true}).Blocked() || (enforcement.Crossing{Threshold: 90, Hard: true}).Blocked() {
		t.Error("Blocked: want only a hard quota's 100% crossing to block")
	}
}

func TestInvalidQuotaEvents(t *testing.T) {
	for _, line := range []string{
		"", "v2|1|2|80|10|8|1", "v1|1|2|80|10|8", "v1|1|2|80|10|8|yes", "v1|x|2|80|10|8|1",
		"v1|1|2|85|10|8|1", "v1|1|2|80|0|8|1", "v1|1|2|80|10|-1|1", "v1|2|2|80|10|8|1",
	} {
		if _, err := enforcement.ParseOutboxLine("sub", line); !errors.Is(err, enforcement.ErrInvalidCrossing) {
			t.Errorf("ParseOutbox(%q) = %v; want ErrInvalid", line, err)
		}
	}
	for _, body := range []string{`{`, `{"subscription_id":""}`, `{"subscription_id":"s","threshold":80,"quota":5,"used":4}`} {
		if _, err := enforcement.UnmarshalCrossing([]byte(body)); !errors.Is(err, enforcement.ErrInvalidCrossing) {
			t.Errorf("Unmarshal(%s) = %v; want ErrInvalid", body, err)
		}
	}
}

// TestLuaFits holds the Lua check of a counter addition to the Go rule,
// usage.CheckedAdd, on Redis itself, around 2^53 (where Lua's doubles stop
// being exact) and around 2^63 (where HINCRBY fails).
func TestLuaFits(t *testing.T) {
	client := testenv.Redis(t)
	fits := rueidis.NewLuaScript(enforcement.Lua + `
if ARGV[1] == 'nil' then return fits(false, ARGV[2]) and 1 or 0 end
return fits(ARGV[1], ARGV[2]) and 1 or 0`)
	max := usage.MaxCounterMicro
	cases := []struct {
		cur, inc string
	}{
		{"nil", "0"}, {"nil", strconv.FormatInt(max, 10)}, {"0", "0"}, {"1", "1"},
		{strconv.FormatInt(1<<53, 10), "1"}, {strconv.FormatInt(1<<53+1, 10), "1"},
		{strconv.FormatInt(max-1, 10), "1"}, {strconv.FormatInt(max, 10), "1"}, {strconv.FormatInt(max, 10), "0"},
		{strconv.FormatInt(max-999_999_999, 10), "999999999"}, {strconv.FormatInt(max-999_999_999, 10), "1000000000"},
		{strconv.FormatInt(max-1_000_000_000, 10), "1000000000"}, {strconv.FormatInt(max-1_000_000_000, 10), "1000000001"},
		{"9000000000000000000", "223372036854775807"}, {"9000000000000000000", "223372036854775808"},
		{"8999999999999999999", "223372036854775808"}, {"9223372035999999999", "854775808"},
		{"9223372035999999999", "854775809"},
		{"-8446744073709551626", "1000000000000000"}, {"0009", "1"},
		{"12abc", "1"}, {"1.5", "1"}, {"", "1"},
	}
	for _, tc := range cases {
		got, err := fits.Exec(t.Context(), client, nil, []string{tc.cur, tc.inc}).AsInt64()
		if err != nil {
			t.Fatalf("fits(%s, %s): %v", tc.cur, tc.inc, err)
		}
		want := int64(0)
		if c, err := strconv.ParseInt(strings.TrimPrefix(tc.cur, "nil"), 10, 64); err == nil || tc.cur == "nil" {
			inc, _ := strconv.ParseInt(tc.inc, 10, 64)
			if c < 0 {
				want = 1
			} else if _, err := usage.CheckedAdd(c, inc); err == nil {
				want = 1
			}
		}
		if got != want {
			t.Errorf("fits(%s, %s) = %d; want %d", tc.cur, tc.inc, got, want)
		}
	}
}
