package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// Dialer connects only where a Policy allows.
type Dialer struct {
	// Policy decides. Required.
	Policy *Policy
	// Timeout bounds one connection attempt (default 10 s); KeepAlive is
	// the TCP keep-alive period (default 30 s).
	Timeout, KeepAlive time.Duration
}

// DialContext resolves address's host with the policy's resolver, refuses
// it if any answer is refused, then dials the checked IP addresses in
// order until one connects. The standard library never sees the name, so
// it cannot resolve it again to something else; a Control hook checks the
// address actually dialled once more, as a backstop. Only TCP is dialled.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("dial %s %s: %w", network, address, &RefusedError{Host: address, Kind: KindHost})
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, &RefusedError{Host: address, Kind: KindHost})
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, &RefusedError{Host: address, Kind: KindHost})
	}
	addrs, err := d.Policy.Resolve(ctx, host, uint16(port))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", address, err)
	}
	timeout, keepAlive := d.Timeout, d.KeepAlive
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if keepAlive == 0 {
		keepAlive = 30 * time.Second
	}
	nd := net.Dialer{Timeout: timeout, KeepAlive: keepAlive, Control: d.control}
	var errs []error
	for _, ap := range addrs {
		if (network == "tcp4" && !ap.Addr().Unmap().Is4()) || (network == "tcp6" && ap.Addr().Unmap().Is4()) {
			continue
		}
		conn, err := nd.DialContext(ctx, network, ap.String())
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("dial %s: no %s address", address, network)
	}
	return nil, fmt.Errorf("dial %s: %w", address, errors.Join(errs...))
}

// control is a net.Dialer Control hook: it runs on the address the socket
// is about to connect to.
func (d *Dialer) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Host: address, Kind: KindHost}
	}
	return d.Policy.Check("", ap)
}

// Control returns a net.Dialer Control hook enforcing p on the address
// actually dialled, for clients that keep their own dialer.
func (p *Policy) Control() func(network, address string, c syscall.RawConn) error {
	return (&Dialer{Policy: p}).control
}
