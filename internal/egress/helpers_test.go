package egress_test

import (
	"context"
	"net"
	"syscall"
)

type netDialer struct {
	control func(network, address string, c syscall.RawConn) error
}

func (d *netDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	nd := net.Dialer{Control: d.control}
	return nd.DialContext(ctx, "tcp", addr)
}
