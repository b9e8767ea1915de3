package processors

import (
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/enforcement"
)

// The Redis state the sink's tests write and check.

// wantCounterFields fails the test, naming the check name, unless the
// counter hash key holds requests and unitsMicro ("" for a missing field).
func wantCounterFields(t *testing.T, client rueidis.Client, name, key, requests, unitsMicro string) {
	t.Helper()
	got, err := client.Do(t.Context(), client.B().Hmget().Key(key).Field("requests", "units_micro").Build()).AsStrSlice()
	if want := []string{requests, unitsMicro}; err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("%s: %s requests, units_micro = %q, %v; want %q", name, key, got, err, want)
	}
}

// putRecord writes the fields of subject's subscription record that the
// sink reads: the period from start to end and fields, name and value
// pairs, beside it.
func putRecord(t testing.TB, client rueidis.Client, subject string, start, end time.Time, fields ...string) {
	t.Helper()
	cmd := client.B().Hset().Key(enforcement.SubscriptionName(subject)).FieldValue().
		FieldValue("period_start", strconv.FormatInt(start.Unix(), 10)).
		FieldValue("period_end", strconv.FormatInt(end.Unix(), 10))
	for i := 0; i+1 < len(fields); i += 2 {
		cmd = cmd.FieldValue(fields[i], fields[i+1])
	}
	if err := client.Do(t.Context(), cmd.Build()).Error(); err != nil {
		t.Fatal(err)
	}
}
