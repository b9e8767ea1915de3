package httpserver_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/veil-platform/veil/internal/httpserver"
	"github.com/veil-platform/veil/internal/testenv"
)

// serve starts a service with cfg until the test ends.
func serve(t *testing.T, cfg httpserver.Config) *httpserver.Server {
	t.Helper()
	cfg.Name, cfg.Logger = "test", slog.New(slog.DiscardHandler)
	set := metrics.NewSet()
	set.NewCounter("veil_test_total").Inc()
	cfg.Metrics = set
	srv, err := httpserver.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not return within 10s of its context ending")
		}
	})
	return srv
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsOnTheirOwnListener: with a metrics address, /metrics is
// served there only; the main port keeps /healthz and /readyz and answers
// 404 for /metrics.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	srv := serve(t, httpserver.Config{Addr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"})
	main, m := "http://"+srv.Addr().String(), "http://"+srv.MetricsAddr().String()
	if main == m {
		t.Fatalf("metrics share the main listener %s", main)
	}
	if code, _ := get(t, main+"/metrics"); code != http.StatusNotFound {
		t.Errorf("GET /metrics on the main port = %d; want 404", code)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, main+p); code != http.StatusOK {
			t.Errorf("GET %s on the main port = %d; want 200", p, code)
		}
	}
	code, body := get(t, m+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "veil_test_total 1") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("GET /metrics on the metrics port = %d %.200q; want 200 with the set and the process metrics", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz", "/"} {
		if code, _ := get(t, m+p); code != http.StatusNotFound {
			t.Errorf("GET %s on the metrics port = %d; want 404", p, code)
		}
	}
}

// TestMetricsOnTheMainListener: MetricsOnAddr serves /metrics on the main
// listener (the processor, whose only port is internal); without it or a
// metrics address, /metrics is served nowhere.
func TestMetricsOnTheMainListener(t *testing.T) {
	addr := testenv.FreeLoopbackAddr(t)
	srv := serve(t, httpserver.Config{Addr: addr, MetricsOnAddr: true})
	if got := srv.MetricsAddr().String(); got != srv.Addr().String() {
		t.Errorf("MetricsAddr() = %s; want the main address %s", got, srv.Addr())
	}
	if code, body := get(t, "http://"+addr+"/metrics"); code != http.StatusOK || !strings.Contains(body, "veil_test_total 1") {
		t.Errorf("GET /metrics = %d; want 200", code)
	}

	off := serve(t, httpserver.Config{Addr: "127.0.0.1:0"})
	if off.MetricsAddr() != nil {
		t.Errorf("MetricsAddr() without one = %v; want nil", off.MetricsAddr())
	}
	if code, _ := get(t, "http://"+off.Addr().String()+"/metrics"); code != http.StatusNotFound {
		t.Errorf("GET /metrics without a metrics address = %d; want 404", code)
	}
}

// TestMetricsAddrTaken: a metrics address that cannot be bound fails
// Listen, and the main address is released.
func TestMetricsAddrTaken(t *testing.T) {
	busy := serve(t, httpserver.Config{Addr: "127.0.0.1:0"})
	addr := testenv.FreeLoopbackAddr(t)
	if _, err := httpserver.Listen(httpserver.Config{Name: "test", Addr: addr, MetricsAddr: busy.Addr().String(), Logger: slog.New(slog.DiscardHandler)}); err == nil {
		t.Fatal("Listen with a taken metrics address = nil error; want one")
	}
	// The main address is free again.
	serve(t, httpserver.Config{Addr: addr})
}

// TestProbesAnswerOtherMethods: another method on /healthz or /readyz gets
// 405 with Allow from the probe itself, not whatever the mounted handler
// answers for paths it does not have.
func TestProbesAnswerOtherMethods(t *testing.T) {
	mounted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "the mounted handler", http.StatusTeapot)
	})
	srv := serve(t, httpserver.Config{Addr: "127.0.0.1:0", Handler: mounted})
	for _, path := range []string{"/healthz", "/readyz"} {
		for _, method := range []string{http.MethodTrace, http.MethodPost, http.MethodDelete} {
			req, _ := http.NewRequest(method, "http://"+srv.Addr().String()+path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: %d, Allow %q; want 405 with Allow GET, HEAD", method, path, resp.StatusCode, resp.Header.Get("Allow"))
			}
		}
		req, _ := http.NewRequest(http.MethodHead, "http://"+srv.Addr().String()+path, nil)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("HEAD %s: %v %v; want 200", path, resp, err)
		} else {
			resp.Body.Close()
		}
	}
}
