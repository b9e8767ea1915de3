package metering_test

import (
	"testing"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/metering"
)

// TestSubjectTotals: a subject's events in the half-open range, its
// refusals and other subjects' events left out.
func TestSubjectTotals(t *testing.T) {
	ctx := t.Context()
	conn, _, _ := testenv.ClickHouseDB(t)
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO usage_events (id, source, type, subject, time, units, refusal)")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []struct {
		id, subject, at, units, refusal string
	}{
		{"t1", "sub_t", "2026-03-02 10:00:00", "1.5", ""},
		{"t2", "sub_t", "2026-03-02 23:59:59", "2", ""},
		{"t3", "sub_t", "2026-03-02 11:00:00", "0", "quota_exhausted"},
		{"t4", "sub_t", "2026-03-03 00:00:00", "7", ""}, // at the end: out
		{"t5", "sub_t", "2026-03-01 23:59:59", "7", ""}, // before the start: out
		{"t6", "sub_u", "2026-03-02 10:00:00", "7", ""},
	} {
		if err := batch.Append(e.id, "/test", "veil.api.request", e.subject, utc(t, e.at), decimal.RequireFromString(e.units), e.refusal); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	got, err := metering.NewReader(conn).SubjectTotals(ctx, "sub_t", utc(t, "2026-03-02 00:00:00"), utc(t, "2026-03-03 00:00:00"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Events != 2 || !got.Units.Equal(decimal.RequireFromString("3.5")) {
		t.Errorf("SubjectTotals(sub_t, 2026-03-02) = %d events, %s units; want 2, 3.5", got.Events, got.Units)
	}
}
