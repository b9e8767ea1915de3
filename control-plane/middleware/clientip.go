package middleware

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// TrustedProxies are the networks whose X-Forwarded-For ClientIP believes:
// the load balancers and gateways in front of the control plane.
//
// The choice: a client can send any X-Forwarded-For it likes, so a header
// is only evidence when the peer that delivered it is one of our own
// proxies. Each trusted proxy appends the address it received the request
// from, so ClientIP reads the header from the right and stops at the first
// address that is not a trusted proxy: that is the client. Everything to its
// left was written by the client and is ignored. With no trusted proxies the
// header is ignored entirely and the peer address is the client; that is
// the safe default, because trusting the header from anyone would let every
// caller pick its own rate-limit key and audit address. X-Real-IP and
// Forwarded are not read: our proxies set X-Forwarded-For.
type TrustedProxies []netip.Prefix

// ParseTrustedProxies reads CIDRs ("10.0.0.0/8") or single addresses
// ("192.0.2.7", taken as /32 or /128).
func ParseTrustedProxies(list []string) (TrustedProxies, error) {
	out := make(TrustedProxies, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("parse trusted proxy %q: %w", s, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("parse trusted proxy %q: %w", s, err)
		}
		a = a.Unmap().WithZone("")
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Contains reports whether a is one of the trusted proxies.
func (t TrustedProxies) Contains(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the address of the client that made r: the peer address
// (RemoteAddr), or, when the peer is a trusted proxy, the rightmost address
// in X-Forwarded-For that is not one (see TrustedProxies for why).
// Addresses are returned in canonical form, IPv4-mapped IPv6 as IPv4.
func ClientIP(r *http.Request, trusted TrustedProxies) string {
	peer, ok := peerAddr(r.RemoteAddr)
	if !ok {
		return r.RemoteAddr
	}
	if len(trusted) == 0 || !trusted.Contains(peer) {
		return peer.String()
	}
	hops := forwardedFor(r.Header)
	client := peer
	for i := len(hops) - 1; i >= 0 && trusted.Contains(client); i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			// A malformed hop ends what we can believe; the last trusted
			// proxy is the best we know.
			break
		}
		client = a
	}
	return client.String()
}

func peerAddr(remote string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// forwardedFor returns the X-Forwarded-For hops of every header line, in
// order: proxies may append a line instead of extending the last one.
func forwardedFor(h http.Header) []string {
	var hops []string
	for _, line := range h.Values("X-Forwarded-For") {
		for _, hop := range strings.Split(line, ",") {
			hops = append(hops, strings.TrimSpace(hop))
		}
	}
	return hops
}

// parseHop reads one X-Forwarded-For entry: an address, tolerating a port
// ("192.0.2.1:4711", "[2001:db8::1]:4711") that some proxies add.
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}
