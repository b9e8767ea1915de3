package gatewayadmin_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/gatewayadmin"
	"github.com/veil-platform/veil/internal/gatewayroute"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/testenv"
)

// env is one real gateway process and a client of its admin API.
type env struct {
	gw *testenv.GatewayProcess
	c  *gatewayadmin.Client
}

func setup(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	// The test upstreams listen on loopback.
	gw := testenv.Gateway(t, testenv.GatewayEnv("VEIL_UPSTREAM_ALLOW_CIDRS=127.0.0.0/8"))
	c, err := gatewayadmin.New(gatewayadmin.Config{AdminURL: gw.AdminURL, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return &env{gw: gw, c: c}
}

// seen is a request as the upstream got it.
type seen struct {
	Path, Query, Host, Method string
	Header                    http.Header
}

// upstream is an httptest server that records the requests it gets and
// answers with its name.
func upstream(t *testing.T, name string) (*httptest.Server, func() []seen) {
	t.Helper()
	var (
		mu  sync.Mutex
		got []seen
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{Path: r.URL.Path, Query: r.URL.RawQuery, Host: r.Host, Method: r.Method, Header: r.Header.Clone()})
		mu.Unlock()
		fmt.Fprint(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []seen {
		mu.Lock()
		defer mu.Unlock()
		return append([]seen(nil), got...)
	}
}

// fresh opens a connection per request: a connection kept alive from before
// a change may still be served by the old config for a moment.
var fresh = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

type answer struct {
	status int
	header http.Header
	body   string
}

func call(t *testing.T, method, url string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A connection the old server accepted in the instant Caddy swaps in a
	// new configuration is closed unanswered (EOF): such a request never
	// reached a handler, so trying it again is safe, and it is what any
	// client does.
	var resp *http.Response
	testenv.Deadline(t, 5*time.Second, func() error {
		resp, err = fresh.Do(req)
		return err
	})
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// wantProblem checks a is a problem of the given status and type.
func wantProblem(t *testing.T, what string, a answer, status int, typ string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: status = %d; want %d (body %q)", what, a.status, status, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("%s: Content-Type = %q; want application/problem+json", what, ct)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(a.body), &p); err != nil {
		t.Fatalf("%s: body %q is not JSON: %v", what, a.body, err)
	}
	if p["type"] != problem.TypeBase+typ || p["status"] != float64(status) || p["title"] == "" {
		t.Fatalf("%s: problem = %v; want type %s%s, status %d and a title", what, p, problem.TypeBase, typ, status)
	}
}

func routeID(t *testing.T) string { return "veil-api-" + t.Name() + "-" + testenv.Suffix() }

func TestPutRoutesThroughTheGateway(t *testing.T) {
	e := setup(t)
	up, requests := upstream(t, "weather")
	id := routeID(t)
	r := gatewayroute.Route{ID: id, PathPrefix: "/weather", Upstream: up.URL + "/v1", Headers: map[string]string{gatewayroute.APIHeader: "api-1", "X-Extra": "{not.a.placeholder}"}}
	if err := e.c.Put(t.Context(), r); err != nil {
		t.Fatalf("Put(%+v) = %v", r, err)
	}
	upHost := strings.TrimPrefix(up.URL, "http://")
	tests := []struct {
		method, path       string
		wantPath, wantQury string
	}{
		{"GET", "/weather/forecast?city=Lyon&days=3", "/v1/forecast", "city=Lyon&days=3"},
		{"GET", "/weather", "/v1", ""},
		{"GET", "/weather/", "/v1/", ""},
		{"POST", "/weather/a/b", "/v1/a/b", ""},
		{"GET", "/Weather/Forecast", "/v1/Forecast", ""},
		{"GET", "/weather/a%20b", "/v1/a b", ""},
	}
	for i, tt := range tests {
		a := call(t, tt.method, e.gw.URL+tt.path)
		if a.status != http.StatusOK || a.body != "weather" {
			t.Fatalf("%s %s = %d %q; want 200 from the upstream", tt.method, tt.path, a.status, a.body)
		}
		if got := a.header.Get(gatewayroute.APIHeader); got != "api-1" {
			t.Errorf("%s %s: response %s = %q; want api-1", tt.method, tt.path, gatewayroute.APIHeader, got)
		}
		got := requests()
		if len(got) != i+1 {
			t.Fatalf("upstream got %d requests; want %d", len(got), i+1)
		}
		s := got[i]
		if s.Path != tt.wantPath || s.Query != tt.wantQury || s.Method != tt.method {
			t.Errorf("%s %s reached the upstream as %s %s?%s; want %s %s?%s", tt.method, tt.path, s.Method, s.Path, s.Query, tt.method, tt.wantPath, tt.wantQury)
		}
		if s.Host != upHost {
			t.Errorf("%s %s: upstream Host = %q; want %q", tt.method, tt.path, s.Host, upHost)
		}
		if got := s.Header.Get(gatewayroute.APIHeader); got != "api-1" {
			t.Errorf("%s %s: upstream %s = %q; want api-1", tt.method, tt.path, gatewayroute.APIHeader, got)
		}
		if got := s.Header.Get("X-Extra"); got != "{not.a.placeholder}" {
			t.Errorf("%s %s: upstream X-Extra = %q; want {not.a.placeholder}", tt.method, tt.path, got)
		}
	}
	// Neighbours of the prefix are not the route's.
	for _, p := range []string{"/weatherman", "/", "/v1/forecast"} {
		wantProblem(t, "GET "+p, call(t, "GET", e.gw.URL+p), http.StatusNotFound, "route-not-found")
	}
}

func TestUpstreamAtItsRoot(t *testing.T) {
	e := setup(t)
	up, requests := upstream(t, "root")
	if err := e.c.Put(t.Context(), gatewayroute.Route{ID: routeID(t), PathPrefix: "/tools/maps", Upstream: up.URL + "/"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{{"/tools/maps", "/"}, {"/tools/maps/tile/1", "/tile/1"}} {
		if a := call(t, "GET", e.gw.URL+tt.path); a.status != http.StatusOK {
			t.Fatalf("GET %s = %d; want 200", tt.path, a.status)
		}
		got := requests()
		if p := got[len(got)-1].Path; p != tt.want {
			t.Errorf("GET %s reached the upstream as %s; want %s", tt.path, p, tt.want)
		}
	}
}

func TestGatewayOwnRoutes(t *testing.T) {
	e := setup(t)
	for _, p := range []string{"/healthz", "/readyz"} {
		if a := call(t, "GET", e.gw.URL+p); a.status != http.StatusOK || a.body != "ok" {
			t.Errorf("GET %s = %d %q; want 200 ok", p, a.status, a.body)
		}
	}
	wantProblem(t, "GET /nothing/here", call(t, "GET", e.gw.URL+"/nothing/here"), http.StatusNotFound, "route-not-found")
	wantProblem(t, "DELETE /", call(t, "DELETE", e.gw.URL+"/"), http.StatusNotFound, "route-not-found")
	if err := e.c.Ping(t.Context()); err != nil {
		t.Fatalf("Ping() = %v", err)
	}
}

func TestUpstreamDownIsProblem(t *testing.T) {
	e := setup(t)
	up, _ := upstream(t, "gone")
	up.Close()
	if err := e.c.Put(t.Context(), gatewayroute.Route{ID: routeID(t), PathPrefix: "/gone", Upstream: up.URL}); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, "GET /gone/x", call(t, "GET", e.gw.URL+"/gone/x"), http.StatusBadGateway, "gateway-error")
}

func TestPutReplacesInPlace(t *testing.T) {
	e := setup(t)
	a, _ := upstream(t, "a")
	b, _ := upstream(t, "b")
	id := routeID(t)
	first := gatewayroute.Route{ID: id, PathPrefix: "/svc", Upstream: a.URL, Headers: map[string]string{gatewayroute.APIHeader: "x"}}
	if err := e.c.Put(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	other := gatewayroute.Route{ID: routeID(t), PathPrefix: "/other", Upstream: a.URL}
	if err := e.c.Put(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	second := gatewayroute.Route{ID: id, PathPrefix: "/svc2", Upstream: b.URL + "/api", Methods: []string{"get"}}
	if err := e.c.Put(t.Context(), second); err != nil {
		t.Fatal(err)
	}
	// Again unchanged: no error, nothing new.
	if err := e.c.Put(t.Context(), second); err != nil {
		t.Fatal(err)
	}
	if got := call(t, "GET", e.gw.URL+"/svc2/x"); got.body != "b" {
		t.Fatalf("GET /svc2/x answered %d %q; want b", got.status, got.body)
	}
	wantProblem(t, "GET /svc/x", call(t, "GET", e.gw.URL+"/svc/x"), http.StatusNotFound, "route-not-found")
	routes, err := e.c.List(t.Context(), "veil-api-")
	if err != nil {
		t.Fatal(err)
	}
	want := []gatewayroute.Route{
		{ID: other.ID, PathPrefix: "/other", Upstream: a.URL},
		{ID: id, PathPrefix: "/svc2", Upstream: b.URL + "/api", Methods: []string{"GET"}},
	}
	if !reflect.DeepEqual(routes, want) {
		t.Fatalf("List() = %+v; want %+v (the replaced route kept its place behind the newer one)", routes, want)
	}
}

func TestConcurrentPuts(t *testing.T) {
	e := setup(t)
	up, _ := upstream(t, "up")
	same := routeID(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			errs <- e.c.Put(t.Context(), gatewayroute.Route{ID: same, PathPrefix: "/same", Upstream: fmt.Sprintf("%s/v%d", up.URL, i)})
		})
		wg.Go(func() {
			errs <- e.c.Put(t.Context(), gatewayroute.Route{ID: fmt.Sprintf("%s-%d", same, i), PathPrefix: fmt.Sprintf("/each%d", i), Upstream: up.URL})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Put = %v", err)
		}
	}
	routes, err := e.c.List(t.Context(), same)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, r := range routes {
		count[r.ID]++
	}
	if count[same] != 1 {
		t.Errorf("routes with id %s = %d; want 1", same, count[same])
	}
	for i := range n {
		if id := fmt.Sprintf("%s-%d", same, i); count[id] != 1 {
			t.Errorf("routes with id %s = %d; want 1 (no Put may be lost)", id, count[id])
		}
	}
	if len(routes) != n+1 {
		t.Errorf("List(%s) returned %d routes; want %d", same, len(routes), n+1)
	}
}

func TestDelete(t *testing.T) {
	e := setup(t)
	up, _ := upstream(t, "up")
	id := routeID(t)
	if err := e.c.Put(t.Context(), gatewayroute.Route{ID: id, PathPrefix: "/bye", Upstream: up.URL}); err != nil {
		t.Fatal(err)
	}
	if a := call(t, "GET", e.gw.URL+"/bye"); a.status != http.StatusOK {
		t.Fatalf("GET /bye before Delete = %d; want 200", a.status)
	}
	if err := e.c.Delete(t.Context(), id); err != nil {
		t.Fatalf("Delete(%s) = %v", id, err)
	}
	wantProblem(t, "GET /bye after Delete", call(t, "GET", e.gw.URL+"/bye"), http.StatusNotFound, "route-not-found")
	if err := e.c.Delete(t.Context(), id); err != nil {
		t.Fatalf("Delete(%s) again = %v; want nil", id, err)
	}
	if _, err := e.c.Get(t.Context(), id); !errors.Is(err, gatewayadmin.ErrRouteNotFound) {
		t.Fatalf("Get(%s) after Delete = %v; want ErrRouteNotFound", id, err)
	}
	// The gateway's own routes survive.
	if a := call(t, "GET", e.gw.URL+"/healthz"); a.status != http.StatusOK {
		t.Fatalf("GET /healthz = %d; want 200", a.status)
	}
}

func TestGetAndList(t *testing.T) {
	e := setup(t)
	routes := []gatewayroute.Route{
		{ID: "veil-api-a-1", PathPrefix: "/a1", Upstream: "http://127.0.0.1:9/v1", Headers: map[string]string{gatewayroute.APIHeader: "a-1"}},
		{ID: "veil-api-a-2", PathPrefix: "/a/two", Upstream: "https://api.example.com", Methods: []string{"GET", "POST"}},
		{ID: "veil-api-b-1", PathPrefix: "/b1", Upstream: "https://api.example.com:8443/base/path", Headers: map[string]string{"X-One": "1", "X-Two": "a}b{"}},
		{ID: "other-1", PathPrefix: "/o1", Upstream: "http://[::1]:9/"},
		{ID: "veil-api-k-1", PathPrefix: "/k1", Upstream: "http://127.0.0.1:9",
			Veil: &gatewayroute.Veil{APIID: "k-1", RouteTemplates: []string{"/forecast/{city}", "/alerts"}}},
	}
	for _, r := range routes {
		if err := e.c.Put(t.Context(), r); err != nil {
			t.Fatalf("Put(%+v) = %v", r, err)
		}
	}
	routes[3].Upstream = "http://[::1]:9"
	for _, want := range routes {
		got, err := e.c.Get(t.Context(), want.ID)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Get(%s) = %+v, %v; want %+v", want.ID, got, err, want)
		}
	}
	if _, err := e.c.Get(t.Context(), "veil-api-missing"); !errors.Is(err, gatewayadmin.ErrRouteNotFound) {
		t.Errorf("Get(missing) = %v; want ErrRouteNotFound", err)
	}
	tests := []struct {
		prefix string
		want   []string // newest first
	}{
		{"veil-api-a-", []string{"veil-api-a-2", "veil-api-a-1"}},
		{"veil-api-", []string{"veil-api-k-1", "veil-api-b-1", "veil-api-a-2", "veil-api-a-1"}},
		{"", []string{"veil-api-k-1", "other-1", "veil-api-b-1", "veil-api-a-2", "veil-api-a-1"}},
		{"veil-api-c", []string{}},
	}
	for _, tt := range tests {
		got, err := e.c.List(t.Context(), tt.prefix)
		if err != nil {
			t.Fatalf("List(%q) = %v", tt.prefix, err)
		}
		ids := []string{}
		for _, r := range got {
			ids = append(ids, r.ID)
		}
		if !reflect.DeepEqual(ids, tt.want) {
			t.Errorf("List(%q) = %v; want %v", tt.prefix, ids, tt.want)
		}
	}
}

func TestUnrecognizedRoute(t *testing.T) {
	e := setup(t)
	// A route put by hand through the admin API.
	body := `{"@id":"veil-api-hand","match":[{"path":["/hand"]}],"handle":[{"handler":"static_response","body":"hi"}]}`
	req, err := http.NewRequestWithContext(t.Context(), "PUT", e.gw.Admin("/config/apps/http/servers/veil/routes/0"), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.gw.AdminClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("put a route by hand = %v, %v", resp, err)
	}
	resp.Body.Close()
	if err := e.c.Put(t.Context(), gatewayroute.Route{ID: "veil-api-ours", PathPrefix: "/ours", Upstream: "http://127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Get(t.Context(), "veil-api-hand"); !errors.Is(err, gatewayroute.ErrUnrecognizedRoute) {
		t.Errorf("Get(veil-api-hand) = %v; want gatewayroute.ErrUnrecognizedRoute", err)
	}
	routes, err := e.c.List(t.Context(), "veil-api-")
	if !errors.Is(err, gatewayroute.ErrUnrecognizedRoute) || !strings.Contains(err.Error(), "veil-api-hand") {
		t.Errorf("List() error = %v; want gatewayroute.ErrUnrecognizedRoute naming veil-api-hand", err)
	}
	if len(routes) != 1 || routes[0].ID != "veil-api-ours" {
		t.Errorf("List() = %+v; want the one route Put wrote", routes)
	}
	// Put takes it over; Delete removes it.
	if err := e.c.Put(t.Context(), gatewayroute.Route{ID: "veil-api-hand", PathPrefix: "/hand", Upstream: "http://127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Get(t.Context(), "veil-api-hand"); err != nil {
		t.Errorf("Get(veil-api-hand) after Put = %v", err)
	}
}

func TestMethods(t *testing.T) {
	e := setup(t)
	up, _ := upstream(t, "read-only")
	if err := e.c.Put(t.Context(), gatewayroute.Route{ID: routeID(t), PathPrefix: "/ro", Upstream: up.URL, Methods: []string{"GET", "HEAD"}}); err != nil {
		t.Fatal(err)
	}
	if a := call(t, "GET", e.gw.URL+"/ro/x"); a.status != http.StatusOK || a.body != "read-only" {
		t.Fatalf("GET /ro/x = %d %q; want 200 read-only", a.status, a.body)
	}
	for _, m := range []string{"POST", "DELETE", "PUT"} {
		wantProblem(t, m+" /ro/x", call(t, m, e.gw.URL+"/ro/x"), http.StatusNotFound, "route-not-found")
	}
}

func TestAdminErrors(t *testing.T) {
	e := setup(t)
	c, err := gatewayadmin.New(gatewayadmin.Config{AdminURL: e.gw.AdminURL, Server: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	var ae *gatewayadmin.AdminError
	if err := c.Put(t.Context(), gatewayroute.Route{ID: "veil-api-x", PathPrefix: "/x", Upstream: "http://127.0.0.1:9"}); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Message == "" {
		t.Fatalf("Put on a missing server = %v; want an AdminError with status 400 and Caddy's message", err)
	}
	if err := c.Ping(t.Context()); !errors.As(err, &ae) {
		t.Fatalf("Ping on a missing server = %v; want an AdminError", err)
	}
}

func TestPutRefusesInvalidRoutes(t *testing.T) {
	t.Parallel()
	c, err := gatewayadmin.New(gatewayadmin.Config{AdminURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ok := gatewayroute.Route{ID: "veil-api-1", PathPrefix: "/ok", Upstream: "http://127.0.0.1:9"}
	tests := []struct {
		name   string
		change func(r *gatewayroute.Route)
	}{
		{"empty id", func(r *gatewayroute.Route) { r.ID = "" }},
		{"gateway's id", func(r *gatewayroute.Route) { r.ID = gatewayroute.NotFoundRouteID }},
		{"root prefix", func(r *gatewayroute.Route) { r.PathPrefix = "/" }},
		{"prefix without slash", func(r *gatewayroute.Route) { r.PathPrefix = "ok" }},
		{"prefix with trailing slash", func(r *gatewayroute.Route) { r.PathPrefix = "/ok/" }},
		{"prefix with wildcard", func(r *gatewayroute.Route) { r.PathPrefix = "/ok*" }},
		{"prefix with placeholder", func(r *gatewayroute.Route) { r.PathPrefix = "/{env.HOME}" }},
		{"prefix with dot segment", func(r *gatewayroute.Route) { r.PathPrefix = "/a/../b" }},
		{"health path", func(r *gatewayroute.Route) { r.PathPrefix = "/Healthz" }},
		{"relative upstream", func(r *gatewayroute.Route) { r.Upstream = "/v1" }},
		{"ftp upstream", func(r *gatewayroute.Route) { r.Upstream = "ftp://example.com" }},
		{"upstream with credentials", func(r *gatewayroute.Route) { r.Upstream = "http://u:p@example.com" }},
		{"upstream with query", func(r *gatewayroute.Route) { r.Upstream = "http://example.com/?a=b" }},
		{"bad method", func(r *gatewayroute.Route) { r.Methods = []string{"GE T"} }},
		{"host header", func(r *gatewayroute.Route) { r.Headers = map[string]string{"host": "x"} }},
		{"bad header name", func(r *gatewayroute.Route) { r.Headers = map[string]string{"X Y": "x"} }},
		{"header with newline", func(r *gatewayroute.Route) { r.Headers = map[string]string{"X-Y": "a\r\nb"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.change(&r)
			if err := c.Put(t.Context(), r); !errors.Is(err, gatewayroute.ErrInvalidRoute) {
				t.Fatalf("Put(%+v) = %v; want gatewayroute.ErrInvalidRoute", r, err)
			}
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []gatewayadmin.Config{
		{AdminURL: ""},
		{AdminURL: "127.0.0.1:2019"},
		{AdminURL: "http://127.0.0.1:2019", Server: "a/b"},
	} {
		if _, err := gatewayadmin.New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error; want one", cfg)
		}
	}
}

func TestBootstrapRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, b := range []gatewayadmin.Bootstrap{
		{AdminAddr: "127.0.0.1:2019"},
		{Addr: ":8000"},
		{Addr: ":8000", AdminAddr: "127.0.0.1:2019", LogLevel: "loud"},
		{Addr: ":8000", AdminAddr: "127.0.0.1:2019", Server: "a b"},
	} {
		if _, err := b.JSON(); err == nil {
			t.Errorf("%+v.JSON() = nil error; want one", b)
		}
	}
}
