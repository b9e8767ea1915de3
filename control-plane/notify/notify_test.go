package notify_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/veil-platform/veil/control-plane/notify"
	"github.com/veil-platform/veil/internal/testenv"
)

const from = "Veil <noreply@veil.test>"

// setup returns a mailer for the test Mailpit and its metrics.
func setup(t *testing.T, cfg notify.SMTPConfig) (*notify.SMTP, *metrics.Set) {
	t.Helper()
	set := metrics.NewSet()
	if cfg.Addr == "" {
		cfg.Addr = testenv.Mailpit(t).SMTPAddr()
	}
	if cfg.From == "" {
		cfg.From = from
	}
	cfg.Logger = testenv.Logger(t)
	cfg.Metrics = set
	m, err := notify.NewSMTP(cfg)
	if err != nil {
		t.Fatalf("NewSMTP(%+v) = %v", cfg, err)
	}
	return m, set
}

func counter(set *metrics.Set, name string) uint64 { return set.GetOrCreateCounter(name).Get() }

// recipient returns an address no other test sends to.
func recipient(name string) string { return name + "-" + testenv.Suffix() + "@example.test" }

// noMessages checks that Mailpit holds no message to to. A refused message
// never reaches the server, so nothing can be on its way: there is no need
// to wait before looking.
func noMessages(t *testing.T, mp *testenv.MailpitServer, to string) {
	t.Helper()
	if got := mp.Messages(t, to); len(got) != 0 {
		t.Errorf("messages to %s = %d; want 0", to, len(got))
	}
}

func TestSMTPSend(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  notify.SMTPConfig
		// bracket writes the Message-ID header as "<id>", not as "id".
		bracket bool
	}{
		{"plain", notify.SMTPConfig{TLS: notify.TLSNone}, false},
		// Mailpit offers no STARTTLS, so opportunistic sends in the clear;
		// PLAIN credentials may, since the server is on loopback.
		{"opportunistic with auth", notify.SMTPConfig{Username: "veil", Password: "secret"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mp := testenv.Mailpit(t)
			mailer, set := setup(t, tt.cfg)
			ann, bob := recipient("ann"), recipient("bob")
			msgID := testenv.Suffix() + "@notice.veil.test"
			header := msgID
			if tt.bracket {
				header = "<" + msgID + ">"
			}
			msg := notify.Message{
				To:      []string{"Ann Example <" + ann + ">", bob},
				Subject: "Invoice № 42 is ready — pay by 1 May",
				Text:    "Hello Ann,\n\nyour invoice for April is ready: 12,50 €.\nLong line " + strings.Repeat("x", 120) + "\n",
				Headers: map[string]string{"Message-ID": header, "x-veil-event": "invoice.finalized"},
			}
			if err := mailer.Send(t.Context(), msg); err != nil {
				t.Fatalf("Send() = %v; want nil", err)
			}

			got := mp.WaitMessages(t, ann, 1, 10*time.Second)
			if len(got) != 1 {
				t.Fatalf("messages to %s = %d; want 1", ann, len(got))
			}
			m := got[0]
			if m.From != "noreply@veil.test" {
				t.Errorf("From = %q; want noreply@veil.test", m.From)
			}
			if want := []string{ann, bob}; !slices.Equal(m.To, want) {
				t.Errorf("To = %q; want %q", m.To, want)
			}
			if m.Subject != msg.Subject {
				t.Errorf("Subject = %q; want %q", m.Subject, msg.Subject)
			}
			if m.Text != msg.Text {
				t.Errorf("Text = %q; want %q", m.Text, msg.Text)
			}
			if h := m.Headers["X-Veil-Event"]; !slices.Equal(h, []string{"invoice.finalized"}) {
				t.Errorf("X-Veil-Event = %q; want [invoice.finalized]", h)
			}
			if h := m.Headers["Message-Id"]; !slices.Equal(h, []string{"<" + msgID + ">"}) {
				t.Errorf("Message-Id = %q; want [<%s>]", h, msgID)
			}
			if m.Username != tt.cfg.Username {
				t.Errorf("SMTP username = %q; want %q", m.Username, tt.cfg.Username)
			}
			if h := m.Headers["Date"]; len(h) != 1 {
				t.Errorf("Date = %q; want one", h)
			}
			if n := len(mp.Messages(t, bob)); n != 1 {
				t.Errorf("messages to %s = %d; want 1", bob, n)
			}
			if n := counter(set, "veil_notify_email_sent_total"); n != 1 {
				t.Errorf("veil_notify_email_sent_total = %d; want 1", n)
			}
			if n := counter(set, "veil_notify_email_failed_total"); n != 0 {
				t.Errorf("veil_notify_email_failed_total = %d; want 0", n)
			}
		})
	}
}

func TestSMTPSendAttachment(t *testing.T) {
	t.Parallel()
	mp := testenv.Mailpit(t)
	mailer, _ := setup(t, notify.SMTPConfig{TLS: notify.TLSNone})
	to := recipient("dora")
	data := append([]byte("%PDF-1.3\n"), bytes.Repeat([]byte{0, 0xff, '\r', '\n'}, 300)...)
	msg := notify.Message{To: []string{to}, Subject: "Invoice", Text: "attached",
		Attachments: []notify.Attachment{{Name: "INV-2026-000001.pdf", ContentType: "application/pdf", Data: data}}}
	if err := mailer.Send(t.Context(), msg); err != nil {
		t.Fatalf("Send() = %v; want nil", err)
	}
	got := mp.WaitMessages(t, to, 1, 10*time.Second)
	if len(got) != 1 || len(got[0].Attachments) != 1 {
		t.Fatalf("messages to %s = %+v; want 1 with 1 attachment", to, got)
	}
	a := got[0].Attachments[0]
	if a.FileName != "INV-2026-000001.pdf" || a.ContentType != "application/pdf" {
		t.Errorf("attachment = %s (%s); want INV-2026-000001.pdf (application/pdf)", a.FileName, a.ContentType)
	}
	if b := mp.Attachment(t, got[0].ID, a.PartID); !bytes.Equal(b, data) {
		t.Errorf("attachment content = %d bytes differing from the %d sent", len(b), len(data))
	}
	if got[0].Text != "attached" {
		t.Errorf("Text = %q; want attached", got[0].Text)
	}
}

func TestSMTPSendRefusesInvalid(t *testing.T) {
	t.Parallel()
	mp := testenv.Mailpit(t)
	mailer, set := setup(t, notify.SMTPConfig{})
	to := recipient("carol")
	ok := func(edit func(*notify.Message)) notify.Message {
		m := notify.Message{To: []string{to}, Subject: "Hello", Text: "body", Headers: map[string]string{"X-Veil-Event": "x"}}
		edit(&m)
		return m
	}
	tests := []struct {
		name string
		msg  notify.Message
		want error
	}{
		{"no recipients", ok(func(m *notify.Message) { m.To = nil }), notify.ErrNoRecipients},
		{"empty recipient", ok(func(m *notify.Message) { m.To = []string{""} }), notify.ErrInvalidAddress},
		{"bad recipient", ok(func(m *notify.Message) { m.To = []string{"not an address"} }), notify.ErrInvalidAddress},
		{"LF in recipient", ok(func(m *notify.Message) { m.To = []string{to + "\nBcc: victim@example.test"} }), notify.ErrHeaderInjection},
		{"CRLF in recipient name", ok(func(m *notify.Message) { m.To = []string{"Ann\r\n <" + to + ">"} }), notify.ErrHeaderInjection},
		{"CRLF in subject", ok(func(m *notify.Message) { m.Subject = "Hi\r\nBcc: victim@example.test" }), notify.ErrHeaderInjection},
		{"CR in subject", ok(func(m *notify.Message) { m.Subject = "Hi\rthere" }), notify.ErrHeaderInjection},
		{"LF in header value", ok(func(m *notify.Message) { m.Headers["X-Veil-Event"] = "a\nBcc: victim@example.test" }), notify.ErrHeaderInjection},
		{"LF in header name", ok(func(m *notify.Message) { m.Headers["X-A\nBcc"] = "v" }), notify.ErrInvalidHeader},
		{"colon in header name", ok(func(m *notify.Message) { m.Headers["X-A: b"] = "v" }), notify.ErrInvalidHeader},
		{"empty header name", ok(func(m *notify.Message) { m.Headers[""] = "v" }), notify.ErrInvalidHeader},
		{"reserved Bcc header", ok(func(m *notify.Message) { m.Headers["bcc"] = "victim@example.test" }), notify.ErrInvalidHeader},
		{"reserved Content-Type header", ok(func(m *notify.Message) { m.Headers["Content-Type"] = "text/html" }), notify.ErrInvalidHeader},
		{"unnamed attachment", ok(func(m *notify.Message) { m.Attachments = []notify.Attachment{{ContentType: "application/pdf"}} }), notify.ErrInvalidAttachment},
		{"attachment with a path", ok(func(m *notify.Message) { m.Attachments = []notify.Attachment{{Name: "../etc/x.pdf"}} }), notify.ErrInvalidAttachment},
		{"LF in attachment name", ok(func(m *notify.Message) { m.Attachments = []notify.Attachment{{Name: "a\nb.pdf"}} }), notify.ErrInvalidAttachment},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := mailer.Send(t.Context(), tt.msg)
			if !errors.Is(err, tt.want) || !errors.Is(err, notify.ErrInvalidMessage) {
				t.Errorf("Send(%+v) = %v; want %v (an ErrInvalidMessage)", tt.msg, err, tt.want)
			}
			if err := (notify.Discard{Logger: testenv.Logger(t)}).Send(t.Context(), tt.msg); !errors.Is(err, tt.want) {
				t.Errorf("Discard.Send(%+v) = %v; want %v", tt.msg, err, tt.want)
			}
		})
	}
	if n, want := counter(set, "veil_notify_email_failed_total"), uint64(len(tests)); n != want {
		t.Errorf("veil_notify_email_failed_total = %d; want %d", n, want)
	}
	if n := counter(set, "veil_notify_email_sent_total"); n != 0 {
		t.Errorf("veil_notify_email_sent_total = %d; want 0", n)
	}
	noMessages(t, mp, to)
}

func TestSMTPMandatoryTLSRefusesPlainServer(t *testing.T) {
	t.Parallel()
	mp := testenv.Mailpit(t)
	mailer, set := setup(t, notify.SMTPConfig{TLS: notify.TLSMandatory})
	to := recipient("dave")
	err := mailer.Send(t.Context(), notify.Message{To: []string{to}, Subject: "s", Text: "t"})
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("Send() with mandatory TLS to Mailpit (no STARTTLS) = %v; want a STARTTLS error", err)
	}
	if errors.Is(err, notify.ErrInvalidMessage) {
		t.Errorf("Send() = %v; want an error that is not ErrInvalidMessage", err)
	}
	if n := counter(set, "veil_notify_email_failed_total"); n != 1 {
		t.Errorf("veil_notify_email_failed_total = %d; want 1", n)
	}
	noMessages(t, mp, to)
}

func TestSMTPSendEndsWithContext(t *testing.T) {
	t.Parallel()
	// A server that accepts connections and never greets: only the
	// context can end the send, as the command timeout is long.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(conns)
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range conns {
			c.Close()
		}
	})
	mailer, set := setup(t, notify.SMTPConfig{Addr: ln.Addr().String(), TLS: notify.TLSNone, Timeout: time.Minute})
	msg := notify.Message{To: []string{recipient("erin")}, Subject: "s", Text: "t"}

	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := mailer.Send(cancelled, msg); !errors.Is(err, context.Canceled) {
		t.Errorf("Send(cancelled context) = %v; want context.Canceled", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- mailer.Send(ctx, msg) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Send(ctx with deadline) to a silent server = %v; want context.DeadlineExceeded", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Send to a silent server still running 30s after its context ended; want it to end with the context")
	}
	if n := counter(set, "veil_notify_email_failed_total"); n != 2 {
		t.Errorf("veil_notify_email_failed_total = %d; want 2", n)
	}
}

func TestDiscard(t *testing.T) {
	t.Parallel()
	var m notify.Mailer = notify.Discard{Logger: testenv.Logger(t)}
	if err := m.Send(t.Context(), notify.Message{To: []string{"a@example.test"}, Subject: "s", Text: "t"}); err != nil {
		t.Errorf("Discard.Send(valid) = %v; want nil", err)
	}
	if err := (notify.Discard{}).Send(t.Context(), notify.Message{To: []string{"a@example.test"}}); err != nil {
		t.Errorf("Discard{}.Send(valid) = %v; want nil", err)
	}
}

func TestNewSMTPRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  notify.SMTPConfig
	}{
		{"no address", notify.SMTPConfig{From: from}},
		{"no port", notify.SMTPConfig{Addr: "smtp.example.test", From: from}},
		{"no host", notify.SMTPConfig{Addr: ":25", From: from}},
		{"bad port", notify.SMTPConfig{Addr: "smtp.example.test:0", From: from}},
		{"no from", notify.SMTPConfig{Addr: "smtp.example.test:25"}},
		{"bad from", notify.SMTPConfig{Addr: "smtp.example.test:25", From: "noreply"}},
		{"LF in from", notify.SMTPConfig{Addr: "smtp.example.test:25", From: "a@example.test\nBcc: b@example.test"}},
		{"unknown tls", notify.SMTPConfig{Addr: "smtp.example.test:25", From: from, TLS: "starttls"}},
		{"negative timeout", notify.SMTPConfig{Addr: "smtp.example.test:25", From: from, Timeout: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := notify.NewSMTP(tt.cfg); err == nil {
				t.Errorf("NewSMTP(%+v) = nil error; want an error", tt.cfg)
			}
		})
	}
	for _, mode := range []string{"", notify.TLSNone, notify.TLSOpportunistic, notify.TLSMandatory, notify.TLSImplicit} {
		cfg := notify.SMTPConfig{Addr: "smtp.example.test:587", From: from, TLS: mode}
		if _, err := notify.NewSMTP(cfg); err != nil {
			t.Errorf("NewSMTP(%+v) = %v; want nil", cfg, err)
		}
	}
}
