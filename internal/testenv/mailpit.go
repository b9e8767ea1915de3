package testenv

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// MailpitServer is the test SMTP server (Mailpit, started by
// deploy/local/services.sh up): it accepts every message and keeps it for
// the test to read back through its HTTP API.
type MailpitServer struct {
	smtpAddr string
	apiURL   string
	client   *http.Client
}

// MailpitMessage is one message Mailpit received.
type MailpitMessage struct {
	ID string
	// From is the address of the From header, without its display name.
	From string
	// To holds the addresses of the To header, without display names.
	To      []string
	Subject string
	// Text is the decoded plain-text body with line endings turned into
	// "\n", as the sender wrote it.
	Text string
	// Username is what the sender authenticated with, "" without AUTH.
	Username string
	// Headers are keyed by canonical name (textproto.CanonicalMIMEHeaderKey:
	// "Message-Id", "X-Veil-Event").
	Headers map[string][]string
	// Attachments are the message's attached files (Attachment reads one).
	Attachments []MailpitAttachment
}

// MailpitAttachment is a file attached to a message.
type MailpitAttachment struct {
	PartID      string
	FileName    string
	ContentType string
	Size        int
}

// Mailpit returns the test Mailpit: SMTP at VEIL_SMTP_ADDR (default
// 127.0.0.1:1025), HTTP API at VEIL_MAILPIT_URL (default
// http://127.0.0.1:8025). The test fails when either does not answer.
//
// Mailpit is shared by every test and nothing is deleted: a test sends to
// recipients unique to it (for example "user-"+Suffix()+"@example.test")
// and reads back only those, so tests run in parallel.
func Mailpit(t testing.TB) *MailpitServer {
	t.Helper()
	s := &MailpitServer{
		smtpAddr: Env("VEIL_SMTP_ADDR", "127.0.0.1:1025"),
		apiURL:   strings.TrimRight(Env("VEIL_MAILPIT_URL", "http://127.0.0.1:8025"), "/"),
		client:   &http.Client{Timeout: 5 * time.Second},
	}
	var info struct{ Version string }
	if err := s.getJSON("/api/v1/info", nil, &info); err != nil {
		t.Fatalf("Mailpit API at %s does not answer (start it with deploy/local/services.sh up): %v", s.apiURL, err)
	}
	conn, err := net.DialTimeout("tcp", s.smtpAddr, 5*time.Second)
	if err != nil {
		t.Fatalf("Mailpit SMTP at %s does not answer (start it with deploy/local/services.sh up): %v", s.smtpAddr, err)
	}
	conn.Close()
	return s
}

// SMTPAddr is the host:port where Mailpit takes mail.
func (s *MailpitServer) SMTPAddr() string { return s.smtpAddr }

// URL is the base of Mailpit's web UI and HTTP API.
func (s *MailpitServer) URL() string { return s.apiURL }

// Messages returns every message whose To header holds the address to
// (compared without case), oldest first. It fails the test when Mailpit's
// API does not answer.
func (s *MailpitServer) Messages(t testing.TB, to string) []MailpitMessage {
	t.Helper()
	msgs, err := s.messages(to)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// WaitMessages polls until at least n messages to the address to arrived,
// and returns them all, oldest first; it fails the test after d.
func (s *MailpitServer) WaitMessages(t testing.TB, to string, n int, d time.Duration) []MailpitMessage {
	t.Helper()
	var msgs []MailpitMessage
	Deadline(t, d, func() error {
		var err error
		if msgs, err = s.messages(to); err != nil {
			return err
		}
		if len(msgs) < n {
			return fmt.Errorf("%d messages to %s in Mailpit; want at least %d", len(msgs), to, n)
		}
		return nil
	})
	return msgs
}

// mailpitAddress is an address as Mailpit's API shows it.
type mailpitAddress struct {
	Name    string
	Address string
}

// mailpitSummary is a message in a search result.
type mailpitSummary struct {
	ID string
	To []mailpitAddress
}

func (s *MailpitServer) messages(to string) ([]MailpitMessage, error) {
	// The search matches substrings ("to:b@x" finds "ab@x"), so results are
	// filtered on the exact address. Newest come first; pages until done.
	const limit = 200
	var ids []string
	for start := 0; ; start += limit {
		var page struct {
			MessagesCount int `json:"messages_count"`
			Messages      []mailpitSummary
		}
		q := url.Values{
			"query": {`to:"` + to + `"`},
			"start": {strconv.Itoa(start)},
			"limit": {strconv.Itoa(limit)},
		}
		if err := s.getJSON("/api/v1/search", q, &page); err != nil {
			return nil, fmt.Errorf("search Mailpit for messages to %s: %w", to, err)
		}
		for _, m := range page.Messages {
			if slices.ContainsFunc(m.To, func(a mailpitAddress) bool { return strings.EqualFold(a.Address, to) }) {
				ids = append(ids, m.ID)
			}
		}
		if len(page.Messages) < limit || start+limit >= page.MessagesCount {
			break
		}
	}
	slices.Reverse(ids)
	msgs := make([]MailpitMessage, 0, len(ids))
	for _, id := range ids {
		m, err := s.message(id)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func (s *MailpitServer) message(id string) (MailpitMessage, error) {
	var m struct {
		ID          string
		From        mailpitAddress
		To          []mailpitAddress
		Subject     string
		Text        string
		Username    string
		Attachments []MailpitAttachment
	}
	if err := s.getJSON("/api/v1/message/"+url.PathEscape(id), nil, &m); err != nil {
		return MailpitMessage{}, fmt.Errorf("get Mailpit message %s: %w", id, err)
	}
	var headers map[string][]string
	if err := s.getJSON("/api/v1/message/"+url.PathEscape(id)+"/headers", nil, &headers); err != nil {
		return MailpitMessage{}, fmt.Errorf("get headers of Mailpit message %s: %w", id, err)
	}
	out := MailpitMessage{
		ID:          m.ID,
		From:        m.From.Address,
		Subject:     m.Subject,
		Text:        strings.ReplaceAll(m.Text, "\r\n", "\n"),
		Username:    m.Username,
		Headers:     make(map[string][]string, len(headers)),
		Attachments: m.Attachments,
	}
	for _, a := range m.To {
		out.To = append(out.To, a.Address)
	}
	for k, v := range headers {
		k = textproto.CanonicalMIMEHeaderKey(k)
		out.Headers[k] = append(out.Headers[k], v...)
	}
	return out, nil
}

// Attachment returns the content of the attachment part of message id.
func (s *MailpitServer) Attachment(t testing.TB, id, part string) []byte {
	t.Helper()
	u := s.apiURL + "/api/v1/message/" + url.PathEscape(id) + "/part/" + url.PathEscape(part)
	resp, err := s.client.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %s; want 200 OK", u, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", u, err)
	}
	return b
}

func (s *MailpitServer) getJSON(path string, q url.Values, v any) error {
	u := s.apiURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	resp, err := s.client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s = %s; want 200 OK", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode GET %s: %w", u, err)
	}
	return nil
}
