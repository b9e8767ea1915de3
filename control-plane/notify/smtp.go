package notify

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	gomail "github.com/wneessen/go-mail"
)

// TLS modes of SMTPConfig.TLS.
const (
	// TLSNone never encrypts. Only for a server on a trusted network, such
	// as the local Mailpit.
	TLSNone = "none"
	// TLSOpportunistic (the default) upgrades with STARTTLS when the server
	// offers it and sends in the clear when it does not. The server's
	// certificate is verified whenever TLS is used.
	TLSOpportunistic = "opportunistic"
	// TLSMandatory requires STARTTLS: a server that does not offer it gets
	// no message. Use it for relays across networks you do not control.
	TLSMandatory = "mandatory"
	// TLSImplicit speaks TLS from the first byte ("SMTPS", usually port 465).
	TLSImplicit = "tls"
)

// SMTPConfig configures an SMTP Mailer.
type SMTPConfig struct {
	// Addr is the server's host:port, e.g. "smtp.example.com:587" or
	// "127.0.0.1:1025". Required.
	Addr string
	// From is the sender, e.g. "Veil <noreply@veil.example>". Required.
	From string
	// Username and Password authenticate to the server when Username is
	// set (SCRAM, PLAIN or LOGIN, whichever the server offers first in that
	// order). PLAIN and LOGIN credentials only travel over TLS or to a
	// loopback server; elsewhere sending fails rather than leak them.
	Username, Password string
	// TLS is TLSNone, TLSOpportunistic (default when empty), TLSMandatory
	// or TLSImplicit.
	TLS string
	// Timeout bounds the connection and each SMTP command. Default 10s.
	// A context deadline or cancellation ends a send sooner.
	Timeout time.Duration
	// Logger receives a debug line per message sent. Default: discards.
	Logger *slog.Logger
	// Metrics receives veil_notify_email_sent_total and
	// veil_notify_email_failed_total. Default: a private set.
	Metrics *metrics.Set
}

// SMTP sends each message over a connection of its own: notices are few,
// and a fresh connection never trips over one the server closed.
type SMTP struct {
	host    string
	port    int
	from    string
	opts    []gomail.Option
	tls     *tls.Config // non-nil for TLSImplicit
	timeout time.Duration
	log     *slog.Logger
	sent    *metrics.Counter
	failed  *metrics.Counter
}

// NewSMTP returns an SMTP Mailer. It checks the configuration only; it
// does not connect.
func NewSMTP(cfg SMTPConfig) (*SMTP, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("new smtp mailer: address %q: want host:port", cfg.Addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("new smtp mailer: address %q: bad port", cfg.Addr)
	}
	if cfg.From == "" {
		return nil, errors.New("new smtp mailer: from address is required")
	}
	from, err := parseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("new smtp mailer: from %q: %w", cfg.From, err)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("new smtp mailer: negative timeout %s", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	cfg.Metrics = cmp.Or(cfg.Metrics, metrics.NewSet())
	s := &SMTP{
		host:    host,
		port:    port,
		from:    from.String(),
		timeout: cfg.Timeout,
		log:     cfg.Logger,
		sent:    cfg.Metrics.GetOrCreateCounter("veil_notify_email_sent_total"),
		failed:  cfg.Metrics.GetOrCreateCounter("veil_notify_email_failed_total"),
	}
	tlsConfig := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	s.opts = []gomail.Option{gomail.WithPort(port), gomail.WithTimeout(cfg.Timeout), gomail.WithTLSConfig(tlsConfig)}
	switch cfg.TLS {
	case TLSNone:
		s.opts = append(s.opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case "", TLSOpportunistic:
		s.opts = append(s.opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	case TLSMandatory:
		s.opts = append(s.opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSImplicit:
		// Send dials TLS itself (go-mail does not wrap a custom dialer's
		// connection); WithSSL keeps it from trying STARTTLS inside.
		s.tls = tlsConfig
		s.opts = append(s.opts, gomail.WithSSL())
	default:
		return nil, fmt.Errorf("new smtp mailer: tls %q: want %s, %s, %s or %s",
			cfg.TLS, TLSNone, TLSOpportunistic, TLSMandatory, TLSImplicit)
	}
	if cfg.Username != "" {
		s.opts = append(s.opts,
			gomail.WithUsername(cfg.Username), gomail.WithPassword(cfg.Password),
			gomail.WithOpportunisticSMTPAuth(gomail.SMTPAuthSCRAMSHA256, gomail.SMTPAuthSCRAMSHA1,
				gomail.SMTPAuthPlain, gomail.SMTPAuthLogin))
	}
	return s, nil
}

// Send implements Mailer: it connects, sends m and disconnects.
func (s *SMTP) Send(ctx context.Context, m Message) error {
	if err := s.send(ctx, m); err != nil {
		s.failed.Inc()
		return err
	}
	s.sent.Inc()
	s.log.DebugContext(ctx, "email sent", "recipients", len(m.To), "subject", m.Subject,
		"message_id", m.header("Message-ID"))
	return nil
}

func (s *SMTP) send(ctx context.Context, m Message) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("send email: %w", err)
	}
	msg, err := s.build(m)
	if err != nil {
		return fmt.Errorf("send email: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("send email: %w", err)
	}
	// go-mail watches the context only while dialing, so the connection
	// is closed when the context ends, which stops the SMTP dialog too. It
	// is closed again after the send: go-mail leaves it open when the
	// dialog fails before a message (a refused STARTTLS or AUTH).
	var conn net.Conn
	var release func() bool
	defer func() {
		if conn != nil {
			release()
			conn.Close()
		}
	}()
	dial := func(dialCtx context.Context, network, addr string) (net.Conn, error) {
		c, err := s.dial(dialCtx, network, addr)
		if err != nil {
			return nil, err
		}
		conn = c
		release = context.AfterFunc(ctx, func() { c.Close() })
		return c, nil
	}
	client, err := gomail.NewClient(s.host, append(s.opts[:len(s.opts):len(s.opts)], gomail.WithDialContextFunc(dial))...)
	if err != nil {
		return fmt.Errorf("send email: smtp client: %w", err)
	}
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		// go-mail reads and writes without the context: a cancelled send
		// shows up as a closed connection, so say what really happened.
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("send email via %s: %w (%v)", net.JoinHostPort(s.host, strconv.Itoa(s.port)), ctxErr, err)
		}
		return fmt.Errorf("send email via %s: %w", net.JoinHostPort(s.host, strconv.Itoa(s.port)), err)
	}
	return nil
}

// build turns a valid Message into a go-mail message.
func (s *SMTP) build(m Message) (*gomail.Msg, error) {
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	if err := msg.From(s.from); err != nil {
		return nil, fmt.Errorf("from %q: %w", s.from, err)
	}
	if err := msg.To(m.To...); err != nil {
		return nil, fmt.Errorf("to %q: %w", m.To, err)
	}
	msg.Subject(m.Subject)
	for k, v := range m.Headers {
		if strings.EqualFold(k, "Message-ID") {
			msg.SetMessageIDWithValue(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(v), "<"), ">"))
			continue
		}
		msg.SetGenHeader(gomail.Header(textproto.CanonicalMIMEHeaderKey(k)), v)
	}
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	for _, a := range m.Attachments {
		msg.AttachReadSeeker(a.Name, bytes.NewReader(a.Data), gomail.WithFileContentType(gomail.ContentType(a.ContentType)))
	}
	return msg, nil
}

// header returns the value of a header named case-insensitively, or "".
func (m Message) header(name string) string {
	for k, v := range m.Headers {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// dial opens a connection to the server, in TLS from the start for
// TLSImplicit.
func (s *SMTP) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.tls != nil {
		return (&tls.Dialer{Config: s.tls}).DialContext(ctx, network, addr)
	}
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

var _ Mailer = (*SMTP)(nil)

// Refused reports whether err refuses a message for good, so retrying the
// same message cannot succeed: an invalid message, or the server's 5xx
// reply to a recipient or to the message itself. A 5xx to the greeting,
// to AUTH or to the sender is the sending side's configuration (a rotated
// password, a relay not set up yet) and is worth retrying once it is
// fixed, so it is not a refusal; nor is any 4xx or an unreachable server.
// A Mailer that reports a bare SMTP reply (*textproto.Error) is refused by
// a 5xx.
func Refused(err error) bool {
	if errors.Is(err, ErrInvalidMessage) {
		return true
	}
	var reply *textproto.Error
	if errors.As(err, &reply) {
		return reply.Code >= 500 && reply.Code < 600
	}
	var send *gomail.SendError
	if errors.As(err, &send) {
		switch send.Reason {
		case gomail.ErrSMTPRcptTo, gomail.ErrSMTPData, gomail.ErrSMTPDataClose:
			return send.ErrorCode() >= 500 && send.ErrorCode() < 600
		}
		return false
	}
	return false
}
