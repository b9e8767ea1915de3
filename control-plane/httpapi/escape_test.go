package httpapi_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/veil-platform/veil/control-plane/identity"
)

// TestKeyEventsHideConsumersFromProvider: the key's own organization and
// admins read its audit trail with the callers' source IPs and user
// agents; the API's provider reads the same entries without them.
func TestKeyEventsHideConsumersFromProvider(t *testing.T) {
	e := newTestEnv(t)
	w := newSubsWorld(t, e)
	admin := e.token("veil-ops", "root", identity.RoleAdmin)
	id := w.activeKey(t, map[string]any{"name": "ci"})
	e.must(http.StatusOK, "POST", "/v1/keys/"+id+"/suspend", w.buyer, map[string]any{"reason": "rotating"}, nil)

	for _, c := range []struct {
		who, tok string
		shown    bool
	}{{"subscriber", w.buyer, true}, {"admin", admin, true}, {"provider", w.provider, false}} {
		var trail struct {
			Data []map[string]json.RawMessage `json:"data"`
		}
		e.must(http.StatusOK, "GET", "/v1/keys/"+id+"/events", c.tok, nil, &trail)
		if len(trail.Data) < 2 {
			t.Fatalf("events as %s = %d entries; want the create and the suspend", c.who, len(trail.Data))
		}
		recorded := false // some entry, made over HTTP, names its caller
		for _, entry := range trail.Data {
			ip, hasIP := entry["source_ip"]
			ua, hasUA := entry["user_agent"]
			if hasIP != c.shown || hasUA != c.shown {
				t.Errorf("event %s as %s: source_ip %s, user_agent %s; want them shown: %t", entry["action"], c.who, ip, ua, c.shown)
			}
			recorded = recorded || hasIP && string(ip) != `""` && hasUA && string(ua) != `""`
		}
		if recorded != c.shown {
			t.Errorf("events as %s show a caller's source IP and user agent: %t; want %t", c.who, recorded, c.shown)
		}
	}
}

// TestAdminKeyLimitsOverHTTP: the problem types of the admin key rules.
// An admin of another organization may suspend a key, but gets no new
// plaintext of it (issuing, rotating); the consumer cannot resume what the
// admin suspended.
func TestAdminKeyLimitsOverHTTP(t *testing.T) {
	e := newTestEnv(t)
	w := newSubsWorld(t, e)
	admin := e.token("veil-ops", "root", identity.RoleAdmin)
	id := w.activeKey(t, map[string]any{"name": "ci"})

	refused := func(want int, typ, method, path, tok string) {
		t.Helper()
		status, b := e.do(method, path, tok, map[string]any{})
		var p struct{ Type string }
		_ = json.Unmarshal(b, &p)
		if status != want || p.Type != "https://veil.dev/problems/"+typ {
			t.Errorf("%s %s = %d %s; want %d %s", method, path, status, b, want, typ)
		}
	}
	refused(http.StatusForbidden, "plaintext-refused", "POST", "/v1/subscriptions/"+w.subID+"/keys", admin)
	refused(http.StatusForbidden, "plaintext-refused", "POST", "/v1/keys/"+id+"/rotate", admin)
	e.must(http.StatusOK, "POST", "/v1/keys/"+id+"/suspend", admin, map[string]any{"reason": "abuse report"}, nil)
	refused(http.StatusForbidden, "admin-suspended", "POST", "/v1/keys/"+id+"/resume", w.buyer)
	refused(http.StatusForbidden, "admin-suspended", "POST", "/v1/subscriptions/"+w.subID+"/keys", w.buyer)
	e.must(http.StatusOK, "POST", "/v1/keys/"+id+"/resume", admin, nil, nil)
	e.must(http.StatusCreated, "POST", "/v1/keys/"+id+"/rotate", w.buyer, nil, nil)
}
