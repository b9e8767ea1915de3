package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/veil-platform/veil/internal/egress"
	"github.com/veil-platform/veil/internal/validation"
)

// upstreamRefusal is the detail of a refused upstream_url. It names the
// kind of address, never what a name resolved to beyond that: the host is
// the provider's own, and the platform's endpoints are not described.
func upstreamRefusal(err error) string {
	var r *egress.RefusedError
	if errors.As(err, &r) {
		switch r.Kind {
		case egress.KindHost:
			return "host must be a DNS name or an IP address in its usual form, and not a localhost name"
		case egress.KindVeil:
			return "host is reserved for the platform's own services"
		}
		return fmt.Sprintf("host must resolve to public addresses only (it resolves to a %s address); ask an operator to allow a private network", r.Kind)
	}
	return "host does not resolve"
}

// checkUpstream refuses, as a validation error of upstream_url, an
// upstream the egress policy refuses: one that is or resolves to a
// loopback, private or other special address, or to the platform's own
// services. A URL that is not even well formed is left to Validate.
func (s *Service) checkUpstream(ctx context.Context, raw string) error {
	var v validation.Error
	if validateUpstream(&v, "upstream_url", raw); v.Err() != nil {
		return nil
	}
	err := s.cfg.Egress.CheckURL(ctx, raw)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, egress.ErrRefused), errors.Is(err, egress.ErrUnresolvable):
		v.Add("upstream_url", "%s", upstreamRefusal(err))
		return &v
	}
	return fmt.Errorf("check upstream: %w", err)
}

// upstreamClient is the client of the upstream health checks: it dials
// only what the egress policy allows (the checked address, never a second
// resolution) and follows no redirect, so a 3xx toward an internal
// address is an unhealthy answer, not a request to that address. It goes
// through no proxy: the proxy's address would be the one checked.
func upstreamClient(p *egress.Policy) *http.Client {
	d := &egress.Dialer{Policy: p}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        16,
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// errUpstreamUnhealthy is a health check answer other than 2xx. Its text
// is what state_reason shows: the status class only, since the status of
// whatever answered is not the provider's business beyond that.
var errUpstreamUnhealthy = errors.New("upstream health check did not answer 2xx")

// errUpstreamNoAnswer is a health check that got no answer; the dial
// error, which may name addresses, goes to the log.
var errUpstreamNoAnswer = errors.New("upstream health check: no answer")

// checkHealth GETs the upstream's health path through the egress policy.
func (s *Service) checkHealth(ctx context.Context, a API) error {
	u := strings.TrimSuffix(a.UpstreamURL, "/") + a.HealthCheckPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("upstream health check: %w", err)
	}
	req.Header.Set("User-Agent", "Veil-Registration/1")
	a.sign(req, s.now())
	resp, err := s.upstream.Do(req)
	if err != nil {
		if errors.Is(err, egress.ErrRefused) {
			return refusal{err}
		}
		s.log.WarnContext(ctx, "upstream health check failed", "api_id", a.ID, "error", err)
		return errUpstreamNoAnswer
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		s.log.WarnContext(ctx, "upstream health check answered", "api_id", a.ID, "status", resp.StatusCode)
		return fmt.Errorf("%w (%dxx)", errUpstreamUnhealthy, resp.StatusCode/100)
	}
	return nil
}

// refusal is an egress refusal whose text leaves out what the host
// resolved to; errors.Is still finds egress.ErrRefused in it.
type refusal struct{ err error }

func (r refusal) Error() string { return refusedReason(r.err) }
func (r refusal) Unwrap() error { return r.err }

// refusedReason is the state_reason of an API whose upstream the egress
// policy refuses.
func refusedReason(err error) string {
	return "upstream_url refused by the egress policy: " + upstreamRefusal(err)
}
