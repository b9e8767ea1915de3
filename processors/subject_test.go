package processors_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas/usage"
)

// TestInvalidSubjectDeadLettered: an event whose subject is not a
// subscription id (a Redis Cluster hash tag, a name, a UUID in upper case,
// anonymous on an admitted request) goes to the dead-letter topic and
// usage_rejects with reason invalid_subject, names no Redis key, and does
// not hold up the valid event beside it.
func TestInvalidSubjectDeadLettered(t *testing.T) {
	e := setup(t)
	at := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	good := e.sub("good")
	bad := []string{"{" + e.prefix + "}", e.prefix + "-sub-{0}", e.prefix + "-name", strings.ToUpper(e.sub("upper")), usage.AnonymousSubject}
	value := func(id, subject string) []byte {
		return requestEvent(e.prefix+"-"+id, subject, at, 200, "1", "")
	}
	recs := []*kgo.Record{{Topic: e.raw, Key: []byte(good), Value: value("good", good)}}
	for i, s := range bad {
		recs = append(recs, &kgo.Record{Topic: e.raw, Key: []byte(s), Value: value(fmt.Sprint("bad", i), s)})
	}
	e.send(t, recs...)
	defer e.start(t, "g-"+e.prefix)()

	testenv.Deadline(t, 60*time.Second, func() error {
		rejects, err := e.rejects(t, string(usage.ReasonInvalidSubject))
		if err != nil {
			return err
		}
		if rejects != uint64(len(bad)) {
			return fmt.Errorf("usage_rejects holds %d invalid_subject rows; want %d", rejects, len(bad))
		}
		dead := 0
		for _, reason := range e.deadReasons(t) {
			if reason == string(usage.ReasonInvalidSubject) {
				dead++
			}
		}
		if dead != len(bad) {
			return fmt.Errorf("DLQ holds %d invalid_subject records; want %d", dead, len(bad))
		}
		n, err := e.redis.Do(t.Context(), e.redis.B().Hget().Key(enforcement.PeriodCounterName(good, monthStart(at))).Field("requests").Build()).AsInt64()
		if err != nil || n != 1 {
			return fmt.Errorf("requests of the valid subscription = %d (%v); want 1", n, err)
		}
		return nil
	})
	for _, s := range bad[:4] { // anonymous is not unique to this test
		keys, err := e.redis.Do(t.Context(), e.redis.B().Keys().Pattern("*"+s+"*").Build()).AsStrSlice()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) > 0 {
			t.Errorf("Redis holds %v for the refused subject %q; want nothing", keys, s)
		}
	}
}
