package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/control-plane/identity"
)

// demoAPI is the API the catalog walk registered.
type demoAPI struct {
	id   uuid.UUID
	slug string
}

// catalog walks the provider → admin → gateway loop: it starts a small
// upstream, registers it as an API, submits it, approves it as a platform
// admin, waits until the gateway serves it and calls it there.
func (w *walk) catalog(ctx context.Context) (demoAPI, error) {
	c := w.cfg
	w.step("waiting for the control plane at %s and the gateway at %s", c.ControlPlaneURL, c.GatewayURL)
	if err := waitReady(ctx, w.http, c.ControlPlaneURL+"/readyz", 90*time.Second); err != nil {
		return demoAPI{}, err
	}
	if err := waitReady(ctx, w.http, c.GatewayURL+"/healthz", 90*time.Second); err != nil {
		return demoAPI{}, err
	}
	upstreamURL, err := startUpstream(ctx)
	if err != nil {
		return demoAPI{}, err
	}
	fmt.Fprintf(w.out, "  a demo weather upstream listens on %s\n", upstreamURL)

	now := time.Now()
	provider, err := w.mint(identity.Principal{Subject: "dana", Org: "demo-weather", Role: identity.RoleProvider, Name: "Dana (provider)"}, now)
	if err != nil {
		return demoAPI{}, err
	}
	admin, err := w.mint(identity.Principal{Subject: "ops", Org: "veil-platform", Role: identity.RoleAdmin, Name: "Platform operator"}, now)
	if err != nil {
		return demoAPI{}, err
	}
	api := demoAPI{slug: fmt.Sprintf("weather-%d", now.Unix()%100000)}
	if api.id, err = w.registerAPI(ctx, provider, admin, api.slug, upstreamURL); err != nil {
		return demoAPI{}, err
	}
	if err := w.awaitActive(ctx, provider, api.id); err != nil {
		return demoAPI{}, err
	}
	return api, w.callWithoutKey(ctx, provider, api)
}

// startUpstream starts the demo's weather API on a loopback port, serving
// until ctx ends (the calls with a key come later in the walk), and
// returns its URL.
func startUpstream(ctx context.Context) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("demo upstream: %w", err)
	}
	upstream := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/health":
			_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
		case "/forecast":
			fmt.Fprintf(w, `{"city":%q,"forecast":"sunny","temperature_c":21}`+"\n", r.URL.Query().Get("city"))
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":"no such path"}`+"\n")
		}
	})}
	go func() { _ = upstream.Serve(ln) }()
	context.AfterFunc(ctx, func() { _ = upstream.Close() })
	return "http://" + ln.Addr().String(), nil
}

// mint signs a token for p, valid for an hour from now.
func (w *walk) mint(p identity.Principal, now time.Time) (string, error) {
	return identity.Mint([]byte(w.cfg.JWTSecret), "veil", "veil-control-plane", p, time.Hour, now)
}

// registerAPI creates the API as the provider, submits it and approves it
// as the platform admin; it returns the API's id.
func (w *walk) registerAPI(ctx context.Context, provider, admin, slug, upstreamURL string) (uuid.UUID, error) {
	w.step("a provider registers the API: POST %s/v1/apis (slug %s)", w.cfg.ControlPlaneURL, slug)
	created, err := w.cp.CreateAPIWithResponse(ctx, nil, client.APIInput{
		Name: "Demo Weather", Slug: slug, UpstreamUrl: upstreamURL, Version: client.Ptr("1.0"),
		Routes:          &[]client.Route{{Methods: []client.RouteMethods{client.RouteMethodsGET}, Path: "/forecast"}},
		HealthCheckPath: client.Ptr("/health"), Visibility: client.Ptr(client.Public),
	}, client.Bearer(provider))
	if err := client.Check(created, err); err != nil {
		return uuid.Nil, fmt.Errorf("POST /v1/apis: %w", err)
	}
	id := created.JSON201.Id
	fmt.Fprintf(w.out, "  api %s is %v\n", id, created.JSON201.State)

	w.step("the provider submits it for review: POST /v1/apis/%s/submit", id)
	submitted, err := w.cp.SubmitAPIWithResponse(ctx, id, nil, client.SubmitInput{Priority: client.Ptr(client.High), Note: client.Ptr("first release")}, client.Bearer(provider))
	if err := client.Check(submitted, err); err != nil {
		return uuid.Nil, fmt.Errorf("POST /v1/apis/%s/submit: %w", id, err)
	}
	approval := submitted.JSON201
	fmt.Fprintf(w.out, "  approval request %v is %v, priority %v, due %v\n", approval.Id, approval.Status, approval.Priority, approval.DueAt.Format(time.RFC3339Nano))

	w.step("a platform admin approves it: POST /v1/admin/approvals/%v/approve", approval.Id)
	approved, err := w.cp.ApproveApprovalWithResponse(ctx, approval.Id, nil, client.DecisionInput{Reason: client.Ptr("reviewed")}, client.Bearer(admin))
	if err := client.Check(approved, err); err != nil {
		return uuid.Nil, fmt.Errorf("POST /v1/admin/approvals/%v/approve: %w", approval.Id, err)
	}
	return id, nil
}

// awaitActive waits until the registration job has made the API active.
func (w *walk) awaitActive(ctx context.Context, provider string, id uuid.UUID) error {
	w.step("the registration job checks the upstream, adds the route to the gateway, verifies it, then marks the API active")
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := w.cp.GetAPIWithResponse(ctx, id, nil, client.Bearer(provider))
		if err := client.Check(got, err); err != nil {
			return fmt.Errorf("GET /v1/apis/%s: %w", id, err)
		}
		cur := got.JSON200
		if cur.State == "active" {
			fmt.Fprintf(w.out, "  api %s is active at %s%v\n", id, w.cfg.GatewayURL, cur.GatewayPath)
			return nil
		}
		if cur.State == "failed" || time.Now().After(deadline) {
			return fmt.Errorf("api %s is %s (%v); want active", id, cur.State, cur.StateReason)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// callWithoutKey shows the gateway refusing a call without a key, then the
// API's recorded life.
func (w *walk) callWithoutKey(ctx context.Context, provider string, api demoAPI) error {
	w.step("a call through the gateway without an API key: GET %s/%s/forecast?city=Lisbon", w.cfg.GatewayURL, api.slug)
	status, body, err := gatewayCall(ctx, w.http, w.cfg.GatewayURL+"/"+api.slug+"/forecast?city=Lisbon", "")
	if err != nil {
		return err
	}
	if status != http.StatusUnauthorized {
		return fmt.Errorf("call without a key through the gateway: %d %s; want 401", status, body)
	}
	fmt.Fprintf(w.out, "  %d %s", status, body)

	tr, err := w.cp.ListAPITransitionsWithResponse(ctx, api.id, nil, client.Bearer(provider))
	if err := client.Check(tr, err); err != nil {
		return fmt.Errorf("GET /v1/apis/%s/transitions: %w", api.id, err)
	}
	fmt.Fprintln(w.out, "  its recorded life so far:")
	for _, x := range tr.JSON200.Data {
		fmt.Fprintf(w.out, "    %-16s → %-16s by %s\n", x.From, x.To, x.Actor)
	}
	return nil
}

// gatewayCall GETs url through the gateway, with key as a bearer token
// when set, and returns the status and body.
func gatewayCall(ctx context.Context, client *http.Client, url, key string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		// A route written meanwhile reloads Caddy's config, which closes
		// the connection the call reused; the GET is safe to repeat once,
		// on a new connection.
		resp, err = client.Do(req)
	}
	if err != nil {
		return 0, "", fmt.Errorf("call through the gateway: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}
