package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"
	"time"

	"github.com/veil-platform/veil/internal/egress"
)

// ErrPrivateAddress reports a dial to an address webhooks may not reach.
var ErrPrivateAddress = errors.New("address is not public")

// nonPublic names the kind of a that webhooks must not reach, or returns ""
// for a public address. The classification is the egress package's, the
// one rule for every address Veil connects to on a customer's behalf.
func nonPublic(a netip.Addr) string { return egress.Classify(a) }

// publicOnly is a net.Dialer Control function. It runs on the address
// actually dialed, after name resolution, so a host that resolved to a
// public address when the endpoint was saved and to a private one now (DNS
// rebinding) is still refused.
func publicOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", address, err)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("dial %s: %w", address, err)
	}
	if kind := nonPublic(a); kind != "" {
		return fmt.Errorf("dial %s: %w (%s)", address, ErrPrivateAddress, kind)
	}
	return nil
}

// resolveTimeout bounds the look-up of an endpoint's host when it is saved.
const resolveTimeout = 5 * time.Second

// checkPublic refuses, as a validation error of field, a URL whose host is
// or resolves to a non-public address. It does nothing when private
// networks are allowed.
func (s *Service) checkPublic(ctx context.Context, field, raw string) error {
	if s.cfg.AllowPrivateNetworks {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return &ValidationError{Fields: []FieldError{{Field: field, Detail: "must be an absolute http or https URL"}}}
	}
	host := u.Hostname()
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		defer cancel()
		addrs, err = s.resolver.LookupNetIP(lctx, "ip", host)
		if err != nil || len(addrs) == 0 {
			if ctx.Err() != nil {
				return fmt.Errorf("resolve webhook host: %w", ctx.Err())
			}
			return &ValidationError{Fields: []FieldError{{Field: field, Detail: fmt.Sprintf("host %q does not resolve", host)}}}
		}
	}
	for _, a := range addrs {
		if kind := nonPublic(a); kind != "" {
			return &ValidationError{Fields: []FieldError{{Field: field,
				Detail: fmt.Sprintf("host %q is a %s address (%s); webhooks go to public addresses only", host, kind, a)}}}
		}
	}
	return nil
}
