package middleware_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/internal/problem"
)

// logRecords returns a JSON logger and a function that decodes what it wrote.
func logRecords(t *testing.T) (*slog.Logger, func() []map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return logger, func() []map[string]any {
		var out []map[string]any
		dec := json.NewDecoder(bytes.NewReader(buf.Bytes()))
		for dec.More() {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("decode log: %v", err)
			}
			out = append(out, m)
		}
		return out
	}
}

func TestRecovererPanic(t *testing.T) {
	logger, records := logRecords(t)
	h := middleware.RequestID(middleware.Recoverer(logger)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1000")
		panic("boom: secret internals")
	})))
	req := httptest.NewRequest(http.MethodGet, "/apis", nil)
	req.Header.Set(middleware.HeaderRequestID, "req-1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)

	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d; want 500", rec.Code)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/problem+json" {
		t.Errorf("Content-Type = %q; want application/problem+json", got)
	}
	if got := rec.Header().Get("Content-Length"); got != "" {
		t.Errorf("Content-Length = %q; want the handler's value dropped", got)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body["type"] != problem.TypeBase+"internal" || body["request_id"] != "req-1" {
		t.Errorf("problem = %v; want type internal with request_id req-1", body)
	}
	if strings.Contains(rec.Body.String(), "boom") || strings.Contains(rec.Body.String(), "goroutine") {
		t.Errorf("problem body %s leaks the panic", rec.Body.String())
	}

	logs := records()
	if len(logs) != 1 {
		t.Fatalf("log records = %d; want 1: %v", len(logs), logs)
	}
	l := logs[0]
	if l["level"] != "ERROR" || l["request_id"] != "req-1" || l["panic"] != "boom: secret internals" {
		t.Errorf("log = %v; want an ERROR with request_id req-1 and the panic", l)
	}
	if stack, _ := l["stack"].(string); !strings.Contains(stack, "TestRecovererPanic") {
		t.Errorf("log stack = %q; want the panicking frames", stack)
	}
}

func TestRecovererAbortHandler(t *testing.T) {
	logger, records := logRecords(t)
	h := middleware.Recoverer(logger)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	got := catchPanic(func() { h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil)) })
	if got != http.ErrAbortHandler {
		t.Fatalf("panic = %v; want http.ErrAbortHandler", got)
	}
	if logs := records(); len(logs) != 0 {
		t.Fatalf("log records = %v; want none for an abort", logs)
	}
}

func TestRecovererAfterResponseStarted(t *testing.T) {
	logger, records := logRecords(t)
	h := middleware.Recoverer(logger)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("partial"))
		panic("late")
	}))
	rec := httptest.NewRecorder()
	got := catchPanic(func() { h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil)) })
	if got != http.ErrAbortHandler {
		t.Fatalf("panic = %v; want http.ErrAbortHandler so the connection is cut", got)
	}
	if rec.Body.String() != "partial" {
		t.Fatalf("body = %q; want only what the handler wrote", rec.Body.String())
	}
	if logs := records(); len(logs) != 1 {
		t.Fatalf("log records = %d; want 1", len(logs))
	}
}

func catchPanic(f func()) (p any) {
	defer func() { p = recover() }()
	f()
	return nil
}
