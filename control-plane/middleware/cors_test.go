package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/veil-platform/veil/control-plane/middleware"
)

func TestCORS(t *testing.T) {
	const portal = "https://portal.example.com"
	var reached int
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { reached++; w.WriteHeader(http.StatusNoContent) })
	on := middleware.CORS(middleware.CORSConfig{AllowedOrigins: []string{portal}, AllowCredentials: true, MaxAge: 600})(next)
	off := middleware.CORS(middleware.CORSConfig{})(next)

	preflight := func(origin, method, headers string) *http.Request {
		r := httptest.NewRequest(http.MethodOptions, "/apis", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", method)
		if headers != "" {
			r.Header.Set("Access-Control-Request-Headers", headers)
		}
		return r
	}
	tests := []struct {
		name        string
		h           http.Handler
		req         *http.Request
		wantOrigin  string
		wantHeaders map[string]string
	}{
		{
			name: "preflight allowed", h: on, req: preflight(portal, "PATCH", "authorization,idempotency-key,content-type"),
			wantOrigin: portal,
			wantHeaders: map[string]string{
				"Access-Control-Allow-Methods":     "PATCH",
				"Access-Control-Allow-Credentials": "true",
				"Access-Control-Max-Age":           "600",
			},
		},
		{name: "preflight refused origin", h: on, req: preflight("https://evil.example", "POST", "authorization")},
		{name: "preflight refused method", h: on, req: preflight(portal, "CONNECT", "")},
		{name: "preflight refused header", h: on, req: preflight(portal, "POST", "x-secret")},
		{name: "cors off", h: off, req: preflight(portal, "POST", "authorization")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tt.h.ServeHTTP(rec, tt.req)
			if got := rec.Header().Get("Access-Control-Allow-Origin"); got != tt.wantOrigin {
				t.Errorf("Access-Control-Allow-Origin = %q; want %q", got, tt.wantOrigin)
			}
			for k, v := range tt.wantHeaders {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q; want %q", k, got, v)
				}
			}
			if tt.wantOrigin == "" {
				for k := range rec.Header() {
					if strings.HasPrefix(k, "Access-Control-") {
						t.Errorf("refused request got %s: %q", k, rec.Header().Get(k))
					}
				}
			}
		})
	}

	t.Run("actual request exposes headers", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPost, "/apis", nil)
		r.Header.Set("Origin", portal)
		rec := httptest.NewRecorder()
		before := reached
		on.ServeHTTP(rec, r)
		if reached != before+1 {
			t.Fatalf("handler not reached by the actual request")
		}
		if got := rec.Header().Get("Access-Control-Allow-Origin"); got != portal {
			t.Errorf("Access-Control-Allow-Origin = %q; want %q", got, portal)
		}
		exposed := rec.Header().Get("Access-Control-Expose-Headers")
		for _, h := range []string{"X-Request-Id", "Retry-After", "Ratelimit-Limit", "Ratelimit-Remaining", "Ratelimit-Reset", "Idempotent-Replayed"} {
			if !strings.Contains(exposed, h) {
				t.Errorf("Access-Control-Expose-Headers = %q; want it to hold %s", exposed, h)
			}
		}
	})

	t.Run("wildcard drops credentials", func(t *testing.T) {
		h := middleware.CORS(middleware.CORSConfig{AllowedOrigins: []string{"*"}, AllowCredentials: true})(next)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, preflight("https://any.example", "GET", ""))
		if got := rec.Header().Get("Access-Control-Allow-Credentials"); got != "" {
			t.Errorf("Access-Control-Allow-Credentials = %q; want none with *", got)
		}
	})
}
