package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/veil-platform/veil/control-plane/middleware"
)

func TestClientIP(t *testing.T) {
	trusted, err := middleware.ParseTrustedProxies([]string{"10.0.0.0/8", "2001:db8:ffff::/48", "192.0.2.10"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		trusted middleware.TrustedProxies
		remote  string
		xff     []string
		want    string
	}{
		{"no proxies: peer", nil, "203.0.113.7:4000", nil, "203.0.113.7"},
		{"no proxies: header ignored", nil, "203.0.113.7:4000", []string{"198.51.100.1"}, "203.0.113.7"},
		{"untrusted peer: header ignored", trusted, "203.0.113.7:4000", []string{"198.51.100.1"}, "203.0.113.7"},
		{"trusted peer without header", trusted, "10.0.0.5:4000", nil, "10.0.0.5"},
		{"trusted peer: client from header", trusted, "10.0.0.5:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"spoofed left entries ignored", trusted, "10.0.0.5:4000", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"chain of trusted proxies", trusted, "10.0.0.5:4000", []string{"1.2.3.4, 198.51.100.1, 192.0.2.10, 10.9.9.9"}, "198.51.100.1"},
		{"several header lines", trusted, "10.0.0.5:4000", []string{"1.2.3.4, 198.51.100.1", "10.9.9.9"}, "198.51.100.1"},
		{"all hops trusted", trusted, "10.0.0.5:4000", []string{"10.1.1.1, 10.2.2.2"}, "10.1.1.1"},
		{"malformed hop stops", trusted, "10.0.0.5:4000", []string{"198.51.100.1, garbage"}, "10.0.0.5"},
		{"hop with port", trusted, "10.0.0.5:4000", []string{"198.51.100.1:5555"}, "198.51.100.1"},
		{"ipv6 peer", trusted, "[2001:db8:ffff::1]:443", []string{"2001:db8:1::7"}, "2001:db8:1::7"},
		{"ipv6 hop with port", trusted, "10.0.0.5:4000", []string{"[2001:db8:1::7]:443"}, "2001:db8:1::7"},
		{"ipv4-mapped peer", trusted, "[::ffff:10.0.0.5]:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"single trusted address", trusted, "192.0.2.10:80", []string{"198.51.100.1"}, "198.51.100.1"},
		{"neighbour of single address", trusted, "192.0.2.11:80", []string{"198.51.100.1"}, "192.0.2.11"},
		{"unparseable remote addr", trusted, "somewhere", nil, "somewhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			r.Header["X-Forwarded-For"] = tt.xff
			if got := middleware.ClientIP(r, tt.trusted); got != tt.want {
				t.Errorf("ClientIP(%s, xff %q) = %s; want %s", tt.remote, tt.xff, got, tt.want)
			}
		})
	}
}

func TestParseTrustedProxies(t *testing.T) {
	tests := []struct {
		in      []string
		want    []string
		wantErr bool
	}{
		{in: nil, want: []string{}},
		{in: []string{"10.1.2.3/8", " 192.0.2.1 ", "", "2001:db8::/32", "::1"}, want: []string{"10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "::1/128"}},
		{in: []string{"10.0.0.0/33"}, wantErr: true},
		{in: []string{"proxy.internal"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := middleware.ParseTrustedProxies(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseTrustedProxies(%q) error = %v; want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if tt.wantErr {
			continue
		}
		var gotS []string
		for _, p := range got {
			gotS = append(gotS, p.String())
		}
		if len(gotS) != len(tt.want) {
			t.Errorf("ParseTrustedProxies(%q) = %v; want %v", tt.in, gotS, tt.want)
			continue
		}
		for i := range gotS {
			if gotS[i] != tt.want[i] {
				t.Errorf("ParseTrustedProxies(%q) = %v; want %v", tt.in, gotS, tt.want)
				break
			}
		}
	}
}
