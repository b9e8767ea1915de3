package egresstest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
)

// Form is one way of writing an upstream that must be refused.
type Form struct {
	Name string
	URL  string
	Kind string // the egress kind of the refusal; "" when the name does not resolve
}

// Names the DNS server of Forms answers.
const (
	NameLoopback = "loopback.veil.test"
	NameLoop6    = "loop6.veil.test"
	NameMapped   = "mapped.veil.test"
	NameMixed    = "mixed.veil.test"
	NameMetadata = "metadata.veil.test"
	NamePrivate  = "private.veil.test"
	NameMissing  = "missing.veil.test"
)

// Forms returns upstream URLs that reach loopback, private or special
// addresses in as many spellings as parsers accept; port is where the
// test listens on loopback (an internal service), so that a form that got
// through would reach it. dns is made to answer the names the forms use.
func Forms(dns *DNS, port int) []Form {
	dns.Set(NameLoopback, "127.0.0.1")
	dns.Set(NameLoop6, "::1")
	dns.Set(NameMapped, "::ffff:127.0.0.1")
	dns.Set(NameMixed, "93.184.215.14", "127.0.0.1")
	dns.Set(NameMetadata, "169.254.169.254")
	dns.Set(NamePrivate, "10.1.2.3")
	p := strconv.Itoa(port)
	return []Form{
		{"dotted loopback", "http://127.0.0.1:" + p + "/", "loopback"},
		{"other loopback", "http://127.0.0.2:" + p + "/", "loopback"},
		{"decimal", "http://2130706433:" + p + "/", "invalid-host"},
		{"octal", "http://0177.0.0.1:" + p + "/", "invalid-host"},
		{"hex dotted", "http://0x7f.0.0.1:" + p + "/", "invalid-host"},
		{"hex", "http://0x7f000001:" + p + "/", "invalid-host"},
		{"short", "http://127.1:" + p + "/", "invalid-host"},
		{"trailing dot", "http://127.0.0.1.:" + p + "/", "invalid-host"},
		{"ipv6 loopback", "http://[::1]:" + p + "/", "loopback"},
		{"ipv4-mapped", "http://[::ffff:127.0.0.1]:" + p + "/", "loopback"},
		{"ipv4-mapped hex", "http://[::ffff:7f00:1]:" + p + "/", "loopback"},
		{"ipv4-mapped long", "http://[0:0:0:0:0:ffff:127.0.0.1]:" + p + "/", "loopback"},
		{"ipv4-compatible", "http://[::127.0.0.1]:" + p + "/", "loopback"},
		{"ipv4-translated", "http://[::ffff:0:7f00:1]:" + p + "/", "loopback"},
		{"nat64", "http://[64:ff9b::7f00:1]:" + p + "/", "loopback"},
		{"6to4", "http://[2002:7f00:1::1]:" + p + "/", "loopback"},
		{"unspecified", "http://0.0.0.0:" + p + "/", "unspecified"},
		{"ipv6 unspecified", "http://[::]:" + p + "/", "unspecified"},
		{"this network", "http://0.1.2.3:" + p + "/", "this-network"},
		{"localhost", "http://localhost:" + p + "/", "invalid-host"},
		{"localhost upper dot", "http://LOCALHOST.:" + p + "/", "invalid-host"},
		{"localhost subdomain", "http://foo.localhost:" + p + "/", "invalid-host"},
		{"metadata", "http://169.254.169.254/latest/meta-data", "link-local"},
		{"metadata mapped", "http://[::ffff:169.254.169.254]/latest/meta-data", "link-local"},
		{"private 10", "http://10.0.0.7:" + p + "/", "private"},
		{"private 172.16", "http://172.16.5.4:" + p + "/", "private"},
		{"private 192.168", "http://192.168.1.1:" + p + "/", "private"},
		{"cgnat", "http://100.64.0.1:" + p + "/", "shared (carrier-grade NAT)"},
		{"unique local", "http://[fd00::1]:" + p + "/", "private"},
		{"link-local zone", "http://[fe80::1%25lo]:" + p + "/", "link-local"},
		{"multicast", "http://224.0.0.1:" + p + "/", "multicast"},
		{"broadcast", "http://255.255.255.255:" + p + "/", "reserved"},
		{"benchmarking", "http://198.18.0.1:" + p + "/", "benchmarking"},
		{"documentation", "http://192.0.2.1:" + p + "/", "documentation"},
		{"caddy admin", "http://127.0.0.1:2019/config/", "veil-service"},
		{"redis", "http://127.0.0.1:6379/", "veil-service"},
		{"clickhouse http", "http://[::ffff:127.0.0.1]:8123/", "veil-service"},
		{"name to loopback", "http://" + NameLoopback + ":" + p + "/", "loopback"},
		{"name to ipv6 loopback", "http://" + NameLoop6 + ":" + p + "/", "loopback"},
		{"name to mapped", "http://" + NameMapped + ":" + p + "/", "loopback"},
		{"name mixing public and loopback", "http://" + NameMixed + ":" + p + "/", "loopback"},
		{"name to metadata", "http://" + NameMetadata + "/", "link-local"},
		{"name to private", "http://" + NamePrivate + ":" + p + "/", "private"},
		{"name that does not resolve", "http://" + NameMissing + ":" + p + "/", ""},
	}
}

// Listener counts the connections an HTTP server on loopback accepts;
// a test asserts none of the refused forms reached it.
type Listener struct {
	*httptest.Server
	Conns atomic.Int64
}

// NewListener starts an internal service on addr (e.g. "127.0.0.1:0")
// that answers every request 200 "internal".
func NewListener(t testing.TB, addr string) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	l := &Listener{}
	l.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprint(w, "internal")
	}))
	l.Server.Listener = ln
	l.Server.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			l.Conns.Add(1)
		}
	}
	l.Start()
	t.Cleanup(l.Close)
	return l
}

// Port is the listener's port.
func (l *Listener) Port() int { return l.Listener.Addr().(*net.TCPAddr).Port }

// ListenPair starts two listeners on the same port, one on 127.0.0.1 (the
// test's stand-in for a public upstream, allowed by port) and one on
// 127.0.0.2 (an internal service): a name that moves from the first to the
// second (DNS rebinding) keeps its URL.
func ListenPair(t testing.TB, h http.Handler) (public *httptest.Server, internal *Listener) {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatalf("listen 127.0.0.2: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pub, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			_ = ln.Close()
			continue
		}
		_ = ln.Close()
		internal = NewListener(t, net.JoinHostPort("127.0.0.2", strconv.Itoa(port)))
		public = httptest.NewUnstartedServer(h)
		public.Listener = pub
		public.Start()
		t.Cleanup(public.Close)
		return public, internal
	}
	t.Fatal("no port free on both 127.0.0.1 and 127.0.0.2")
	return nil, nil
}
