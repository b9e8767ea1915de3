// Package notify sends the control plane's notices to people: email over SMTP.
//
// Callers depend on the Mailer interface; cmd/veil picks SMTP when an SMTP
// server is configured (VEIL_SMTP_ADDR) and Discard when none is, so a
// local run without mail still works. Every Mailer validates the message
// the same way, so a bad message fails in development as it would in
// production.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/textproto"
	"strings"
)

// Message is one plain-text email.
type Message struct {
	// To holds the recipients: "a@example.com" or "Ann <a@example.com>".
	To      []string
	Subject string
	// Text is the plain-text body.
	Text string
	// Headers are extra header fields, e.g. "Message-ID" (a stable one per
	// notice lets mail clients drop a duplicate when a job retries a send)
	// or "X-Veil-Event". The fields the mailer writes itself (From, To,
	// Subject, Date, MIME and content headers) cannot be set here.
	Headers map[string]string
	// Attachments are files sent with the text (an invoice's PDF).
	Attachments []Attachment
}

// Attachment is a file attached to a message.
type Attachment struct {
	// Name is the file name the recipient sees: no path, no line break.
	Name string
	// ContentType is its MIME type, e.g. "application/pdf".
	ContentType string
	Data        []byte
}

// Mailer sends email.
type Mailer interface {
	// Send delivers m to the mail server, which takes it from there. An
	// invalid message fails with an error matching ErrInvalidMessage and
	// must not be retried; other errors may pass on a retry.
	Send(ctx context.Context, m Message) error
}

// Validation errors. Each matches ErrInvalidMessage.
var (
	// ErrInvalidMessage: the message cannot be sent as it is; retrying is
	// pointless.
	ErrInvalidMessage = errors.New("invalid message")
	// ErrNoRecipients: To is empty.
	ErrNoRecipients = fmt.Errorf("%w: no recipients", ErrInvalidMessage)
	// ErrHeaderInjection: a subject, header or address holds a CR or LF,
	// which would let it start header fields of its own.
	ErrHeaderInjection = fmt.Errorf("%w: line break in a header field (header injection)", ErrInvalidMessage)
	// ErrInvalidAddress: a recipient is not an RFC 5322 address.
	ErrInvalidAddress = fmt.Errorf("%w: bad email address", ErrInvalidMessage)
	// ErrInvalidHeader: a header name is malformed or names a field the
	// mailer writes itself.
	ErrInvalidHeader = fmt.Errorf("%w: bad header", ErrInvalidMessage)
	// ErrInvalidAttachment: an attachment has no name, a name with a path
	// separator, a quote or a line break, or a content type with a line
	// break.
	ErrInvalidAttachment = fmt.Errorf("%w: bad attachment", ErrInvalidMessage)
)

// reservedHeaders are written by the mailer from the message's fields;
// a second copy from Headers would make an ambiguous message.
var reservedHeaders = map[string]bool{
	"From": true, "To": true, "Cc": true, "Bcc": true, "Subject": true, "Date": true,
	"Sender": true, "Return-Path": true, "Mime-Version": true,
	"Content-Type": true, "Content-Transfer-Encoding": true,
}

// Validate reports why m cannot be sent, or nil.
func (m Message) Validate() error {
	if len(m.To) == 0 {
		return ErrNoRecipients
	}
	for _, to := range m.To {
		if _, err := parseAddress(to); err != nil {
			return fmt.Errorf("recipient %q: %w", to, err)
		}
	}
	if hasLineBreak(m.Subject) {
		return fmt.Errorf("subject %q: %w", m.Subject, ErrHeaderInjection)
	}
	for k, v := range m.Headers {
		if !validHeaderName(k) {
			return fmt.Errorf("header name %q: %w", k, ErrInvalidHeader)
		}
		if reservedHeaders[textproto.CanonicalMIMEHeaderKey(k)] {
			return fmt.Errorf("header %s is written by the mailer: %w", k, ErrInvalidHeader)
		}
		if hasLineBreak(v) {
			return fmt.Errorf("header %s value %q: %w", k, v, ErrHeaderInjection)
		}
	}
	for _, a := range m.Attachments {
		if a.Name == "" || strings.ContainsAny(a.Name, "/\\\"") || hasLineBreak(a.Name) || hasLineBreak(a.ContentType) {
			return fmt.Errorf("attachment %q: %w", a.Name, ErrInvalidAttachment)
		}
	}
	return nil
}

// parseAddress parses one address, refusing line breaks before the parser
// sees them: net/mail reads a CRLF followed by a space as folding.
func parseAddress(s string) (*mail.Address, error) {
	if hasLineBreak(s) {
		return nil, ErrHeaderInjection
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidAddress, err)
	}
	return a, nil
}

func hasLineBreak(s string) bool { return strings.ContainsAny(s, "\r\n") }

// validHeaderName reports whether s is an RFC 5322 field name: printable
// US-ASCII except the colon.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// Discard is the Mailer for when no SMTP server is configured
// (VEIL_SMTP_ADDR is empty): it validates the message, logs at debug level
// that it was not sent, and succeeds.
type Discard struct {
	// Logger receives the debug line; nil logs nothing.
	Logger *slog.Logger
}

// Send implements Mailer.
func (d Discard) Send(ctx context.Context, m Message) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("send email: %w", err)
	}
	if d.Logger != nil {
		d.Logger.DebugContext(ctx, "email not sent: no SMTP server is configured (VEIL_SMTP_ADDR is empty)",
			"recipients", len(m.To), "subject", m.Subject)
	}
	return nil
}

var _ Mailer = Discard{}
