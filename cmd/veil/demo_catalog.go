package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/enforcement"
)

// demoCatalog walks the provider → admin → gateway loop: it starts a small
// upstream, registers it as an API, submits it, approves it as a platform
// admin, waits until the gateway serves it and calls it there. It returns
// the API's id.
func demoCatalog(ctx context.Context, stdout io.Writer, step func(string, ...any), cpURL, gatewayURL, jwtSecret string) (apiID, slug string, err error) {
	client := &http.Client{Timeout: 30 * time.Second}
	step("waiting for the control plane at %s and the gateway at %s", cpURL, gatewayURL)
	if err := waitReady(ctx, client, cpURL+"/readyz", 90*time.Second); err != nil {
		return "", "", err
	}
	if err := waitReady(ctx, client, gatewayURL+"/healthz", 90*time.Second); err != nil {
		return "", "", err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", fmt.Errorf("demo upstream: %w", err)
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
	// It serves the rest of the demo (the calls with a key come later).
	context.AfterFunc(ctx, func() { _ = upstream.Close() })
	upstreamURL := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "  a demo weather upstream listens on %s\n", upstreamURL)

	now := time.Now()
	provider, err := identity.Mint([]byte(jwtSecret), "veil", "veil-control-plane",
		identity.Principal{Subject: "dana", Org: "demo-weather", Role: identity.RoleProvider, Name: "Dana (provider)"}, time.Hour, now)
	if err != nil {
		return "", "", err
	}
	admin, err := identity.Mint([]byte(jwtSecret), "veil", "veil-control-plane",
		identity.Principal{Subject: "ops", Org: "veil-platform", Role: identity.RoleAdmin, Name: "Platform operator"}, time.Hour, now)
	if err != nil {
		return "", "", err
	}
	cp := demoCaller{client: client, base: cpURL}
	call := func(method, path, tok string, body, out any) (int, error) {
		return cp.call(ctx, method, path, tok, body, out)
	}

	slug = fmt.Sprintf("weather-%d", now.Unix()%100000)
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
		return "", "", err
	}
	api.ID = fmt.Sprint(raw["id"])
	fmt.Fprintf(stdout, "  api %s is %v\n", api.ID, raw["state"])

	step("the provider submits it for review: POST /v1/apis/%s/submit", api.ID)
	var approval map[string]any
	if _, err := call("POST", "/v1/apis/"+api.ID+"/submit", provider, map[string]any{"priority": "high", "note": "first release"}, &approval); err != nil {
		return "", "", err
	}
	fmt.Fprintf(stdout, "  approval request %v is %v, priority %v, due %v\n", approval["id"], approval["status"], approval["priority"], approval["due_at"])

	step("a platform admin approves it: POST /v1/admin/approvals/%v/approve", approval["id"])
	if _, err := call("POST", fmt.Sprintf("/v1/admin/approvals/%v/approve", approval["id"]), admin, map[string]any{"reason": "reviewed"}, nil); err != nil {
		return "", "", err
	}

	step("the registration job checks the upstream, adds the route to the gateway, verifies it, then marks the API active")
	deadline := time.Now().Add(60 * time.Second)
	for {
		var cur map[string]any
		if _, err := call("GET", "/v1/apis/"+api.ID, provider, nil, &cur); err != nil {
			return "", "", err
		}
		state := fmt.Sprint(cur["state"])
		if state == "active" {
			fmt.Fprintf(stdout, "  api %s is active at %s%v\n", api.ID, gatewayURL, cur["gateway_path"])
			break
		}
		if state == "failed" || time.Now().After(deadline) {
			return "", "", fmt.Errorf("api %s is %s (%v); want active", api.ID, state, cur["state_reason"])
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}

	step("a call through the gateway without an API key: GET %s/%s/forecast?city=Lisbon", gatewayURL, slug)
	status, body, err := gatewayCall(ctx, client, gatewayURL+"/"+slug+"/forecast?city=Lisbon", "")
	if err != nil {
		return "", "", err
	}
	if status != http.StatusUnauthorized {
		return "", "", fmt.Errorf("call without a key through the gateway: %d %s; want 401", status, body)
	}
	fmt.Fprintf(stdout, "  %d %s", status, body)

	var tr struct {
		Data []struct{ From, To, Actor string } `json:"data"`
	}
	if _, err := call("GET", "/v1/apis/"+api.ID+"/transitions", provider, nil, &tr); err != nil {
		return "", "", err
	}
	fmt.Fprintln(stdout, "  its recorded life so far:")
	for _, x := range tr.Data {
		fmt.Fprintf(stdout, "    %-16s → %-16s by %s\n", x.From, x.To, x.Actor)
	}
	return api.ID, slug, nil
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
		return 0, "", fmt.Errorf("call through the gateway: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// demoCaller calls the control plane's REST API with a bearer token.
type demoCaller struct {
	client *http.Client
	base   string
}

// call sends body as JSON and decodes the answer into out; an answer of 300
// or more is an error carrying its problem details.
func (c demoCaller) call(ctx context.Context, method, path, tok string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
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

// demoKeys walks the consumer's side of the API apiID: the provider adds a
// plan, a consumer organization subscribes and issues an API key, the sync
// job writes the key's record to Redis, which makes it active, and the
// records are read back the way the gateway will read them.
func demoKeys(ctx context.Context, stdout io.Writer, step func(string, ...any), cpURL, gatewayURL, slug, jwtSecret, apiID, redisAddr string, redisDB int, mailpitURL string) error {
	cp := demoCaller{client: &http.Client{Timeout: 30 * time.Second}, base: cpURL}
	call := func(method, path, tok string, body, out any) (int, error) {
		return cp.call(ctx, method, path, tok, body, out)
	}
	now := time.Now()
	provider, err := identity.Mint([]byte(jwtSecret), "veil", "veil-control-plane",
		identity.Principal{Subject: "dana", Org: "demo-weather", Role: identity.RoleProvider, Name: "Dana (provider)"}, time.Hour, now)
	if err != nil {
		return err
	}
	// A user of its own each run: the address of a user is the one it was
	// first seen with.
	sam := fmt.Sprintf("sam-%d", now.UnixNano())
	consumerEmail := sam + "@demo-travel.example"
	consumer, err := identity.Mint([]byte(jwtSecret), "veil", "veil-control-plane",
		identity.Principal{Subject: sam, Org: "demo-travel", Role: identity.RoleConsumer, Name: "Sam (consumer)", Email: consumerEmail, EmailVerified: true}, time.Hour, now)
	if err != nil {
		return err
	}

	step("the provider offers a plan: POST /v1/apis/%s/plans", apiID)
	var plan struct {
		ID      string `json:"id"`
		Name    string `json:"name"`
		Status  string `json:"status"`
		Current struct {
			Version int                 `json:"version"`
			Terms   subscriptions.Terms `json:"terms"`
		} `json:"current_version"`
	}
	if _, err := call("POST", "/v1/apis/"+apiID+"/plans", provider, map[string]any{
		"name": "Starter", "slug": "starter", "description": "10,000 requests a month, 10 a second",
		"terms": map[string]any{"type": "subscription", "currency": "USD", "interval": "month", "base_fee": "0",
			"quota_requests": 10000, "quota_hard": true, "rate_per_second": 10},
	}, &plan); err != nil {
		return err
	}
	terms := plan.Current.Terms
	quota := "soft"
	if terms.QuotaHard {
		quota = "hard"
	}
	fmt.Fprintf(stdout, "  plan %s %q (%s), version %d: %s %s a %s, %s requests a %s (%s quota), %s requests/s\n",
		plan.ID, plan.Name, plan.Status, plan.Current.Version, terms.BaseFee, terms.Currency, terms.Interval,
		orUnlimited(terms.QuotaRequests), terms.Interval, quota, orUnlimited(terms.RatePerSecond))

	step("another organization (demo-travel, role consumer) subscribes: POST /v1/subscriptions")
	var sub struct {
		ID                 string    `json:"id"`
		Status             string    `json:"status"`
		PlanVersion        int       `json:"plan_version"`
		CurrentPeriodStart time.Time `json:"current_period_start"`
		CurrentPeriodEnd   time.Time `json:"current_period_end"`
		MaxActiveKeys      int       `json:"max_active_keys"`
	}
	if _, err := call("POST", "/v1/subscriptions", consumer, map[string]any{"plan_id": plan.ID}, &sub); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "  subscription %s is %s on plan version %d, period %s → %s, up to %d live keys\n",
		sub.ID, sub.Status, sub.PlanVersion, sub.CurrentPeriodStart.Format(time.RFC3339), sub.CurrentPeriodEnd.Format(time.RFC3339), sub.MaxActiveKeys)

	step("the consumer issues an API key: POST /v1/subscriptions/%s/keys", sub.ID)
	type keyView struct {
		ID     string `json:"id"`
		Masked string `json:"masked"`
		State  string `json:"state"`
		Key    string `json:"key"`
	}
	var key keyView
	issued := time.Now()
	if _, err := call("POST", "/v1/subscriptions/"+sub.ID+"/keys", consumer, map[string]any{"name": "travel-app production"}, &key); err != nil {
		return err
	}
	if key.Key == "" {
		return fmt.Errorf("POST /v1/subscriptions/%s/keys answered no key", sub.ID)
	}
	fmt.Fprintf(stdout, "  key %s  %s  %s (the gateway does not hold it yet)\n", key.ID, key.Masked, key.State)
	fmt.Fprintf(stdout, "  the key itself, SHOWN ONCE: Postgres and Redis keep only its SHA-256, no later answer carries it\n    %s\n", key.Key)

	step("the sync job writes the key's record to Redis; only then is the key active: GET /v1/keys/%s", key.ID)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var cur keyView
		if _, err := call("GET", "/v1/keys/"+key.ID, consumer, nil, &cur); err != nil {
			return err
		}
		if cur.Key != "" {
			return fmt.Errorf("GET /v1/keys/%s answered the plaintext key", key.ID)
		}
		if cur.State == "active" {
			fmt.Fprintf(stdout, "  key %s is active, %s after it was issued\n", cur.ID, time.Since(issued).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("key %s is %s after %s; want active", key.ID, cur.State, time.Since(issued).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}

	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{redisAddr}, SelectDB: redisDB, DisableCache: true})
	if err != nil {
		return fmt.Errorf("connect to Redis at %s: %w", redisAddr, err)
	}
	defer rc.Close()
	records := enforcement.New(rc)
	hash := enforcement.Hash(key.Key)
	step("the records as the gateway reads them from Redis (database %d)", redisDB)
	kr, err := records.GetKey(ctx, hash)
	if err != nil {
		return fmt.Errorf("read the key record: %w", err)
	}
	// The subscription's record has its own sync job: wait for it too.
	var sr enforcement.SubscriptionRecord
	for deadline := time.Now().Add(30 * time.Second); ; {
		if sr, err = records.GetSubscription(ctx, sub.ID); err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("read the subscription record: %w", err)
	}
	if kr.Status != enforcement.KeyActive || kr.KeyID != key.ID || kr.SubscriptionID != sub.ID || kr.APIID != apiID {
		return fmt.Errorf("key record = %+v; want key %s of subscription %s, api %s, active", kr, key.ID, sub.ID, apiID)
	}
	fmt.Fprintf(stdout, "  %s   (named by the key's hex SHA-256, not the key)\n", enforcement.KeyName(hash))
	fmt.Fprintf(stdout, "    %-16s %s\n", "status", kr.Status)
	fmt.Fprintf(stdout, "    %-16s %s\n", "key_id", kr.KeyID)
	fmt.Fprintf(stdout, "    %-16s %s\n", "subscription_id", kr.SubscriptionID)
	fmt.Fprintf(stdout, "    %-16s %s\n", "api_id", kr.APIID)
	fmt.Fprintf(stdout, "    %-16s %s, %s\n", "methods, routes", orAll(kr.Methods), orAll(kr.Routes))
	fmt.Fprintf(stdout, "    %-16s %s\n", "rate limits", rates(kr.RatePerSecond, kr.RatePerMinute, "none of its own: the subscription's apply"))
	fmt.Fprintf(stdout, "    %-16s %s\n", "expires_at", orNever(kr.ExpiresAt))
	fmt.Fprintf(stdout, "    %-16s %s\n", "grace_until", orNone(kr.GraceUntil))
	fmt.Fprintf(stdout, "    %-16s %d\n", "version", kr.Version)
	hard := "soft: overage is billed"
	if sr.QuotaHard {
		hard = "hard: blocked over quota"
	}
	quota = "unlimited"
	if sr.QuotaRequests >= 0 {
		quota = fmt.Sprintf("%d requests (%s)", sr.QuotaRequests, hard)
	}
	fmt.Fprintf(stdout, "  %s\n", enforcement.SubscriptionName(sr.ID))
	fmt.Fprintf(stdout, "    %-16s %s\n", "status", sr.Status)
	fmt.Fprintf(stdout, "    %-16s %s\n", "api_id", sr.APIID)
	fmt.Fprintf(stdout, "    %-16s %s\n", "plan_id", sr.PlanID)
	fmt.Fprintf(stdout, "    %-16s %s → %s\n", "period", sr.PeriodStart.Format(time.RFC3339), sr.PeriodEnd.Format(time.RFC3339))
	fmt.Fprintf(stdout, "    %-16s %s\n", "quota", quota)
	fmt.Fprintf(stdout, "    %-16s %s\n", "rate limits", rates(sr.RatePerSecond, sr.RatePerMinute, "none"))
	fmt.Fprintf(stdout, "    %-16s %d\n", "version", sr.Version)

	client := &http.Client{Timeout: 30 * time.Second}
	url := gatewayURL + "/" + slug + "/forecast?city=Lisbon"
	step("the same call with the key: GET %s (Authorization: Bearer %s)", url, key.Masked)
	status, body, err := gatewayCall(ctx, client, url, key.Key)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("call with the key through the gateway: %d %s; want 200", status, body)
	}
	fmt.Fprintf(stdout, "  %d %s", status, body)

	step("a burst of 30 calls with the key: the plan allows 10 per second")
	counts := map[int]int{}
	for range 30 {
		status, _, err := gatewayCall(ctx, client, url, key.Key)
		if err != nil {
			return err
		}
		counts[status]++
	}
	fmt.Fprintf(stdout, "  200: %d, 429 rate-limited: %d\n", counts[http.StatusOK], counts[http.StatusTooManyRequests])
	if counts[http.StatusTooManyRequests] == 0 {
		return fmt.Errorf("a burst of 30 calls at 10 per second was never limited: %v", counts)
	}
	return demoQuota(ctx, stdout, step, call, client, url, key.Key, apiID, sub.ID, provider, consumer, consumerEmail, mailpitURL,
		int64(1+counts[http.StatusOK]))
}

// demoQuota moves the demo's subscription to a small hard quota, runs it
// into the quota until the gateway refuses, shows the quota as the control
// plane reports it, and lifts the block with the provider's credit.
func demoQuota(ctx context.Context, stdout io.Writer, step func(string, ...any),
	call func(method, path, tok string, body, out any) (int, error), client *http.Client, url, key, apiID, subID, provider, consumer, consumerEmail, mailpitURL string, admittedBefore int64) error {
	const sandboxQuota = 50
	// The consumer listens for its quota webhooks.
	hooks := &demoWebhooks{}
	hookSrv := httptest.NewServer(hooks)
	defer hookSrv.Close()
	if _, err := call("POST", "/v1/webhooks", consumer, map[string]any{"url": hookSrv.URL, "event_types": []string{"quota.threshold_crossed"}}, nil); err != nil {
		return err
	}
	step("the provider adds a Sandbox plan (%d requests a month, hard quota) and the consumer moves to it: POST /v1/subscriptions/%s/plan", sandboxQuota, subID)
	var plan struct {
		ID string `json:"id"`
	}
	if _, err := call("POST", "/v1/apis/"+apiID+"/plans", provider, map[string]any{
		"name": "Sandbox", "slug": "sandbox", "status": "active", "description": "50 requests a month, to try the API",
		"terms": map[string]any{"currency": "USD", "base_fee": "0", "quota_requests": sandboxQuota, "quota_hard": true, "rate_per_second": 100},
	}, &plan); err != nil {
		return err
	}
	if _, err := call("POST", "/v1/subscriptions/"+subID+"/plan", consumer, map[string]any{"plan_id": plan.ID}, nil); err != nil {
		return err
	}
	type quotaView struct {
		Used              int64      `json:"used"`
		Limit             *int64     `json:"limit"`
		Remaining         *int64     `json:"remaining"`
		ThresholdsCrossed []int      `json:"thresholds_crossed"`
		Blocked           bool       `json:"blocked"`
		BlockedUntil      *time.Time `json:"blocked_until"`
		ResetsAt          time.Time  `json:"resets_at"`
	}
	// The processor counts the calls the gateway admitted so far within a
	// batch (refusals never count).
	var q quotaView
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := call("GET", "/v1/subscriptions/"+subID+"/quota", consumer, nil, &q); err != nil {
			return err
		}
		if q.Limit != nil && *q.Limit == sandboxQuota && q.Used == admittedBefore {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("quota after the plan change = %+v; want a limit of %d and the %d calls admitted so far counted", q, sandboxQuota, admittedBefore)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(stdout, "  quota: used %d of %d this period (the calls the gateway admitted so far; its refusals never count)\n", q.Used, *q.Limit)

	step("the consumer keeps calling, one call every 20 ms, until the gateway refuses")
	var (
		admitted    int
		usedUpAt    time.Time
		refusal     string
		tick        = time.NewTicker(20 * time.Millisecond)
		giveUpAfter = time.Now().Add(time.Minute)
	)
	defer tick.Stop()
	for refusal == "" {
		<-tick.C
		if time.Now().After(giveUpAfter) {
			return fmt.Errorf("the gateway still admits calls after %d more: the quota is not enforced", admitted)
		}
		status, body, err := gatewayCall(ctx, client, url, key)
		if err != nil {
			return err
		}
		switch status {
		case http.StatusOK:
			admitted++
			if usedUpAt.IsZero() && q.Used+int64(admitted) >= sandboxQuota {
				usedUpAt = time.Now()
			}
		case http.StatusTooManyRequests:
			if strings.Contains(body, "quota-exhausted") {
				refusal = body
			}
		default:
			return fmt.Errorf("call through the gateway: %d %s", status, body)
		}
	}
	fmt.Fprintf(stdout, "  %d more calls admitted, then: 429 %s", admitted, refusal)
	if !usedUpAt.IsZero() {
		fmt.Fprintf(stdout, "  the block reached the gateway %s after the call that used the quota up\n", time.Since(usedUpAt).Round(time.Millisecond))
	}

	step("the quota as the control plane reports it: GET /v1/subscriptions/%s/quota", subID)
	if _, err := call("GET", "/v1/subscriptions/"+subID+"/quota", consumer, nil, &q); err != nil {
		return err
	}
	until := "-"
	if q.BlockedUntil != nil {
		until = q.BlockedUntil.Format(time.RFC3339)
	}
	fmt.Fprintf(stdout, "  used %d of %d, remaining %d, thresholds crossed %v, blocked %t until %s (the period's end, when it resets)\n",
		q.Used, *q.Limit, *q.Remaining, q.ThresholdsCrossed, q.Blocked, until)

	step("the processor produced each crossing to %s; the control plane sent one webhook and one email per threshold", broker.TopicQuotaEvents)
	if err := demoNotices(ctx, stdout, hooks, consumerEmail, mailpitURL); err != nil {
		return err
	}

	step("the provider credits 25 requests: POST /v1/subscriptions/%s/quota/credits; the block lifts at once", subID)
	if _, err := call("POST", "/v1/subscriptions/"+subID+"/quota/credits", provider, map[string]any{"requests": 25, "reason": "demo goodwill"}, nil); err != nil {
		return err
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		status, body, err := gatewayCall(ctx, client, url, key)
		if err != nil {
			return err
		}
		if status == http.StatusOK {
			fmt.Fprintf(stdout, "  %d %s", status, body)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the gateway still refuses after the credit: %d %s", status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func orUnlimited[T int | int64](v *T) string {
	if v == nil {
		return "unlimited"
	}
	return fmt.Sprint(*v)
}

func orAll(l []string) string {
	if len(l) == 0 {
		return "all"
	}
	return strings.Join(l, " ")
}

// rates shows a record's rate limits, where 0 is not set; none is what
// shows when neither is.
func rates(perSecond, perMinute int, none string) string {
	var l []string
	if perSecond > 0 {
		l = append(l, strconv.Itoa(perSecond)+"/s")
	}
	if perMinute > 0 {
		l = append(l, strconv.Itoa(perMinute)+"/min")
	}
	if len(l) == 0 {
		return none
	}
	return strings.Join(l, ", ")
}

func orNever(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format(time.RFC3339)
}

func orNone(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return t.Format(time.RFC3339)
}

// demoWebhooks records the quota webhooks the consumer receives.
type demoWebhooks struct {
	mu         sync.Mutex
	thresholds []int
}

func (d *demoWebhooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev struct {
		Type string `json:"type"`
		Data struct {
			Threshold int `json:"threshold"`
		} `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&ev); err == nil && ev.Type == "quota.threshold_crossed" {
		d.mu.Lock()
		d.thresholds = append(d.thresholds, ev.Data.Threshold)
		d.mu.Unlock()
	}
	w.WriteHeader(http.StatusNoContent)
}

func (d *demoWebhooks) received() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(slices.Values(d.thresholds))
}

// demoNotices waits for the three quota webhooks and, when mailpit is
// there, the three emails, and shows them.
func demoNotices(ctx context.Context, stdout io.Writer, hooks *demoWebhooks, email, mailpitURL string) error {
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Equal(hooks.received(), []int{80, 90, 100}) {
		if time.Now().After(deadline) {
			return fmt.Errorf("quota webhooks received for thresholds %v; want 80, 90 and 100 once each", hooks.received())
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(stdout, "  webhooks quota.threshold_crossed received for thresholds %v\n", hooks.received())
	if mailpitURL == "" {
		return nil
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		var page struct {
			Messages []struct{ Subject string } `json:"messages"`
		}
		u := mailpitURL + "/api/v1/search?query=" + neturl.QueryEscape(`to:"`+email+`"`)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintf(stdout, "  (no mailpit at %s, so no email to show: %v)\n", mailpitURL, err)
			return nil
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("read mailpit's inbox: %w", err)
		}
		if len(page.Messages) >= 3 {
			for i := len(page.Messages) - 1; i >= 0; i-- {
				fmt.Fprintf(stdout, "  email to %s: %q\n", email, page.Messages[i].Subject)
			}
			fmt.Fprintf(stdout, "  (the inbox: %s)\n", mailpitURL)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mailpit holds %d quota emails to %s; want 3", len(page.Messages), email)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
