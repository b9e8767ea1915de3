package caddyveil

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/veil-platform/veil/internal/egress"
	"github.com/veil-platform/veil/internal/problem"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// EgressConfig is the egress policy of upstreams: which addresses the
// gateway may connect to on a provider's behalf.
type EgressConfig struct {
	// Allow lists CIDRs, addresses or address:port endpoints an upstream
	// may use although they are not public (VEIL_UPSTREAM_ALLOW_CIDRS).
	// Default: none, so loopback, private, link-local and the other
	// special ranges are refused.
	Allow []string `json:"allow,omitempty"`
	// Deny lists host:port endpoints refused whatever Allow says, on top
	// of Veil's default ports on loopback and this host's addresses:
	// `veil gateway` adds its own listen and admin addresses, Redis and
	// the Kafka brokers.
	Deny []string `json:"deny,omitempty"`
	// Resolver is the DNS server (host:port) that resolves upstream
	// names. Default: the system's resolver.
	Resolver string `json:"resolver,omitempty"`
}

// Transport is the http.reverse_proxy.transport.veil module: Caddy's HTTP
// transport whose connections go only where the egress policy allows. It
// resolves the upstream's name itself, refuses it if any address it
// resolves to is refused, and dials the checked address, so a name that
// resolves somewhere else after approval (DNS rebinding) reaches nothing
// internal; the request keeps the Host header its route sets. A refused
// connection answers 502 with a problem of type egress-refused and counts
// in veil_gateway_upstream_refused_total{reason}.
//
// The policy is Egress when set, else the veil app's, else the default
// (nothing non-public allowed).
type Transport struct {
	reverseproxy.HTTPTransport
	// Egress overrides the veil app's policy for this transport.
	Egress *EgressConfig `json:"egress,omitempty"`

	policy    *egress.Policy
	policyKey string
	log       func(ctx context.Context, kind, host string)
}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.reverse_proxy.transport.veil", New: func() caddy.Module { return new(Transport) }}
}

// policies holds the built policies, shared by every transport with the
// same settings: building one lists this host's addresses and resolves the
// denied names, which a reload with hundreds of routes should do once.
var policies = caddy.NewUsagePool()

type pooledPolicy struct{ *egress.Policy }

func (pooledPolicy) Destruct() error { return nil }

// Provision builds Caddy's transport, then replaces its dialer with the
// egress policy's.
func (t *Transport) Provision(ctx caddy.Context) error {
	if slices.Contains(t.Versions, "3") {
		// HTTP/3 dials over QUIC, outside the dialer below.
		return errors.New("veil transport: HTTP/3 to upstreams is not supported")
	}
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return fmt.Errorf("veil transport: %w", err)
	}
	cfg := EgressConfig{}
	switch {
	case t.Egress != nil:
		cfg = *t.Egress
	default:
		if app, err := ctx.AppIfConfigured("veil"); err == nil && app.(*App).Egress != nil {
			cfg = *app.(*App).Egress
		}
	}
	key, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	t.policyKey = string(key)
	val, _, err := policies.LoadOrNew(t.policyKey, func() (caddy.Destructor, error) {
		p, err := newPolicy(ctx, cfg)
		return pooledPolicy{p}, err
	})
	if err != nil {
		t.policyKey = ""
		return fmt.Errorf("veil transport: %w", err)
	}
	t.policy = val.(pooledPolicy).Policy
	d := &egress.Dialer{Policy: t.policy, Timeout: time.Duration(t.DialTimeout), KeepAlive: 30 * time.Second}
	t.Transport.DialContext = d.DialContext
	t.Transport.DialTLSContext = nil
	// A forward proxy would be the address dialled and checked instead
	// of the upstream's.
	t.Transport.Proxy = nil
	logger := ctx.Slogger()
	t.log = func(ctx context.Context, kind, host string) {
		logger.WarnContext(ctx, "upstream refused by the egress policy", "kind", kind, "upstream", host)
	}
	return nil
}

func newPolicy(ctx context.Context, cfg EgressConfig) (*egress.Policy, error) {
	ecfg := egress.Config{Allow: cfg.Allow, Deny: cfg.Deny}
	if cfg.Resolver != "" {
		if _, _, err := net.SplitHostPort(cfg.Resolver); err != nil {
			return nil, fmt.Errorf("egress resolver %q: want host:port", cfg.Resolver)
		}
		addr := cfg.Resolver
		ecfg.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	return egress.New(ctx, ecfg)
}

// Cleanup releases the shared policy and Caddy's transport.
func (t *Transport) Cleanup() error {
	if t.policyKey != "" {
		_, _ = policies.Delete(t.policyKey)
	}
	return t.HTTPTransport.Cleanup()
}

// RoundTrip sends the request through Caddy's transport; a connection the
// policy refused becomes the 502 problem, as a response rather than an
// error so that no retry or load-balancing tries it again.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.HTTPTransport.RoundTrip(req)
	if err == nil || !errors.Is(err, egress.ErrRefused) {
		return resp, err
	}
	kind := egress.Kind(err)
	upstreamRefused(kind).Inc()
	if t.log != nil {
		t.log(req.Context(), kind, req.URL.Host)
	}
	return refusedResponse(req), nil
}

// refusedBody is the problem of a refused upstream. It names no address:
// the caller is not told what the upstream resolved to.
var refusedBody = func() []byte {
	b, _ := json.Marshal(problem.New(http.StatusBadGateway, "egress-refused", "Upstream refused",
		"The gateway does not connect to this API's upstream: its address is not public or belongs to the platform."))
	return b
}()

func refusedResponse(req *http.Request) *http.Response {
	h := http.Header{}
	h.Set("Content-Type", "application/problem+json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(refusedBody)))
	return &http.Response{
		Status: "502 Bad Gateway", StatusCode: http.StatusBadGateway,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(refusedBody)), ContentLength: int64(len(refusedBody)),
		Request: req,
	}
}

// upstreamRefused counts refusals by kind, a small fixed set. It lives in
// the default metrics set, served with the others by veil_metrics: a
// transport is rebuilt at every config reload, the count must not be.
func upstreamRefused(kind string) *metrics.Counter {
	return metrics.GetOrCreateCounter(`veil_gateway_upstream_refused_total{reason="` + kind + `"}`)
}

var (
	_ caddy.Provisioner                      = (*Transport)(nil)
	_ caddy.CleanerUpper                     = (*Transport)(nil)
	_ http.RoundTripper                      = (*Transport)(nil)
	_ reverseproxy.TLSTransport              = (*Transport)(nil)
	_ reverseproxy.H2CTransport              = (*Transport)(nil)
	_ reverseproxy.RequestHeaderOpsTransport = (*Transport)(nil)
)
