// Package middleware holds the control plane's HTTP middleware: request ids,
// panic recovery, access logs and metrics, client addresses behind proxies,
// CORS, rate limits and idempotent POSTs. Rate limits and idempotency keep
// their state in Redis so that every replica of the control plane agrees.
//
// Each middleware is a func(http.Handler) http.Handler, ready for chi's Use.
// What they need from the request that another package knows (the caller's
// subject, say) comes in as a plain function, so this package depends on no
// other part of the control plane. Errors are RFC 9457 problem details.
package middleware

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/veil-platform/veil/internal/problem"
)

// writeProblem answers with d, carrying the request id so that a caller can
// quote it.
func writeProblem(w http.ResponseWriter, r *http.Request, d problem.Details) {
	d.Instance = r.URL.Path
	if id := RequestIDFrom(r.Context()); id != "" {
		d = d.With("request_id", id)
	}
	problem.Write(w, d)
}

// retryAfterSeconds rounds d up to whole seconds, at least 1: Retry-After
// takes whole seconds, and 0 would invite an immediate retry that fails.
func retryAfterSeconds(d time.Duration) string {
	s := (d + time.Second - 1) / time.Second
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(int64(s), 10)
}

// statusWriter records the status and the body size of a response.
// It keeps http.ResponseController working through Unwrap, and forwards
// Flush for handlers that assert http.Flusher directly.
type statusWriter struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx responses (other than 101) precede the real one.
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack lets a protocol upgrade through; the response is then not HTTP any more.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusSwitchingProtocols, true
	}
	return conn, rw, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
