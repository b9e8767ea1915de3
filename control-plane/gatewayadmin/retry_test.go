package gatewayadmin_test

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/veil-platform/veil/control-plane/gatewayadmin"
)

// flakyAdmin is an admin endpoint whose first drops connections are closed
// unanswered, as Caddy's admin server does to the connections of the
// listener a new configuration replaces; later ones get an empty route list.
func flakyAdmin(t *testing.T, drops int64) (url string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	ready := make(chan net.Conn)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(ready)
				return
			}
			if accepted.Add(1) <= drops {
				c.Close()
				continue
			}
			ready <- c
		}
	}()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("[]"))
	})}
	go srv.Serve(chanListener{ready, ln.Addr()})
	t.Cleanup(func() { ln.Close(); srv.Close() })
	return "http://" + ln.Addr().String(), accepted
}

// chanListener serves the connections flakyAdmin lets through.
type chanListener struct {
	conns <-chan net.Conn
	addr  net.Addr
}

func (l chanListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l chanListener) Close() error   { return nil }
func (l chanListener) Addr() net.Addr { return l.addr }

// An admin server that restarts drops connections for a moment: the client
// sends the request again, long enough to outlast it, and then gives up.
func TestSendsAgainWhileTheAdminServerRestarts(t *testing.T) {
	t.Parallel()
	url, accepted := flakyAdmin(t, 6)
	c, err := gatewayadmin.New(gatewayadmin.Config{AdminURL: url})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(t.Context()); err != nil {
		t.Fatalf("Ping through 6 dropped connections = %v; want nil", err)
	}
	if n := accepted.Load(); n != 7 {
		t.Errorf("connections = %d; want 7 (6 dropped, then the answer)", n)
	}

	url, accepted = flakyAdmin(t, 1<<30)
	c, err = gatewayadmin.New(gatewayadmin.Config{AdminURL: url})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(t.Context()); err == nil {
		t.Fatal("Ping of an endpoint that drops every connection = nil; want an error")
	}
	if n := accepted.Load(); n != 8 {
		t.Errorf("connections = %d; want 8 sends before giving up", n)
	}
}
