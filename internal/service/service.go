// Package service runs one Veil HTTP service: its routes plus /metrics,
// /healthz and /readyz, with graceful shutdown when the context ends.
package service

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
	// ShutdownTimeout bounds the graceful shutdown. Default 15s.
	ShutdownTimeout time.Duration
}

// Server is a listening service.
type Server struct {
	cfg Config
	ln  net.Listener
	srv *http.Server
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
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	r.Get("/readyz", func(w http.ResponseWriter, req *http.Request) {
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
	})
	r.Get("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if cfg.Metrics != nil {
			cfg.Metrics.WritePrometheus(w)
		}
		metrics.WriteProcessMetrics(w)
	})
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		problem.Write(w, problem.New(http.StatusNotFound, "not-found", "Not found", "no route for "+req.URL.Path))
	})
	r.MethodNotAllowed(MethodNotAllowed(r))
	if cfg.Handler != nil {
		r.Mount("/", cfg.Handler)
	}
	srv := &http.Server{
		Handler:           r,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return &Server{cfg: cfg, ln: ln, srv: srv}, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until ctx ends, then shuts down gracefully:
// in-flight requests finish (up to ShutdownTimeout) before Serve returns.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	s.cfg.Logger.InfoContext(ctx, "service listening", "service", s.cfg.Name, "addr", s.ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", s.cfg.Name, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down %s: %w", s.cfg.Name, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", s.cfg.Name, err)
	}
	s.cfg.Logger.InfoContext(ctx, "service stopped", "service", s.cfg.Name)
	return nil
}
