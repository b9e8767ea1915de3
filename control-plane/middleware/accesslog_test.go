package middleware_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/control-plane/middleware"
)

func metricsText(set *metrics.Set) string {
	var b bytes.Buffer
	set.WritePrometheus(&b)
	return b.String()
}

func TestAccessLogRoutePattern(t *testing.T) {
	proxies, err := middleware.ParseTrustedProxies([]string{"10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	logger, records := logRecords(t)
	set := metrics.NewSet()
	api := chi.NewRouter()
	api.Use(middleware.RequestID, middleware.AccessLog(logger, set, middleware.WithTrustedProxies(proxies)), middleware.Recoverer(logger))
	api.Get("/apis/{id}", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("hello")) })
	api.Post("/apis/{id}/versions", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusCreated) })
	api.Get("/panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	// Mounted the way service.Listen mounts the control plane.
	outer := chi.NewRouter()
	outer.Mount("/", api)

	tests := []struct {
		method, path string
		wantRoute    string
		wantStatus   int
		unmounted    bool // the outer router refuses unknown methods itself
	}{
		{http.MethodGet, "/apis/42", "/apis/{id}", 200, false},
		{http.MethodGet, "/apis/43", "/apis/{id}", 200, false},
		{http.MethodPost, "/apis/42/versions", "/apis/{id}/versions", 201, false},
		{http.MethodGet, "/no/such/path", "unmatched", 404, false},
		{http.MethodDelete, "/apis/42", "unmatched", 405, false},
		{"BREW", "/apis/42", "unmatched", 405, true},
		{http.MethodGet, "/panic", "/panic", 500, false},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.path, nil)
		req.RemoteAddr = "10.1.2.3:5555"
		req.Header.Set("X-Forwarded-For", "198.51.100.9")
		rec := httptest.NewRecorder()
		if tt.unmounted {
			api.ServeHTTP(rec, req)
		} else {
			outer.ServeHTTP(rec, req)
		}
		if rec.Code != tt.wantStatus {
			t.Errorf("%s %s: status = %d; want %d", tt.method, tt.path, rec.Code, tt.wantStatus)
		}
	}

	text := metricsText(set)
	for _, want := range []string{
		`veil_controlplane_http_requests_total{method="GET",route="/apis/{id}",status="200"} 2`,
		`veil_controlplane_http_requests_total{method="POST",route="/apis/{id}/versions",status="201"} 1`,
		`veil_controlplane_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`veil_controlplane_http_requests_total{method="DELETE",route="unmatched",status="405"} 1`,
		`veil_controlplane_http_requests_total{method="OTHER",route="unmatched",status="405"} 1`,
		`veil_controlplane_http_requests_total{method="GET",route="/panic",status="500"} 1`,
		`veil_controlplane_http_request_duration_seconds_count{route="/apis/{id}"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s; got:\n%s", want, text)
		}
	}
	for _, raw := range []string{"/apis/42", "/no/such/path", "BREW"} {
		if strings.Contains(text, `"`+raw+`"`) {
			t.Errorf("metrics carry the raw value %q; want bounded labels:\n%s", raw, text)
		}
	}

	var access []map[string]any
	for _, r := range records() {
		if r["msg"] == "http request" {
			access = append(access, r)
		}
	}
	if len(access) != len(tests) {
		t.Fatalf("access log lines = %d; want %d", len(access), len(tests))
	}
	for i, tt := range tests {
		if access[i]["route"] != tt.wantRoute || access[i]["status"] != float64(tt.wantStatus) {
			t.Errorf("%s %s: access log route, status = %v, %v; want %s, %d", tt.method, tt.path, access[i]["route"], access[i]["status"], tt.wantRoute, tt.wantStatus)
		}
	}
	first := access[0]
	want := map[string]any{"method": "GET", "route": "/apis/{id}", "status": float64(200), "bytes": float64(5), "remote_ip": "198.51.100.9"}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("access log %s = %v; want %v", k, first[k], v)
		}
	}
	if id, _ := first["request_id"].(string); len(id) != 32 {
		t.Errorf("access log request_id = %q; want the generated id", id)
	}
	if _, ok := first["duration_ms"].(float64); !ok {
		t.Errorf("access log duration_ms = %v; want a number", first["duration_ms"])
	}
}

func TestAccessLogRemoteIPWithoutProxies(t *testing.T) {
	logger, records := logRecords(t)
	r := chi.NewRouter()
	r.Use(middleware.AccessLog(logger, metrics.NewSet()))
	r.Get("/", func(http.ResponseWriter, *http.Request) {})
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	req.Header.Set("X-Forwarded-For", "203.0.113.5")
	r.ServeHTTP(httptest.NewRecorder(), req)
	logs := records()
	if len(logs) != 1 || logs[0]["remote_ip"] != "192.0.2.1" {
		t.Fatalf("access log = %v; want remote_ip 192.0.2.1 (the header is not trusted)", logs)
	}
}

// TestAccessLogInsideRecoverer uses the control plane's order (Recoverer
// outside AccessLog): a panic still counts as a 500.
func TestAccessLogInsideRecoverer(t *testing.T) {
	logger, records := logRecords(t)
	set := metrics.NewSet()
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.Recoverer(logger), middleware.AccessLog(logger, set))
	r.Get("/apis/{id}", func(http.ResponseWriter, *http.Request) { panic("boom") })
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/apis/7", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d; want 500", rec.Code)
	}
	want := `veil_controlplane_http_requests_total{method="GET",route="/apis/{id}",status="500"} 1`
	if text := metricsText(set); !strings.Contains(text, want) {
		t.Errorf("metrics lack %s:\n%s", want, text)
	}
	var msgs []any
	for _, l := range records() {
		msgs = append(msgs, l["msg"])
	}
	if len(msgs) != 2 {
		t.Errorf("log messages = %v; want the access line and the panic", msgs)
	}
}
