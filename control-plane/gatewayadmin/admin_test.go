package gatewayadmin_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/gatewayadmin"
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestAdminAPIIsNotOnTCP: the gateway's admin API is on its unix socket
// (owner only) and on no TCP port, so no upstream the gateway proxies to
// can be the admin API: an API whose upstream is any of the gateway's own
// TCP listeners gets no config back. The control plane's client puts its
// routes over the socket.
func TestAdminAPIIsNotOnTCP(t *testing.T) {
	e := setup(t)
	sock := strings.TrimPrefix(e.gw.AdminURL, "unix://")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("admin socket: %v", err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket %s mode = %v; want a socket with 0600", sock, fi.Mode())
	}

	listeners := e.gw.TCPListeners(t)
	want := []string{strings.TrimPrefix(e.gw.URL, "http://"), strings.TrimPrefix(e.gw.MetricsURL, "http://")}
	slices.Sort(listeners)
	slices.Sort(want)
	if !slices.Equal(listeners, want) {
		t.Errorf("gateway listens on TCP %v; want only its traffic and metrics addresses %v", listeners, want)
	}

	// Every TCP address of the gateway, as a provider's upstream: none
	// answers with the gateway's config.
	for i, addr := range listeners {
		prefix := fmt.Sprintf("/self%d", i)
		if err := e.c.Put(t.Context(), gatewayroute.Route{ID: routeID(t), PathPrefix: prefix, Upstream: "http://" + addr}); err != nil {
			t.Fatalf("Put over the admin socket: %v", err)
		}
		for _, p := range []string{"/config/", "/config/apps/http/servers", "/id/veil-healthz"} {
			a := call(t, "GET", e.gw.URL+prefix+p)
			if a.status == http.StatusOK || strings.Contains(a.body, `"servers"`) || strings.Contains(a.body, `"listen"`) {
				t.Errorf("GET %s%s (upstream %s) = %d %.200q; want no admin API behind it", prefix, p, addr, a.status, a.body)
			}
		}
	}
}

// TestMetricsOnItsOwnListener: /metrics is not on the gateway's public
// port; its metrics listener serves it.
func TestMetricsOnItsOwnListener(t *testing.T) {
	e := setup(t)
	wantProblem(t, "GET /metrics", call(t, "GET", e.gw.URL+"/metrics"), http.StatusNotFound, "route-not-found")
	a := call(t, "GET", e.gw.MetricsURL+"/metrics")
	if a.status != http.StatusOK || !strings.Contains(a.body, "veil_gateway_") {
		t.Fatalf("GET %s/metrics = %d %.300q; want 200 with veil_gateway_* metrics", e.gw.MetricsURL, a.status, a.body)
	}
	if a := call(t, "GET", e.gw.MetricsURL+"/config/"); a.status != http.StatusNotFound {
		t.Errorf("GET %s/config/ = %d; want 404", e.gw.MetricsURL, a.status)
	}
	// An API may not take the path back.
	if err := e.c.Put(t.Context(), gatewayroute.Route{ID: routeID(t), PathPrefix: "/metrics", Upstream: "http://127.0.0.1:9"}); !errors.Is(err, gatewayroute.ErrInvalidRoute) {
		t.Errorf("Put(/metrics) = %v; want gatewayroute.ErrInvalidRoute", err)
	}
}

// pki is a CA and a client certificate written to PEM files.
type pki struct {
	dir                   string
	caCert, caKey         string
	clientCert, clientKey string
	otherCert, otherKey   string
	ca                    *x509.Certificate
	caSigner              *ecdsa.PrivateKey
	clientPair, otherPair tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	var err error
	p.caSigner, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test gateway admin CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caSigner.PublicKey, p.caSigner)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caCert, p.caKey = p.write(t, "ca", der, p.caSigner)
	p.clientCert, p.clientKey, p.clientPair = p.client(t, "control-plane")
	p.otherCert, p.otherKey, p.otherPair = p.client(t, "someone-else")
	return p
}

// client makes a self-signed client certificate: the remote admin
// endpoint recognizes clients by their certificate's public key.
func (p *pki) client(t *testing.T, name string) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = p.write(t, name, der, key)
	pair, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pair
}

func (p *pki) write(t *testing.T, name string, der []byte, key *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestRemoteAdminMutualTLS: with remote admin on, a control plane on
// another host reaches the admin API over TLS with its client
// certificate and may change the routes through the routes endpoint, and
// only API routes of the shape Put writes; a client without a
// certificate, or with one the gateway does not list, is refused in the
// TLS handshake.
func TestRemoteAdminMutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	remote := testenv.FreeLoopbackAddr(t)
	gw := testenv.Gateway(t, testenv.GatewayEnv(
		"VEIL_GATEWAY_ADMIN_REMOTE_ADDR="+remote,
		"VEIL_GATEWAY_ADMIN_REMOTE_NAMES=127.0.0.1,localhost",
		"VEIL_GATEWAY_ADMIN_REMOTE_CA_CERT="+p.caCert,
		"VEIL_GATEWAY_ADMIN_REMOTE_CA_KEY="+p.caKey,
		"VEIL_GATEWAY_ADMIN_REMOTE_CLIENT_CERTS="+p.clientCert,
		// The test upstream listens on loopback.
		"VEIL_UPSTREAM_ALLOW_CIDRS=127.0.0.0/8",
	))
	adminURL := "https://" + remote
	c, err := gatewayadmin.New(gatewayadmin.Config{AdminURL: adminURL, CAFile: p.caCert, CertFile: p.clientCert, KeyFile: p.clientKey, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// The endpoint's certificate is issued just after start.
	testenv.Deadline(t, 30*time.Second, func() error { return c.Ping(t.Context()) })

	up, _ := upstream(t, "remote")
	id := routeID(t)
	if err := c.Put(t.Context(), gatewayroute.Route{ID: id, PathPrefix: "/remote", Upstream: up.URL}); err != nil {
		t.Fatalf("Put over remote admin: %v", err)
	}
	if a := call(t, "GET", gw.URL+"/remote/x"); a.status != http.StatusOK || a.body != "remote" {
		t.Fatalf("GET /remote/x = %d %q; want 200 remote", a.status, a.body)
	}
	// Caddy starts its admin servers anew with every configuration it
	// loads, the one the Put made included: wait until the remote endpoint
	// answers again before asking it what it refuses.
	testenv.Deadline(t, 30*time.Second, func() error { return c.Ping(t.Context()) })

	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	try := func(certs []tls.Certificate, method, path string, body ...string) (int, error) {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12},
		}}
		defer client.CloseIdleConnections()
		b := "{}"
		if len(body) > 0 {
			b = body[0]
		}
		req, err := http.NewRequestWithContext(t.Context(), method, adminURL+path, strings.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	for name, certs := range map[string][]tls.Certificate{"no certificate": nil, "a certificate not listed": {p.otherPair}} {
		status, err := try(certs, "GET", "/config/apps/http/servers/veil/routes")
		var alert tls.AlertError
		var opErr *net.OpError
		if err == nil || !(errors.As(err, &alert) || errors.As(err, &opErr) || strings.Contains(err.Error(), "tls")) {
			t.Errorf("%s: GET routes = %d, %v; want refused in the TLS handshake", name, status, err)
		}
	}
	// The listed client may use the routes endpoint and nothing else.
	fileServer := `{"@id":"veil-api-evil","match":[{"path":["/evil","/evil/*"]}],"handle":[{"handler":"file_server","root":"/"}],"terminal":true}`
	for _, tt := range []struct{ method, path, body string }{
		{"GET", "/config/", ""},
		{"POST", "/load", ""},
		{"POST", "/stop", ""},
		{"GET", "/config/apps/veil", ""},
		{"GET", "/config/apps/http/servers/veil/routes", ""},
		{"PUT", "/config/apps/http/servers/veil/routes/0", fileServer},
		{"POST", "/config/apps/http/servers/veil/routes", fileServer},
		{"PATCH", "/config/apps/http/servers/veil/routes/0", fileServer},
		{"PUT", "/id/veil-healthz", fileServer},
	} {
		if status, err := try([]tls.Certificate{p.clientPair}, tt.method, tt.path, tt.body); err != nil || status != http.StatusForbidden {
			t.Errorf("%s %s with the control plane's certificate = %d, %v; want 403", tt.method, tt.path, status, err)
		}
	}
	if status, err := try([]tls.Certificate{p.clientPair}, "GET", gatewayadmin.RoutesPath); err != nil || status != http.StatusOK {
		t.Errorf("GET %s with the control plane's certificate = %d, %v; want 200", gatewayadmin.RoutesPath, status, err)
	}
	// Through the routes endpoint, only routes of Put's shape: not a file
	// server (it would read the CA key), not a proxy over Caddy's plain
	// http transport (it would reach the admin socket), not an extra
	// handler in a route Put wrote.
	_, good, err := gatewayroute.Encode(gatewayroute.Route{ID: "veil-api-evil", PathPrefix: "/evil", Upstream: up.URL})
	if err != nil {
		t.Fatal(err)
	}
	plainHTTP := strings.Replace(string(good), `"protocol":"veil"`, `"protocol":"http"`, 1)
	extra := strings.Replace(string(good), `"handle":[`, `"handle":[{"handler":"file_server","root":"/"},`, 1)
	for name, body := range map[string]string{"file_server": fileServer, "plain http transport": plainHTTP, "an extra handler": extra} {
		if body == string(good) {
			t.Fatalf("%s: the test's edit did not change the route", name)
		}
		status, err := try([]tls.Certificate{p.clientPair}, "PUT", gatewayadmin.RoutesPath+"veil-api-evil", body)
		if err != nil || status != http.StatusBadRequest {
			t.Errorf("PUT a route with %s = %d, %v; want 400", name, status, err)
		}
	}
	// Nor can it take the gateway's own routes away.
	for _, own := range []string{gatewayroute.HealthRouteID, gatewayroute.NotFoundRouteID} {
		if status, err := try([]tls.Certificate{p.clientPair}, "DELETE", gatewayadmin.RoutesPath+own); err != nil || status != http.StatusBadRequest {
			t.Errorf("DELETE %s%s = %d, %v; want 400", gatewayadmin.RoutesPath, own, status, err)
		}
	}
	if a := call(t, "GET", gw.URL+"/healthz"); a.status != http.StatusOK {
		t.Errorf("GET /healthz after the refused deletes = %d; want 200", a.status)
	}
	// Nor an operator's own route that carries an id: it is not an API
	// route, so the endpoint neither replaces nor removes it.
	const wallID = "operator-wall"
	wall := `{"@id":"` + wallID + `","match":[{"path":["/wall"]}],"handle":[{"handler":"static_response","status_code":418}],"terminal":true}`
	req, err := http.NewRequestWithContext(t.Context(), "PUT", gw.Admin("/config/apps/http/servers/veil/routes/0"), strings.NewReader(wall))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := gw.AdminClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("add the operator's route over the socket = %d; want 200", resp.StatusCode)
	}
	// A new configuration again: the remote endpoint restarts with it.
	testenv.Deadline(t, 30*time.Second, func() error { return c.Ping(t.Context()) })
	_, over, err := gatewayroute.Encode(gatewayroute.Route{ID: wallID, PathPrefix: "/wall", Upstream: up.URL})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ method, body string }{{"PUT", string(over)}, {"DELETE", ""}} {
		// The endpoint may still be taking over from the last restart: a
		// connection it resets is tried again; the answer must be 409.
		var status int
		testenv.Deadline(t, 30*time.Second, func() error {
			var err error
			status, err = try([]tls.Certificate{p.clientPair}, tt.method, gatewayadmin.RoutesPath+wallID, tt.body)
			return err
		})
		if status != http.StatusConflict {
			t.Errorf("%s %s%s = %d; want 409", tt.method, gatewayadmin.RoutesPath, wallID, status)
		}
	}
	if a := call(t, "GET", gw.URL+"/wall"); a.status != http.StatusTeapot {
		t.Errorf("GET /wall after the refused put and delete = %d; want 418 from the operator's route", a.status)
	}
	if _, err := c.Get(t.Context(), "veil-api-evil"); !errors.Is(err, gatewayadmin.ErrRouteNotFound) {
		t.Errorf("Get(veil-api-evil) after the refused puts = %v; want ErrRouteNotFound", err)
	}
	if a := call(t, "GET", gw.URL+"/evil/etc/passwd"); a.status != http.StatusNotFound {
		t.Errorf("GET /evil/etc/passwd = %d; want 404", a.status)
	}
	// The route Put wrote can be removed again.
	if err := c.Delete(t.Context(), id); err != nil {
		t.Fatalf("Delete over remote admin: %v", err)
	}
	if a := call(t, "GET", gw.URL+"/remote/x"); a.status != http.StatusNotFound {
		t.Errorf("GET /remote/x after Delete = %d; want 404", a.status)
	}
	// The gateway is still up: /stop was refused.
	if a := call(t, "GET", gw.URL+"/healthz"); a.status != http.StatusOK {
		t.Errorf("GET /healthz after the refused /stop = %d; want 200", a.status)
	}
}

// TestClientRemoteAdminNeedsCredentials: an https admin URL without the
// CA and the client certificate is refused when the client is made.
func TestClientRemoteAdminNeedsCredentials(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	for _, cfg := range []gatewayadmin.Config{
		{AdminURL: "https://gateway:2021"},
		{AdminURL: "https://gateway:2021", CAFile: p.caCert},
		{AdminURL: "https://gateway:2021", CertFile: p.clientCert, KeyFile: p.clientKey},
		{AdminURL: "https://gateway:2021", CAFile: p.clientKey, CertFile: p.clientCert, KeyFile: p.clientKey},
		{AdminURL: "unix://relative.sock"},
	} {
		if _, err := gatewayadmin.New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error; want one", cfg)
		}
	}
}

// TestBootstrapAdmin: the bootstrap config's admin part as Caddy gets it.
func TestBootstrapAdmin(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	certs, err := os.ReadFile(p.clientCert)
	if err != nil {
		t.Fatal(err)
	}
	b, err := gatewayadmin.Bootstrap{
		Addr: ":8000", AdminAddr: "unix//run/veil/gateway-admin.sock|0600", MetricsAddr: "127.0.0.1:9183", Veil: map[string]any{},
		Remote: &gatewayadmin.RemoteAdmin{Listen: ":2021", Names: []string{"gateway"}, CACertFile: p.caCert, CAKeyFile: p.caKey, ClientCerts: certs},
	}.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Admin struct {
			Listen string
			Remote struct {
				Listen        string
				AccessControl []struct {
					PublicKeys  []string `json:"public_keys"`
					Permissions []struct{ Paths, Methods []string }
				} `json:"access_control"`
			}
		}
		Apps struct {
			HTTP struct {
				Servers map[string]struct{ Listen []string }
			}
		}
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Listen != "unix//run/veil/gateway-admin.sock|0600" || cfg.Admin.Remote.Listen != ":2021" {
		t.Errorf("admin listen = %q, remote %q", cfg.Admin.Listen, cfg.Admin.Remote.Listen)
	}
	if ac := cfg.Admin.Remote.AccessControl; len(ac) != 1 || len(ac[0].PublicKeys) != 1 || len(ac[0].Permissions) != 1 ||
		!slices.Equal(ac[0].Permissions[0].Paths, []string{gatewayadmin.RoutesPath}) {
		t.Errorf("remote access control = %+v; want the one client, on the routes only", ac)
	}
	if got := cfg.Apps.HTTP.Servers[gatewayadmin.MetricsServer].Listen; !slices.Equal(got, []string{"127.0.0.1:9183"}) {
		t.Errorf("metrics server listens on %v; want 127.0.0.1:9183", got)
	}
	for _, bad := range []gatewayadmin.Bootstrap{
		{Addr: ":8000", AdminAddr: "unix/relative.sock"},
		{Addr: ":8000", AdminAddr: "unix//a.sock", Remote: &gatewayadmin.RemoteAdmin{Listen: ":2021", Names: []string{"gateway"}, CACertFile: p.caCert, CAKeyFile: p.caKey}},
		{Addr: ":8000", AdminAddr: "unix//a.sock", Remote: &gatewayadmin.RemoteAdmin{Listen: ":2021", CACertFile: p.caCert, CAKeyFile: p.caKey, ClientCerts: certs}},
	} {
		if _, err := bad.JSON(); err == nil {
			t.Errorf("%+v.JSON() = nil error; want one", bad)
		}
	}
}
