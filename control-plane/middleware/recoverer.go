package middleware

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/veil-platform/veil/internal/problem"
)

// Recoverer turns a panic in next into a 500 problem (type internal) and one
// error log with the request id and the stack; the caller sees no stack.
//
// http.ErrAbortHandler is panicked again: it is how a handler asks net/http
// to abort the response, and net/http expects to see it. When the response
// had already started, a problem can no longer be written, so Recoverer
// aborts the connection the same way: the client then sees a broken
// response instead of a truncated one that looks complete.
func Recoverer(logger *slog.Logger) func(http.Handler) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sw := &statusWriter{ResponseWriter: w}
			defer func() {
				p := recover()
				if p == nil {
					return
				}
				if err, ok := p.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(p)
				}
				logger.ErrorContext(r.Context(), "handler panicked",
					"request_id", RequestIDFrom(r.Context()), "method", r.Method, "path", r.URL.Path,
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if sw.wroteHeader {
					panic(http.ErrAbortHandler)
				}
				// Headers the handler set for the body it never sent would
				// misdescribe the problem.
				for _, h := range []string{"Content-Length", "Content-Encoding", "Content-Disposition", "Location", "ETag", "Last-Modified"} {
					sw.Header().Del(h)
				}
				writeProblem(sw, r, problem.New(http.StatusInternalServerError, "internal", "Internal Server Error",
					"the request failed; quote the request id when reporting it"))
			}()
			next.ServeHTTP(sw, r)
		})
	}
}
