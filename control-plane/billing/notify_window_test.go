package billing

import (
	"testing"
	"time"
)

// The overdue reminder has a window too: an invoice first seen 14 days
// past its due date gets none, rather than one weeks late.
func TestOverdueNoticeWindowCloses(t *testing.T) {
	t.Parallel()
	f, _, inv, _ := noticeSetup(t)
	sendNotices(t, f.svc, 1) // finalized
	f.clock.Set(inv.DueAt.Add(14*24*time.Hour + time.Minute))
	sendNotices(t, f.svc, 0)
	f.clock.Set(inv.DueAt.Add(14*24*time.Hour - time.Minute))
	sendNotices(t, f.svc, 1) // overdue, inside its window
}
