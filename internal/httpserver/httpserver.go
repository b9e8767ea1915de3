// Package httpserver runs one Veil HTTP service: its routes plus /healthz and
// /readyz, and /metrics on a listener of its own, with graceful shutdown
// when the context ends.
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/internal/problem"
)

// ReadyFunc reports whether the service can do its work now, e.g. whether
// its broker answers. A nil error means ready.
type ReadyFunc func(ctx context.Context) error

// Config describes one HTTP service.
type Config struct {
	Name    string       // used in logs and metrics, e.g. "ingest"
	Addr    string       // listen address, e.g. ":8081"
	Handler http.Handler // the service's own routes, mounted at /
	Ready   ReadyFunc    // nil means always ready
	Logger  *slog.Logger
	Metrics *metrics.Set // served at /metrics with the process metrics
	// MetricsAddr is a listener of its own for /metrics, kept off the
	// public port, e.g. "127.0.0.1:9180". Empty: no such listener.
	MetricsAddr string
	// MetricsOnAddr serves /metrics on the main listener instead, for a
	// service whose only port is internal (the processor's).
	MetricsOnAddr bool
	// ShutdownTimeout bounds the graceful shutdown. Default 15s.
	ShutdownTimeout time.Duration
}

// Server is a listening service.
type Server struct {
	cfg       Config
	ln        net.Listener
	srv       *http.Server
	metricsLn net.Listener // nil: no listener of its own
	metrics   *http.Server
}

// Listen binds the address so that callers know the port before Serve runs.
func Listen(cfg Config) (*Server, error) {
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 15 * time.Second
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s on %s: %w", cfg.Name, cfg.Addr, err)
	}
	serveMetrics := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if cfg.Metrics != nil {
			cfg.Metrics.WritePrometheus(w)
		}
		metrics.WriteProcessMetrics(w)
	}
	notFound := func(w http.ResponseWriter, req *http.Request) {
		problem.Write(w, problem.New(http.StatusNotFound, "not-found", "Not found", "no route for "+req.URL.Path))
	}
	s := &Server{cfg: cfg, ln: ln}
	if cfg.MetricsAddr != "" && cfg.MetricsOnAddr {
		ln.Close()
		return nil, fmt.Errorf("listen %s: metrics on a listener of their own or on the main one, not both", cfg.Name)
	}
	if cfg.MetricsAddr != "" {
		s.metricsLn, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen %s metrics on %s: %w", cfg.Name, cfg.MetricsAddr, err)
		}
		mr := chi.NewRouter()
		mr.Get("/metrics", serveMetrics)
		mr.NotFound(notFound)
		mr.MethodNotAllowed(MethodNotAllowed(mr))
		s.metrics = &http.Server{
			Handler:           mr,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		}
	}
	r := chi.NewRouter()
	// The probes answer every method themselves: another method gets 405
	// with its Allow header here, never from the handler mounted below.
	r.HandleFunc("/healthz", probe(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	}))
	r.HandleFunc("/readyz", probe(func(w http.ResponseWriter, req *http.Request) {
		if cfg.Ready != nil {
			ctx, cancel := context.WithTimeout(req.Context(), 3*time.Second)
			defer cancel()
			if err := cfg.Ready(ctx); err != nil {
				problem.Write(w, problem.New(http.StatusServiceUnavailable, "not-ready", "Not ready", err.Error()))
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ready\n"))
	}))
	if cfg.MetricsOnAddr {
		r.Get("/metrics", serveMetrics)
	}
	r.NotFound(notFound)
	r.MethodNotAllowed(MethodNotAllowed(r))
	if cfg.Handler != nil {
		r.Mount("/", cfg.Handler)
	}
	s.srv = &http.Server{
		Handler:           r,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// MetricsAddr is the bound address of the metrics listener: Addr when
// /metrics is served there, nil when it is not served.
func (s *Server) MetricsAddr() net.Addr {
	switch {
	case s.metricsLn != nil:
		return s.metricsLn.Addr()
	case s.cfg.MetricsOnAddr:
		return s.ln.Addr()
	default:
		return nil
	}
}

// Serve answers requests until ctx ends, then shuts down gracefully:
// in-flight requests finish (up to ShutdownTimeout) before Serve returns.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	merrc := make(chan error, 1)
	if s.metrics != nil {
		go func() { merrc <- s.metrics.Serve(s.metricsLn) }()
	}
	args := []any{"service", s.cfg.Name, "addr", s.ln.Addr().String()}
	if a := s.MetricsAddr(); a != nil {
		args = append(args, "metrics_addr", a.String())
	}
	s.cfg.Logger.InfoContext(ctx, "service listening", args...)
	select {
	case err := <-errc:
		if s.metrics != nil {
			_ = s.metrics.Close()
		}
		return fmt.Errorf("serve %s: %w", s.cfg.Name, err)
	case err := <-merrc:
		_ = s.srv.Close()
		return fmt.Errorf("serve %s metrics: %w", s.cfg.Name, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if s.metrics != nil {
		// Nothing waits on a scrape: close at once.
		_ = s.metrics.Close()
	}
	if err := s.srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down %s: %w", s.cfg.Name, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", s.cfg.Name, err)
	}
	s.cfg.Logger.InfoContext(ctx, "service stopped", "service", s.cfg.Name)
	return nil
}

// probe serves a health probe on GET and HEAD, and answers any other
// method 405 with Allow.
func probe(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			problem.Write(w, problem.New(http.StatusMethodNotAllowed, "method-not-allowed", "Method Not Allowed",
				r.Method+" is not allowed on "+r.URL.Path))
			return
		}
		h(w, r)
	}
}
