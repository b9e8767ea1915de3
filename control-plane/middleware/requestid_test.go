package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/veil-platform/veil/control-plane/middleware"
)

func TestRequestID(t *testing.T) {
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	tests := []struct {
		name     string
		incoming string
		keep     bool
	}{
		{"absent", "", false},
		{"accepted", "portal-7f3a.b_9", true},
		{"longest accepted", strings.Repeat("a", 128), true},
		{"too long", strings.Repeat("a", 129), false},
		{"space", "abc def", false},
		{"header injection", "abc\r\nX-Evil: 1", false},
		{"non-ascii", "ré", false},
		{"slash", "a/b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var inContext string
			h := middleware.RequestID(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				inContext = middleware.RequestIDFrom(r.Context())
			}))
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.incoming != "" {
				req.Header[middleware.HeaderRequestID] = []string{tt.incoming}
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			got := rec.Header().Get(middleware.HeaderRequestID)
			if got != inContext {
				t.Errorf("response header %q != context %q", got, inContext)
			}
			if tt.keep {
				if got != tt.incoming {
					t.Errorf("RequestID(%q) = %q; want it kept", tt.incoming, got)
				}
			} else if !generated.MatchString(got) {
				t.Errorf("RequestID(%q) = %q; want a fresh 32-hex-digit id", tt.incoming, got)
			}
		})
	}
}

func TestRequestIDUnique(t *testing.T) {
	h := middleware.RequestID(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	seen := map[string]bool{}
	for range 100 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		id := rec.Header().Get(middleware.HeaderRequestID)
		if seen[id] {
			t.Fatalf("RequestID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestRequestIDFromEmptyContext(t *testing.T) {
	if got := middleware.RequestIDFrom(t.Context()); got != "" {
		t.Fatalf("RequestIDFrom(empty) = %q; want \"\"", got)
	}
}
