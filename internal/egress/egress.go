// Package egress is the one rule deciding where Veil connects on a
// provider's or customer's behalf: API upstreams (the gateway's proxy and
// the control plane's health checks) and webhook endpoints. Such addresses
// come from strangers, so a connection to loopback, private, link-local and
// other special-purpose ranges is refused unless an operator allows a CIDR,
// and a connection to Veil's own services and stores is refused always.
//
// A name is checked by what it resolves to, and every place that connects
// resolves it itself, checks every answer and dials the checked address,
// so a name that resolves elsewhere after it was saved (DNS rebinding)
// gains nothing.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors.
var (
	// ErrRefused: the address may not be connected to. The error is a
	// *RefusedError saying why.
	ErrRefused = errors.New("egress refused")
	// ErrUnresolvable: the name did not resolve (no address, or the
	// resolver failed). It may be temporary.
	ErrUnresolvable = errors.New("host does not resolve")
)

// Kinds of refusal besides the address kinds of Classify.
const (
	// KindVeil is an address of Veil's own services and stores.
	KindVeil = "veil-service"
	// KindHost is a host that is not a plain DNS name or IP literal:
	// numeric forms such as 2130706433 or 0x7f.1, the localhost names,
	// odd characters.
	KindHost = "invalid-host"
)

// RefusedError says which address was refused and why.
type RefusedError struct {
	Host string         // the host as given (name or literal)
	Addr netip.AddrPort // the refused address; zero when the host itself is refused
	Kind string         // a Kind* constant
}

func (e *RefusedError) Error() string {
	if e.Addr.IsValid() {
		if e.Host != "" && e.Host != e.Addr.Addr().String() {
			return fmt.Sprintf("%v: %s resolves to %s, a %s address", ErrRefused, e.Host, e.Addr, e.Kind)
		}
		return fmt.Sprintf("%v: %s is a %s address", ErrRefused, e.Addr, e.Kind)
	}
	return fmt.Sprintf("%v: host %q (%s)", ErrRefused, e.Host, e.Kind)
}

// Unwrap makes errors.Is(err, ErrRefused) hold.
func (e *RefusedError) Unwrap() error { return ErrRefused }

// Kind returns the kind of refusal in err ("" when err is not one).
func Kind(err error) string {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Kind
	}
	return ""
}

// Resolver looks names up; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// VeilPorts are the default ports of Veil's services and stores. They are
// refused on every loopback address (and on this host's own addresses)
// whatever the allow list says: Postgres 5432, Redis 6379, ClickHouse
// native 9000 and HTTP 8123, Kafka 9092, the gateway 8000 and its Caddy
// admin API 2019, the control plane 8080, ingest 8081, the processor's
// metrics 8082, the metrics listeners of the control plane 9180, ingest
// 9181 and the gateway 9183, mailpit's SMTP 1025 and HTTP 8025.
var VeilPorts = []uint16{5432, 6379, 9000, 8123, 9092, 8000, 2019, 8080, 8081, 8082, 9180, 9181, 9182, 9183, 1025, 8025}

// Config builds a Policy.
type Config struct {
	// Allow lists what is allowed although not public: CIDRs
	// (10.20.0.0/16), single addresses (10.20.0.5) or single endpoints
	// (10.20.0.5:8443, [fd00::5]:443). Default: nothing. A CIDR or an
	// address opens every port but VeilPorts; only an endpoint opens one
	// of those. Unspecified, multicast and this-network (0.0.0.0/8)
	// addresses are never allowed, nor the Deny list and VeilPorts on
	// loopback and this host's addresses.
	Allow []string
	// Deny lists endpoints refused whatever Allow says, in addition to
	// VeilPorts on loopback: host:port (a name is resolved when the
	// policy is built, and is refused by name too, even when it does not
	// resolve then), addr:port, or :port
	// for a port on every address of this host (a wildcard listener).
	// The services pass the addresses they are configured with.
	Deny []string
	// Resolver looks names up. Default: the system's (net.DefaultResolver).
	Resolver Resolver
	// ResolveTimeout bounds one look-up. Default 5 s.
	ResolveTimeout time.Duration
}

// endpoint is a denied address and port; port 0 is every port.
type endpoint struct {
	prefix netip.Prefix
	port   uint16
}

func (e endpoint) matches(a netip.Addr, port uint16) bool {
	return e.prefix.Contains(a) && (e.port == 0 || e.port == port)
}

// Policy decides which addresses may be connected to. The zero value is
// not usable; build one with New. A Policy is safe for concurrent use.
type Policy struct {
	allow     []endpoint
	deny      []endpoint
	denyNames map[string]bool // lower-case host:port
	resolver  Resolver
	timeout   time.Duration
}

// loopbacks are the prefixes VeilPorts are refused on.
var loopbacks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// New builds a Policy. ctx bounds the look-ups of Deny's names.
func New(ctx context.Context, cfg Config) (*Policy, error) {
	p := &Policy{denyNames: map[string]bool{}, resolver: cfg.Resolver, timeout: cfg.ResolveTimeout}
	if p.resolver == nil {
		p.resolver = net.DefaultResolver
	}
	if p.timeout <= 0 {
		p.timeout = 5 * time.Second
	}
	for _, s := range cfg.Allow {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		e, err := parseAllow(s)
		if err != nil {
			return nil, fmt.Errorf("egress allow %q: %w", s, err)
		}
		p.allow = append(p.allow, e)
	}
	own, err := ownAddrs()
	if err != nil {
		return nil, err
	}
	for _, port := range VeilPorts {
		for _, l := range loopbacks {
			p.deny = append(p.deny, endpoint{l, port})
		}
		for _, a := range own {
			p.deny = append(p.deny, endpoint{netip.PrefixFrom(a, a.BitLen()), port})
		}
	}
	for _, s := range cfg.Deny {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if err := p.addDeny(ctx, s, own); err != nil {
			return nil, fmt.Errorf("egress deny %q: %w", s, err)
		}
	}
	return p, nil
}

// ParseList splits a comma-separated list (VEIL_UPSTREAM_ALLOW_CIDRS).
func ParseList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseAllow(s string) (endpoint, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		a := canonical(ap.Addr())
		return endpoint{netip.PrefixFrom(a, a.BitLen()), ap.Port()}, nil
	}
	if pr, err := netip.ParsePrefix(s); err == nil {
		if pr.Addr().Is4In6() {
			pr = netip.PrefixFrom(pr.Addr().Unmap(), max(pr.Bits()-96, 0))
		}
		return endpoint{pr.Masked(), 0}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return endpoint{}, errors.New("want a CIDR, an address or address:port")
	}
	a = canonical(a)
	return endpoint{netip.PrefixFrom(a, a.BitLen()), 0}, nil
}

func (p *Policy) addDeny(ctx context.Context, s string, own []netip.Addr) error {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port, address:port or :port")
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return fmt.Errorf("port %q", portStr)
	}
	var addrs []netip.Addr
	switch a, err := netip.ParseAddr(host); {
	case host == "":
		// A wildcard listener answers on every address of this host.
		addrs = append(own, netip.IPv4Unspecified(), netip.IPv6Unspecified())
		for _, l := range loopbacks {
			p.deny = append(p.deny, endpoint{l, uint16(port)})
		}
	case err == nil:
		addrs = []netip.Addr{a}
		if a.IsUnspecified() {
			addrs = append(own, netip.IPv4Unspecified(), netip.IPv6Unspecified())
			for _, l := range loopbacks {
				p.deny = append(p.deny, endpoint{l, uint16(port)})
			}
		}
	default:
		p.denyNames[strings.ToLower(strings.TrimSuffix(host, "."))+":"+portStr] = true
		if isLocalhost(host) {
			for _, l := range loopbacks {
				p.deny = append(p.deny, endpoint{l, uint16(port)})
			}
			return nil
		}
		lctx, cancel := context.WithTimeout(ctx, p.timeout)
		defer cancel()
		// A name that does not resolve now stays refused by name; a
		// service must not fail to start because a peer's DNS is late.
		addrs, _ = p.resolver.LookupNetIP(lctx, "ip", host)
	}
	for _, a := range addrs {
		a = canonical(a)
		p.deny = append(p.deny, endpoint{netip.PrefixFrom(a, a.BitLen()), uint16(port)})
	}
	return nil
}

// ownAddrs are this host's interface addresses: a service listening on a
// wildcard address answers on each of them.
func ownAddrs() ([]netip.Addr, error) {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, ia := range ifaddrs {
		if n, ok := ia.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, canonical(a))
			}
		}
	}
	return out, nil
}

// Check refuses an address the policy does not allow; it returns nil or
// a *RefusedError. host is what the address was resolved from, for the
// error ("" for a literal).
func (p *Policy) Check(host string, ap netip.AddrPort) error {
	a := canonical(ap.Addr())
	port := ap.Port()
	if host == "" {
		host = ap.Addr().String()
	}
	for _, e := range p.deny {
		if e.matches(a, port) {
			return &RefusedError{Host: host, Addr: ap, Kind: KindVeil}
		}
	}
	kind := Classify(ap.Addr())
	if kind == "" {
		return nil
	}
	if never[kind] {
		return &RefusedError{Host: host, Addr: ap, Kind: kind}
	}
	// A CIDR opens a network but not Veil's default ports in it, where
	// the platform's own stores may listen (a ClickHouse on 10.0.0.7:8123
	// is not the gateway's to reach); only an address:port entry opens
	// one of those.
	veilPort := slices.Contains(VeilPorts, port)
	for _, e := range p.allow {
		if e.matches(a, port) && (!veilPort || e.port == port) {
			return nil
		}
	}
	if veilPort {
		kind = KindVeil
	}
	return &RefusedError{Host: host, Addr: ap, Kind: kind}
}

// Resolve returns the addresses of host:port that may be connected to:
// every address the host resolves to, or a refusal if any of them is
// refused (a name whose answers mix public and internal addresses is not
// something to connect to in part). Errors wrap ErrRefused or
// ErrUnresolvable, or the context's error.
func (p *Policy) Resolve(ctx context.Context, host string, port uint16) ([]netip.AddrPort, error) {
	if port == 0 {
		return nil, &RefusedError{Host: host, Kind: KindHost}
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		ap := netip.AddrPortFrom(a, port)
		if err := p.Check("", ap); err != nil {
			return nil, err
		}
		return []netip.AddrPort{ap}, nil
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if !validName(name) || isLocalhost(name) {
		return nil, &RefusedError{Host: host, Kind: KindHost}
	}
	if p.denyNames[name+":"+strconv.Itoa(int(port))] {
		return nil, &RefusedError{Host: host, Kind: KindVeil}
	}
	lctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	addrs, err := p.resolver.LookupNetIP(lctx, "ip", name)
	if err != nil || len(addrs) == 0 {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, ctx.Err())
		}
		if err == nil {
			err = errors.New("no addresses")
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrUnresolvable, host, err)
	}
	out := make([]netip.AddrPort, 0, len(addrs))
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, port)
		if err := p.Check(host, ap); err != nil {
			return nil, err
		}
		out = append(out, ap)
	}
	return out, nil
}

// CheckURL checks an http or https URL as saved by a provider: its host
// must be a DNS name or an IP literal, and resolve only to allowed
// addresses. Errors wrap ErrRefused or ErrUnresolvable (or are a plain
// error for a URL that is not absolute http(s)).
func (p *Policy) CheckURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &RefusedError{Host: raw, Kind: KindHost}
	}
	host, port, err := HostPort(u)
	if err != nil {
		return err
	}
	_, err = p.Resolve(ctx, host, port)
	return err
}

// HostPort returns the host and port u connects to (80 or 443 by scheme
// when the URL names none), refusing a port that is not a number from 1
// to 65535.
func HostPort(u *url.URL) (string, uint16, error) {
	host := u.Hostname()
	ps := u.Port()
	if ps == "" {
		if u.Scheme == "https" {
			return host, 443, nil
		}
		return host, 80, nil
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return "", 0, &RefusedError{Host: u.Host, Kind: KindHost}
	}
	return host, uint16(port), nil
}

// isLocalhost reports the names RFC 6761 reserves for loopback; they are
// refused without asking a resolver.
func isLocalhost(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	return name == "localhost" || strings.HasSuffix(name, ".localhost") ||
		name == "localhost.localdomain" || name == "ip6-localhost" || name == "ip6-loopback"
}

// validName accepts a DNS host name: labels of letters, digits, "-" and
// "_", at most 63 bytes each and 253 in all, whose last label is not
// numeric. Other strings would mean different hosts to different parsers:
// 2130706433, 0177.0.0.1, 0x7f.1 and 127.1 are 127.0.0.1 to inet_aton.
func validName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	if strings.HasPrefix(last, "0x") {
		return false
	}
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			return true
		}
	}
	return false
}
