package processors_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/processors"
)

// TestSubjectOfAnotherAPIDeadLettered: a producer allowed to write for one
// API names as subject a subscription of another. The event goes to the
// dead-letter queue and usage_rejects with reason subject_api_mismatch and
// counts nowhere; the subscription's own API's event counts, and so does an
// event of a subject without a record (a canceled subscription's late
// event).
func TestSubjectOfAnotherAPIDeadLettered(t *testing.T) {
	e := setup(t)
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	victim, norecord := e.sub("victim"), e.sub("norecord")
	start, end := at.Add(-24*time.Hour), at.Add(24*time.Hour)
	e.putRecord(t, victim, start, end, "api_id", "api_y", "quota_requests", "1", "quota_hard", "1")
	value := func(id, subject, api string) []byte {
		return recordEvent(e.prefix+"-"+id, subject, api, at, "5")
	}
	recs := []*kgo.Record{
		{Topic: e.raw, Key: []byte(victim), Value: value("spoof1", victim, "api_x")},
		{Topic: e.raw, Key: []byte(victim), Value: value("own", victim, "api_y")},
		{Topic: e.raw, Key: []byte(victim), Value: value("spoof2", victim, "api_x")},
		{Topic: e.raw, Key: []byte(norecord), Value: value("late", norecord, "api_x")},
	}
	e.send(t, recs...)
	stop := e.start(t, "g-"+e.prefix)
	defer stop()
	testenv.Deadline(t, 60*time.Second, func() error {
		rejects, err := e.rejects(t, string(processors.ReasonSubjectAPIMismatch))
		if err != nil {
			return err
		}
		if rejects != 2 {
			return fmt.Errorf("usage_rejects holds %d %s rows; want 2", rejects, processors.ReasonSubjectAPIMismatch)
		}
		ids, err := e.eventIDs(t)
		if err != nil {
			return err
		}
		if fmt.Sprint(ids) != "[late own]" {
			return fmt.Errorf("usage_events ids = %v; want [late own]", ids)
		}
		return e.checkCounters(t,
			counterWant{enforcement.PeriodCounterName(victim, start), 1, 5_000_000},
			counterWant{enforcement.PeriodCounterName(norecord, monthStart(at)), 1, 5_000_000})
	})
	testenv.Deadline(t, 30*time.Second, func() error {
		dead, err := e.deadLetters(t)
		if err != nil {
			return err
		}
		want := string(processors.ReasonSubjectAPIMismatch)
		if len(dead) != 2 || dead["spoof1"] != want || dead["spoof2"] != want {
			return fmt.Errorf("dead letters = %v; want spoof1 and spoof2 with %s", dead, want)
		}
		return nil
	})
}
