package billing

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/internal/testenv"
)

// noticeSetup is an invoice fixture whose service mails through the test
// Mailpit, and a finalized invoice of a customer whose billing email is
// unique to the test.
func noticeSetup(t *testing.T) (f *invoiceFixture, mp *testenv.MailpitServer, inv Invoice, email string) {
	t.Helper()
	f = invoiceSetup(t)
	mp = testenv.Mailpit(t)
	mailer, err := notify.NewSMTP(notify.SMTPConfig{Addr: mp.SMTPAddr(), From: "billing@veil.test", TLS: notify.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	f.svc.cfg.Mailer = mailer
	customer, sub := f.closedPeriod()
	email = "ap-" + testenv.Suffix() + "@example.test"
	admin := identity.Actor{Subject: "root", Role: identity.RoleAdmin}
	if _, err := f.svc.PutProfile(f.ctx, admin, customer, ProfileInput{
		LegalName: "Globex <b>Corp</b>", AddressLine1: "1 Main St", City: "Springfield", PostalCode: "12345", Country: "US", Email: email,
	}); err != nil {
		t.Fatalf("PutProfile: %v", err)
	}
	// A draft under review, finalized here by its provider.
	f.svc.cfg.Review = time.Hour
	if _, err := f.svc.BuildDrafts(f.ctx, 100); err != nil {
		t.Fatalf("BuildDrafts: %v", err)
	}
	inv, err = f.svc.Finalize(f.ctx, f.provider, f.invoiceOf(sub))
	if err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	explainZero(t, f.svc, inv.ID)
	return f, mp, inv, email
}

func sendNotices(t *testing.T, svc *Service, want int) {
	t.Helper()
	n, err := svc.SendNotices(t.Context(), 1000)
	if err != nil || n != want {
		t.Fatalf("SendNotices() = %d, %v; want %d, nil", n, err, want)
	}
}

// The finalized invoice is mailed once to the billing email with its PDF,
// whose text holds the number, each line's amount and the total; each
// reminder goes once, inside its window.
func TestNoticesFinalizedAndReminders(t *testing.T) {
	t.Parallel()
	f, mp, inv, email := noticeSetup(t)
	sendNotices(t, f.svc, 1)
	sendNotices(t, f.svc, 0)
	msgs := mp.WaitMessages(t, email, 1, 10*time.Second)
	m := msgs[0]
	if !strings.Contains(m.Subject, *inv.Number) || len(m.Attachments) != 1 || m.Attachments[0].FileName != *inv.Number+".pdf" ||
		m.Attachments[0].ContentType != "application/pdf" {
		t.Fatalf("finalized notice = %q with %+v; want the number in the subject and %s.pdf attached", m.Subject, m.Attachments, *inv.Number)
	}
	d, err := f.svc.Document(f.ctx, f.provider, inv.ID)
	if err != nil {
		t.Fatal(err)
	}
	text := pdfText(t, mp.Attachment(t, m.ID, m.Attachments[0].PartID))
	want := []string{*inv.Number, "Globex <b>Corp</b>", "Amount due", d.Money(inv.Total), d.Money(inv.AmountDue)}
	for _, l := range inv.Lines {
		want = append(want, d.Money(l.Amount))
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("attached PDF lacks %q; text:\n%s", w, text)
		}
	}

	due := *inv.DueAt
	for _, step := range []struct {
		at   time.Time
		kind string
		sent int
	}{
		{due.Add(-73 * time.Hour), "", 0},
		{due.Add(-71 * time.Hour), "is due on", 1},
		{due.Add(-time.Hour), "", 0},
		{due.Add(time.Minute), "is due today", 1},
		{due.Add(7*24*time.Hour - time.Minute), "", 0},
		{due.Add(7*24*time.Hour + time.Minute), "is overdue", 1},
		{due.Add(30 * 24 * time.Hour), "", 0},
	} {
		f.clock.Set(step.at)
		sendNotices(t, f.svc, step.sent)
		if step.kind == "" {
			continue
		}
		msgs := mp.WaitMessages(t, email, countKinds(f, inv.ID), 10*time.Second)
		found := false
		for _, m := range msgs {
			found = found || strings.Contains(m.Subject, step.kind)
		}
		if !found {
			t.Errorf("at due %+v: no message about %q among %d", step.at.Sub(due), step.kind, len(msgs))
		}
	}
	notices, err := f.svc.Notices(f.ctx, inv.ID)
	if err != nil || len(notices) != 4 {
		t.Fatalf("Notices() = %+v, %v; want the 4 kinds once each", notices, err)
	}
}

func countKinds(f *invoiceFixture, id uuid.UUID) int {
	var n int
	f.scan(&n, `SELECT count(*) FROM invoice_notices WHERE invoice_id = $1`, id)
	return n
}

// A reminder whose window passed while nothing ran is not sent late, and a
// paid invoice gets no reminder.
func TestNoticesSkipPassedWindowsAndPaid(t *testing.T) {
	t.Parallel()
	// Each case has its own database and recipient: they run side by side.
	t.Run("passed windows", func(t *testing.T) {
		t.Parallel()
		f, mp, inv, email := noticeSetup(t)
		sendNotices(t, f.svc, 1)
		f.clock.Set(inv.DueAt.Add(8 * 24 * time.Hour))
		sendNotices(t, f.svc, 1) // overdue; neither due soon nor due
		mp.WaitMessages(t, email, 2, 10*time.Second)
		var kinds []string
		for _, n := range must(f.svc.Notices(f.ctx, inv.ID)) {
			kinds = append(kinds, n.Kind)
		}
		if strings.Join(kinds, ",") != "finalized,overdue" {
			t.Errorf("notices = %v; want finalized,overdue", kinds)
		}
	})

	// An invoice finalized more than 30 days before the notices first
	// run (no mailer then) gets its reminders, not its email.
	t.Run("finalized long ago", func(t *testing.T) {
		t.Parallel()
		f3, _, late, _ := noticeSetup(t)
		f3.clock.Set(late.FinalizedAt.Add(31 * 24 * time.Hour))
		sendNotices(t, f3.svc, 1)
		if n := must(f3.svc.Notices(f3.ctx, late.ID)); len(n) != 1 || n[0].Kind != NoticeDue {
			t.Errorf("notices of an invoice finalized 31 days ago = %+v; want due only", n)
		}
	})

	t.Run("paid", func(t *testing.T) {
		t.Parallel()
		f2, _, paid, _ := noticeSetup(t)
		sendNotices(t, f2.svc, 1)
		if _, err := f2.svc.MarkPaid(f2.ctx, identity.Actor{Subject: "root", Role: identity.RoleAdmin}, paid.ID); err != nil {
			t.Fatalf("MarkPaid: %v", err)
		}
		f2.clock.Set(paid.DueAt.Add(time.Minute))
		sendNotices(t, f2.svc, 0)
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// downMailer fails every send, as an unreachable mail server does.
type downMailer struct{ calls int }

func (m *downMailer) Send(context.Context, notify.Message) error {
	m.calls++
	return errors.New("dial tcp: connection refused")
}

// A send that fails records nothing and stops the run; the next run with
// the server back sends the notice.
func TestNoticesRetriedAfterMailFailure(t *testing.T) {
	t.Parallel()
	f, mp, inv, email := noticeSetup(t)
	working := f.svc.cfg.Mailer
	down := &downMailer{}
	f.svc.cfg.Mailer = down
	if n, err := f.svc.SendNotices(f.ctx, 100); n != 0 || !errors.Is(err, errMailFailed) || down.calls != 1 {
		t.Fatalf("SendNotices with the server down = %d, %v after %d sends; want 0, errMailFailed after 1", n, err, down.calls)
	}
	if n := countKinds(f, inv.ID); n != 0 {
		t.Fatalf("notices recorded after a failed send = %d; want 0", n)
	}
	f.svc.cfg.Mailer = working
	sendNotices(t, f.svc, 1)
	mp.WaitMessages(t, email, 1, 10*time.Second)
}
