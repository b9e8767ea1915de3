package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/veil-platform/veil/control-plane/identity"
)

// demoCatalog walks the provider → admin → gateway loop: it starts a small
// upstream, registers it as an API, submits it, approves it as a platform
// admin, waits until the gateway serves it and calls it there.
func demoCatalog(ctx context.Context, stdout io.Writer, step func(string, ...any), cpURL, gatewayURL, jwtSecret string) error {
	client := &http.Client{Timeout: 30 * time.Second}
	step("waiting for the control plane at %s and the gateway at %s", cpURL, gatewayURL)
	if err := waitReady(ctx, client, cpURL+"/readyz", 90*time.Second); err != nil {
		return err
	}
	if err := waitReady(ctx, client, gatewayURL+"/healthz", 90*time.Second); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo upstream: %w", err)
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
	defer upstream.Close()
	upstreamURL := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "  a demo weather upstream listens on %s\n", upstreamURL)

	now := time.Now()
	provider, err := identity.Mint([]byte(jwtSecret), "veil", "veil-control-plane",
		identity.Principal{Subject: "dana", Org: "demo-weather", Role: identity.RoleProvider, Name: "Dana (provider)"}, time.Hour, now)
	if err != nil {
		return err
	}
	admin, err := identity.Mint([]byte(jwtSecret), "veil", "veil-control-plane",
		identity.Principal{Subject: "ops", Org: "veil-platform", Role: identity.RoleAdmin, Name: "Platform operator"}, time.Hour, now)
	if err != nil {
		return err
	}
	call := func(method, path, tok string, body any, out any) (int, error) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, cpURL+path, rd)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return resp.StatusCode, fmt.Errorf("%s %s: %s\n%s", method, path, resp.Status, indentJSON(b))
		}
		if out != nil {
			return resp.StatusCode, json.Unmarshal(b, out)
		}
		return resp.StatusCode, nil
	}

	slug := fmt.Sprintf("weather-%d", now.Unix()%100000)
	step("a provider registers the API: POST %s/v1/apis (slug %s)", cpURL, slug)
	var api struct {
		ID, State, StateReason, GatewayPath string
	}
	var raw map[string]any
	if _, err := call("POST", "/v1/apis", provider, map[string]any{
		"name": "Demo Weather", "slug": slug, "upstream_url": upstreamURL, "version": "1.0",
		"routes":            []map[string]any{{"methods": []string{"GET"}, "path": "/forecast"}},
		"health_check_path": "/health", "visibility": "public",
	}, &raw); err != nil {
		return err
	}
	api.ID = fmt.Sprint(raw["id"])
	fmt.Fprintf(stdout, "  api %s is %v\n", api.ID, raw["state"])

	step("the provider submits it for review: POST /v1/apis/%s/submit", api.ID)
	var approval map[string]any
	if _, err := call("POST", "/v1/apis/"+api.ID+"/submit", provider, map[string]any{"priority": "high", "note": "first release"}, &approval); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "  approval request %v is %v, priority %v, due %v\n", approval["id"], approval["status"], approval["priority"], approval["due_at"])

	step("a platform admin approves it: POST /v1/admin/approvals/%v/approve", approval["id"])
	if _, err := call("POST", fmt.Sprintf("/v1/admin/approvals/%v/approve", approval["id"]), admin, map[string]any{"reason": "reviewed"}, nil); err != nil {
		return err
	}

	step("the registration job checks the upstream, adds the route to the gateway, verifies it, then marks the API active")
	deadline := time.Now().Add(60 * time.Second)
	for {
		var cur map[string]any
		if _, err := call("GET", "/v1/apis/"+api.ID, provider, nil, &cur); err != nil {
			return err
		}
		state := fmt.Sprint(cur["state"])
		if state == "active" {
			fmt.Fprintf(stdout, "  api %s is active at %s%v\n", api.ID, gatewayURL, cur["gateway_path"])
			break
		}
		if state == "failed" || time.Now().After(deadline) {
			return fmt.Errorf("api %s is %s (%v); want active", api.ID, state, cur["state_reason"])
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}

	step("a call through the gateway: GET %s/%s/forecast?city=Lisbon", gatewayURL, slug)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gatewayURL+"/"+slug+"/forecast?city=Lisbon", nil)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("call through the gateway: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("call through the gateway: %s %s", resp.Status, body)
	}
	fmt.Fprintf(stdout, "  %s %s", resp.Status, body)

	var tr struct {
		Data []struct{ From, To, Actor string } `json:"data"`
	}
	if _, err := call("GET", "/v1/apis/"+api.ID+"/transitions", provider, nil, &tr); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "  its recorded life so far:")
	for _, x := range tr.Data {
		fmt.Fprintf(stdout, "    %-16s → %-16s by %s\n", x.From, x.To, x.Actor)
	}
	return nil
}
