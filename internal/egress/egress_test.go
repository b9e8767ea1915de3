package egress_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/veil-platform/veil/internal/egress"
	"github.com/veil-platform/veil/internal/egress/egresstest"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		addr string
		want string
	}{
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"::127.0.0.1", "loopback"},
		{"::ffff:0:7f00:1", "loopback"},
		{"64:ff9b::7f00:1", "loopback"},
		{"64:ff9b:1::7f00:1", "loopback"},
		{"2002:7f00:1::", "loopback"},
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"}, // Teredo client 127.0.0.1
		{"10.1.2.3", "private"},
		{"172.31.255.255", "private"},
		{"192.168.0.1", "private"},
		{"fd12:3456::1", "private"},
		{"fec0::1", "private"},
		{"169.254.169.254", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"0.1.2.3", "this-network"},
		{"224.0.0.1", "multicast"},
		{"ff02::1", "multicast"},
		{"100.64.0.1", "shared (carrier-grade NAT)"},
		{"192.0.0.8", "IETF protocol"},
		{"192.0.2.1", "documentation"},
		{"198.51.100.1", "documentation"},
		{"203.0.113.1", "documentation"},
		{"2001:db8::1", "documentation"},
		{"198.18.0.1", "benchmarking"},
		{"240.0.0.1", "reserved"},
		{"255.255.255.255", "reserved"},
		{"100::1", "reserved"},
		{"::8.8.8.8", "reserved"},
		{"2001:10::1", "IETF protocol"},
		{"93.184.215.14", ""},
		{"1.1.1.1", ""},
		{"::ffff:1.1.1.1", ""},
		{"64:ff9b::101:101", ""},
		{"2002:101:101::1", ""},
		{"2606:4700:4700::1111", ""},
	}
	for _, tt := range tests {
		if got := egress.Classify(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("Classify(%s) = %q; want %q", tt.addr, got, tt.want)
		}
	}
}

// newPolicy is a policy resolving through dns that allows allow.
func newPolicy(t *testing.T, dns *egresstest.DNS, allow ...string) *egress.Policy {
	t.Helper()
	p, err := egress.New(t.Context(), egress.Config{Allow: allow, Resolver: dns.Resolver()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckURLRefusesInternalForms(t *testing.T) {
	dns := egresstest.NewDNS(t)
	internal := egresstest.NewListener(t, "127.0.0.1:0")
	forms := egresstest.Forms(dns, internal.Port())
	if len(forms) < 25 {
		t.Fatalf("%d forms; want at least 25", len(forms))
	}
	// The whole of loopback is allowed except Veil's ports: the forms
	// must still be refused, except those that are plain loopback.
	for _, allow := range [][]string{nil, {"127.0.0.1:1"}} {
		p := newPolicy(t, dns, allow...)
		for _, f := range forms {
			err := p.CheckURL(t.Context(), f.URL)
			switch {
			case f.Kind == "" && !errors.Is(err, egress.ErrUnresolvable):
				t.Errorf("%s: CheckURL(%s) = %v; want %v", f.Name, f.URL, err, egress.ErrUnresolvable)
			case f.Kind != "" && (!errors.Is(err, egress.ErrRefused) || egress.Kind(err) != f.Kind):
				t.Errorf("%s: CheckURL(%s) = %v; want refused as %s", f.Name, f.URL, err, f.Kind)
			}
		}
	}
	d := &egress.Dialer{Policy: newPolicy(t, dns)}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	for _, f := range forms {
		resp, err := client.Get(f.URL)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: GET %s through the egress dialer = %d; want refused", f.Name, f.URL, resp.StatusCode)
		}
	}
	if n := internal.Conns.Load(); n != 0 {
		t.Errorf("internal listener accepted %d connections; want 0", n)
	}
}

func TestAllowList(t *testing.T) {
	dns := egresstest.NewDNS(t)
	dns.Set("svc.veil.test", "10.20.0.5")
	p := newPolicy(t, dns, "10.20.0.0/16", "127.0.0.1:18443", "::ffff:192.168.7.0/120", "127.0.0.0/8", "10.20.0.9:8080")
	for _, tt := range []struct {
		url  string
		kind string
	}{
		{"http://10.20.3.4/", ""},
		{"http://svc.veil.test:8443/", ""},
		{"http://[::ffff:10.20.3.4]/", ""},
		{"http://192.168.7.9/", ""},
		{"http://127.0.0.1:18443/", ""},
		{"http://127.0.0.1:18444/", ""},
		{"http://10.21.0.1/", "private"},
		// A CIDR does not open Veil's ports in it; an endpoint does,
		// except on loopback and this host's addresses.
		{"http://10.20.3.4:8123/", "veil-service"},
		{"http://10.20.3.4:5432/", "veil-service"},
		{"http://10.20.0.9:8080/", ""},
		{"http://10.20.0.9:8081/", "veil-service"},
		{"http://10.21.0.1:8123/", "veil-service"},
		// No allow list opens Veil's own ports, unspecified addresses or
		// odd host spellings.
		{"http://127.0.0.1:2019/", "veil-service"},
		{"http://127.0.0.1:5432/", "veil-service"},
		{"http://[::1]:9092/", "veil-service"},
		{"http://127.0.0.5:8080/", "veil-service"},
		{"http://0.0.0.0:18443/", "unspecified"},
		{"http://localhost:18443/", "invalid-host"},
		{"http://2130706433:18443/", "invalid-host"},
		{"http://93.184.215.14/", ""},
	} {
		err := p.CheckURL(t.Context(), tt.url)
		if egress.Kind(err) != tt.kind || (tt.kind == "" && err != nil) {
			t.Errorf("CheckURL(%s) = %v; want kind %q", tt.url, err, tt.kind)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "nope", "10.0.0.1:x"} {
		if _, err := egress.New(t.Context(), egress.Config{Allow: []string{bad}}); err == nil {
			t.Errorf("New(allow %q) = nil error; want one", bad)
		}
	}
}

func TestDenyConfiguredAddresses(t *testing.T) {
	dns := egresstest.NewDNS(t)
	dns.Set("redis.veil.test", "10.9.9.9")
	p, err := egress.New(t.Context(), egress.Config{
		Allow:    []string{"10.0.0.0/8", "127.0.0.0/8"},
		Deny:     []string{"redis.veil.test:6380", ":7777", "10.1.1.1:5433"},
		Resolver: dns.Resolver(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		url  string
		kind string
	}{
		{"http://redis.veil.test:6380/", "veil-service"},
		{"http://10.9.9.9:6380/", "veil-service"},
		{"http://10.9.9.9:6381/", ""},
		{"http://127.0.0.1:7777/", "veil-service"},
		{"http://10.1.1.1:5433/", "veil-service"},
		{"http://10.1.1.1:5434/", ""},
	} {
		err := p.CheckURL(t.Context(), tt.url)
		if egress.Kind(err) != tt.kind || (tt.kind == "" && err != nil) {
			t.Errorf("CheckURL(%s) = %v; want kind %q", tt.url, err, tt.kind)
		}
	}
}

// A name checked while it resolved to an allowed address is refused at
// dial time once it resolves to an internal one: the dialer resolves
// again, checks, and dials the checked address.
func TestDialerRebinding(t *testing.T) {
	dns := egresstest.NewDNS(t)
	public, internal := egresstest.ListenPair(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "public")
	}))
	port := public.Listener.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	p := newPolicy(t, dns, "127.0.0.1:"+strconv.Itoa(int(port)))
	dns.Set("rebind.veil.test", "127.0.0.1")
	url := fmt.Sprintf("http://rebind.veil.test:%d/", port)
	if err := p.CheckURL(t.Context(), url); err != nil {
		t.Fatalf("CheckURL(%s) while public = %v; want nil", url, err)
	}
	d := &egress.Dialer{Policy: p}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	if body := get(t, client, url); body != "public" {
		t.Fatalf("GET %s = %q; want the public upstream", url, body)
	}
	dns.Set("rebind.veil.test", "127.0.0.2")
	_, err := client.Get(url)
	if !errors.Is(err, egress.ErrRefused) || egress.Kind(err) != "loopback" {
		t.Errorf("GET %s after rebinding = %v; want refused as loopback", url, err)
	}
	if n := internal.Conns.Load(); n != 0 {
		t.Errorf("internal listener accepted %d connections; want 0", n)
	}
}

// The Control backstop refuses an address even when the dial skips the
// resolution step (a client that keeps its own dialer).
func TestControlBackstop(t *testing.T) {
	internal := egresstest.NewListener(t, "127.0.0.1:0")
	p, err := egress.New(t.Context(), egress.Config{})
	if err != nil {
		t.Fatal(err)
	}
	d := &netDialer{control: p.Control()}
	_, err = d.dial(t.Context(), internal.Listener.Addr().String())
	if !errors.Is(err, egress.ErrRefused) {
		t.Errorf("dial %s with the Control hook = %v; want %v", internal.Listener.Addr(), err, egress.ErrRefused)
	}
	if n := internal.Conns.Load(); n != 0 {
		t.Errorf("internal listener accepted %d connections; want 0", n)
	}
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}
