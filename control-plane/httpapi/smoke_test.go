package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/internal/testenv"
)

func weather(slug string) map[string]any {
	return map[string]any{"name": "Weather", "slug": slug, "upstream_url": "http://127.0.0.1:9/v1"}
}

func TestCreateAndReadAnAPI(t *testing.T) {
	e := newTestEnv(t)
	prov := e.token("acme", "alice", identity.RoleProvider)
	var api struct{ ID, State string }
	e.must(http.StatusCreated, "POST", "/v1/apis", prov, weather("weather"), &api)
	if api.State != "draft" {
		t.Errorf("state = %s; want draft", api.State)
	}
	e.must(http.StatusOK, "GET", "/v1/apis/"+api.ID, prov, nil, nil)
	e.must(http.StatusUnauthorized, "GET", "/v1/apis/"+api.ID, "", nil, nil)
}

// problemOf decodes a problem body.
func problemOf(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("problem body %s: %v", b, err)
	}
	return p
}

func TestBadRequestsGetProblems(t *testing.T) {
	e := newTestEnv(t)
	prov := e.token("acme", "alice", identity.RoleProvider)

	status, b := e.do("POST", "/v1/apis", prov, map[string]any{"name": "", "slug": "Bad Slug", "upstream_url": "ftp://x", "routes": []map[string]any{{"path": "x", "methods": []string{"FETCH"}}}})
	if status != http.StatusUnprocessableEntity {
		t.Fatalf("invalid API = %d %s; want 422", status, b)
	}
	p := problemOf(t, b)
	var fields []string
	for _, f := range p["errors"].([]any) {
		fields = append(fields, f.(map[string]any)["field"].(string))
	}
	if got, want := strings.Join(fields, ","), "name,slug,upstream_url,routes[0].path,routes[0].methods[0]"; got != want {
		t.Errorf("validation fields = %s; want %s", got, want)
	}
	if p["request_id"] == "" || p["type"] != "https://veil.dev/problems/validation" {
		t.Errorf("problem = %v; want type validation and a request id", p)
	}

	status, b = e.do("POST", "/v1/apis", prov, nil, "Content-Type", "text/plain")
	if status != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain = %d %s; want 415", status, b)
	}
	status, b = e.do("POST", "/v1/apis", prov, map[string]any{"name": "x", "unknown_field": 1})
	if status != http.StatusBadRequest || problemOf(t, b)["type"] != "https://veil.dev/problems/malformed-json" {
		t.Errorf("unknown field = %d %s; want 400 malformed-json", status, b)
	}
	status, b = e.do("GET", "/v1/apis?cursor=not-a-cursor", prov, nil)
	if status != http.StatusBadRequest {
		t.Errorf("bad cursor = %d %s; want 400", status, b)
	}
	status, _ = e.do("GET", "/v1/nothing-here", prov, nil)
	if status != http.StatusNotFound {
		t.Errorf("unknown route = %d; want 404", status)
	}
	status, b = e.do("GET", "/v1/apis/not-a-uuid", prov, nil)
	if status != http.StatusNotFound {
		t.Errorf("bad id = %d %s; want 404: only UUIDs name resources", status, b)
	}
	status, b = e.do("GET", "/v1/admin/approvals/bulk", e.token("platform", "ops", identity.RoleAdmin), nil)
	if status != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/admin/approvals/bulk = %d %s; want 405", status, b)
	}
	status, b = e.do("GET", "/v1/apis?state=", prov, nil)
	if status != http.StatusUnprocessableEntity {
		t.Errorf("empty state filter = %d %s; want 422", status, b)
	}
}

func TestPaginationWalksEveryAPIOnce(t *testing.T) {
	e := newTestEnv(t)
	prov := e.token("acme", "alice", identity.RoleProvider)
	for i := range 7 {
		e.must(http.StatusCreated, "POST", "/v1/apis", prov, weather("api-"+strconv.Itoa(i)), nil)
	}
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		var page struct {
			Data       []struct{ Slug string }
			NextCursor string `json:"next_cursor"`
		}
		e.must(http.StatusOK, "GET", "/v1/apis?limit=3&cursor="+cursor, prov, nil, &page)
		for _, a := range page.Data {
			if seen[a.Slug] {
				t.Fatalf("%s listed twice", a.Slug)
			}
			seen[a.Slug] = true
		}
		if page.NextCursor == "" {
			if pages != 2 {
				t.Errorf("pages = %d; want 3", pages+1)
			}
			break
		}
		cursor = page.NextCursor
	}
	if len(seen) != 7 {
		t.Errorf("listed %d APIs; want 7", len(seen))
	}
}

func TestIdempotencyKeyMakesCreateRunOnce(t *testing.T) {
	e := newTestEnv(t)
	prov := e.token("acme", "alice", identity.RoleProvider)
	s1, b1 := e.do("POST", "/v1/apis", prov, weather("once"), "Idempotency-Key", "create-once-1")
	s2, b2 := e.do("POST", "/v1/apis", prov, weather("once"), "Idempotency-Key", "create-once-1")
	if s1 != http.StatusCreated || s2 != http.StatusCreated || string(b1) != string(b2) {
		t.Fatalf("replay = %d %s / %d %s; want the same 201 twice", s1, b1, s2, b2)
	}
	var list struct{ Data []any }
	e.must(http.StatusOK, "GET", "/v1/apis", prov, nil, &list)
	if len(list.Data) != 1 {
		t.Errorf("APIs after a replayed create = %d; want 1", len(list.Data))
	}
	s3, b3 := e.do("POST", "/v1/apis", prov, weather("other"), "Idempotency-Key", "create-once-1")
	if s3 != http.StatusUnprocessableEntity {
		t.Errorf("same key, other body = %d %s; want 422", s3, b3)
	}
}

func TestRateLimitPerToken(t *testing.T) {
	redis := testenv.Redis(t)
	limiter, err := middleware.NewRateLimiter(middleware.RateLimitConfig{Client: redis, Prefix: "veil:test:rl:" + testenv.Suffix() + ":"})
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnvWith(t, func(c *httpapi.Config) {
		c.RateLimiter = limiter
		c.TokenRate = middleware.Rate{Limit: 3, Period: time.Hour, Burst: 3}
	})
	alice := e.token("acme", "alice", identity.RoleProvider)
	bob := e.token("acme", "bob", identity.RoleProvider)
	for i := range 3 {
		e.must(http.StatusOK, "GET", "/v1/apis", alice, nil, nil)
		_ = i
	}
	status, b := e.do("GET", "/v1/apis", alice, nil)
	if status != http.StatusTooManyRequests || problemOf(t, b)["type"] != "https://veil.dev/problems/rate-limited" {
		t.Fatalf("4th request = %d %s; want 429 rate-limited", status, b)
	}
	e.must(http.StatusOK, "GET", "/v1/apis", bob, nil, nil)
}
