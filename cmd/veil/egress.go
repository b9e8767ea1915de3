package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/veil-platform/veil/ingest/caddyveil"
	"github.com/veil-platform/veil/internal/egress"
)

// devUpstreamAllow is what veil dev allows when VEIL_UPSTREAM_ALLOW_CIDRS
// is empty: loopback, where its demo upstream listens.
const devUpstreamAllow = "127.0.0.0/8,::1/128"

// egressFlags configure the egress policy of provider upstreams, shared by
// the control plane (saving, registering, reconciling, health checks) and
// the gateway (every proxied connection).
type egressFlags struct {
	allow    string
	resolver string
}

func (e *egressFlags) register(f *flags) {
	f.String(&e.allow, "upstream-allow-cidrs", "VEIL_UPSTREAM_ALLOW_CIDRS", "",
		"comma-separated CIDRs (or address, or address:port) upstreams may use although not public, e.g. 10.20.0.0/16; Veil's own services stay refused")
	f.String(&e.resolver, "upstream-resolver", "VEIL_UPSTREAM_RESOLVER", "",
		"DNS server (host:port) that resolves upstream names (empty: the system's)")
}

// policy builds the policy; deny are the addresses this process is
// configured with (listen addresses, stores, peers), as host:port or URLs,
// which no upstream may reach whatever the allow list says.
func (e egressFlags) policy(ctx context.Context, deny ...string) (*egress.Policy, error) {
	cfg := egress.Config{Allow: egress.ParseList(e.allow)}
	if e.resolver != "" {
		if _, _, err := net.SplitHostPort(e.resolver); err != nil {
			return nil, fmt.Errorf("--upstream-resolver %q: want host:port", e.resolver)
		}
		cfg.Resolver = resolverAt(e.resolver)
	}
	cfg.Deny = denyList(deny)
	p, err := egress.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("upstream egress policy (VEIL_UPSTREAM_ALLOW_CIDRS): %w", err)
	}
	return p, nil
}

// denyList turns configured addresses (some of them comma-separated
// lists, such as Kafka's brokers) into host:port entries.
func denyList(deny []string) []string {
	var out []string
	for _, list := range deny {
		for _, d := range strings.Split(list, ",") {
			if hp := denyEndpoint(d); hp != "" {
				out = append(out, hp)
			}
		}
	}
	return out
}

// resolverAt is a resolver asking only the DNS server at addr.
func resolverAt(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

// denyEndpoint turns a configured address (host:port, :port, or a URL
// with a host) into host:port; "" for what names no TCP endpoint (a unix
// socket, an empty setting).
func denyEndpoint(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return ""
		}
		host, port, err := egress.HostPort(u)
		if err != nil {
			return ""
		}
		if u.Port() == "" {
			switch u.Scheme {
			case "http", "https":
			case "postgres", "postgresql":
				port = 5432
			default:
				return ""
			}
		}
		return net.JoinHostPort(host, fmt.Sprint(port))
	}
	// Port 0 is a listener's "any free port": nothing to name.
	if _, port, err := net.SplitHostPort(s); err != nil || port == "0" {
		return ""
	}
	return s
}

// app is the veil app's egress config, checked by building the policy
// once here so that a bad allow list stops the gateway at start rather
// than at its first route.
func (e egressFlags) app(ctx context.Context, deny ...string) (*caddyveil.EgressConfig, error) {
	if _, err := e.policy(ctx, deny...); err != nil {
		return nil, err
	}
	return &caddyveil.EgressConfig{Allow: egress.ParseList(e.allow), Deny: denyList(deny), Resolver: e.resolver}, nil
}
