package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/testenv"
)

// What the end-to-end tests put in place of the world around Veil: a
// gateway admin API that fails on cue, a provider's upstream API and a
// webhook receiver.

// faultyAdmin sits in front of Caddy's admin API and breaks configuration
// changes on cue: the next failNext ones answer 500, or all of them while
// failAlways is set, or (lie) they answer 200 without reaching Caddy.
type faultyAdmin struct {
	srv        *httptest.Server
	failNext   atomic.Int32
	failAlways atomic.Bool
	lie        atomic.Bool
	failed     atomic.Int32
}

func newFaultyAdmin(t *testing.T, target string) *faultyAdmin {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	f := &faultyAdmin{}
	// SetURL also rewrites Host: Caddy's admin API refuses foreign hosts.
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }}
	if u.Scheme == "unix" {
		// The admin API's socket: every connection goes there.
		proxy.Transport = testenv.UnixClient(u.Path).Transport
		u = &url.URL{Scheme: "http", Host: "localhost"}
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodDelete {
			if f.lie.Load() {
				w.WriteHeader(http.StatusOK)
				return
			}
			if f.failAlways.Load() || f.failNext.Add(-1) >= 0 {
				f.failed.Add(1)
				http.Error(w, `{"error":"injected fault"}`, http.StatusInternalServerError)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// upstream is a provider's API: /health and /hello, with a health check
// that can be held.
type upstream struct {
	srv         *httptest.Server
	hold        chan struct{} // when non-nil, /health waits for it to close
	healthCalls chan struct{}
	mu          sync.Mutex
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{healthCalls: make(chan struct{}, 100)}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/health":
			select {
			case u.healthCalls <- struct{}{}:
			default:
			}
			u.mu.Lock()
			hold := u.hold
			u.mu.Unlock()
			if hold != nil {
				<-hold
			}
			_, _ = io.WriteString(w, "ok")
		case "/v1/hello":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"hello":"world","api":%q}`, r.Header.Get("X-Veil-Api-Id"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// webhookSink receives webhooks and verifies each signature with its own
// implementation of the Standard Webhooks scheme.
type webhookSink struct {
	srv    *httptest.Server
	mu     sync.Mutex
	secret string
	events []map[string]any
	bad    []string
}

func newWebhookSink(t *testing.T) *webhookSink {
	t.Helper()
	s := &webhookSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := verifyStandardWebhook(s.secret, r.Header, body, time.Now()); err != nil {
			s.bad = append(s.bad, err.Error())
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var ev map[string]any
		_ = json.Unmarshal(body, &ev)
		s.events = append(s.events, ev)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// subscribe registers the sink as a webhook endpoint of tok's organization
// for eventTypes and keeps the endpoint's secret to verify with.
func (s *webhookSink) subscribe(t *testing.T, c *controlPlane, tok string, eventTypes ...client.WebhookEndpointInputEventTypes) {
	t.Helper()
	resp, err := c.CreateWebhookEndpointWithResponse(t.Context(), nil, client.WebhookEndpointInput{Url: s.srv.URL, EventTypes: eventTypes}, client.Bearer(tok))
	expect(t, http.StatusCreated, resp, err)
	s.mu.Lock()
	s.secret = resp.JSON201.Secret
	s.mu.Unlock()
}

// verifyStandardWebhook checks webhook-id, webhook-timestamp (within five
// minutes) and a v1 HMAC-SHA256 signature over "id.timestamp.body".
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Errorf("missing webhook headers")
	}
	var unix int64
	if _, err := fmt.Sscan(ts, &unix); err != nil {
		return fmt.Errorf("bad timestamp %q", ts)
	}
	if d := now.Sub(time.Unix(unix, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %s too far from now", ts)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return fmt.Errorf("bad secret: %v", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no valid signature in %q", sigs)
}

func (s *webhookSink) types() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.events {
		out = append(out, fmt.Sprint(e["type"]))
	}
	return out
}
