package gatewayproc_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/gatewayproc"
)

func TestWaitReadyReportsAnExitedProcess(t *testing.T) {
	p, err := gatewayproc.Start(gatewayproc.Config{Binary: "/bin/sh", Args: []string{"-c", "echo no config; exit 3"}, DataDir: t.TempDir(),
		Ready: []string{"http://127.0.0.1:1/healthz"}})
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitReady(t.Context(), 30*time.Second, nil)
	if !errors.Is(err, gatewayproc.ErrExited) {
		t.Fatalf("WaitReady = %v; want ErrExited", err)
	}
	if got := p.Output(); got != "no config\n" {
		t.Errorf("Output() = %q; want %q", got, "no config\n")
	}
}

func TestWaitReadyThenStop(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	p, err := gatewayproc.Start(gatewayproc.Config{Binary: "/bin/sh", Args: []string{"-c", "exec sleep 60"}, DataDir: t.TempDir(),
		Ready: []string{srv.URL}, StopTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	checked := false
	if err := p.WaitReady(t.Context(), 30*time.Second, func() error { checked = true; return nil }); err != nil || !checked {
		t.Fatalf("WaitReady = %v, check called %v; want nil, true", err, checked)
	}
	// SIGTERM ends sleep: an exit by signal, which Stop reports.
	if err := p.Stop(); err == nil {
		t.Error("Stop() = nil; want the exit by SIGTERM")
	}
	if err2 := p.Stop(); err2 == nil {
		t.Error("second Stop() = nil; want the first one's error")
	}
}

func TestFreeLoopbackAddr(t *testing.T) {
	a, err := gatewayproc.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatalf("listen on FreeLoopbackAddr() %s: %v", a, err)
	}
	ln.Close()
}
