package billing

import (
	"context"
	"net/textproto"
	"testing"

	"github.com/veil-platform/veil/control-plane/notify"
)

// refusingMailer refuses every recipient for good, as a relay does an
// unknown mailbox (SMTP 550).
type refusingMailer struct{ calls int }

func (m *refusingMailer) Send(context.Context, notify.Message) error {
	m.calls++
	return &textproto.Error{Code: 550, Msg: "5.1.1 recipient address rejected"}
}

// A recipient refused for good has its notice recorded as done: the run
// goes on, and the next one does not ask the relay again.
func TestNoticesRefusedRecipientRecorded(t *testing.T) {
	t.Parallel()
	f, _, inv, _ := noticeSetup(t)
	m := &refusingMailer{}
	f.svc.cfg.Mailer = m
	if n, err := f.svc.SendNotices(f.ctx, 100); n != 0 || err != nil {
		t.Fatalf("SendNotices to a refused recipient = %d, %v; want 0, nil", n, err)
	}
	if n := countKinds(f, inv.ID); n != 1 {
		t.Errorf("notices recorded = %d; want 1", n)
	}
	sendNotices(t, f.svc, 0)
	if m.calls != 1 {
		t.Errorf("the relay was asked %d times; want 1", m.calls)
	}
}
