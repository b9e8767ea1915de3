package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/veil-platform/veil/control-plane/identity"
)

func TestCreateAndReadAnAPI(t *testing.T) {
	e := newTestEnv(t)
	prov := e.token("acme", "alice", identity.RoleProvider)
	var api struct{ ID, State string }
	e.must(http.StatusCreated, "POST", "/v1/apis", prov, map[string]any{
		"name": "Weather", "slug": "weather", "upstream_url": "http://127.0.0.1:9/v1",
	}, &api)
	if api.State != "draft" {
		t.Errorf("state = %s; want draft", api.State)
	}
	e.must(http.StatusOK, "GET", "/v1/apis/"+api.ID, prov, nil, nil)
	e.must(http.StatusUnauthorized, "GET", "/v1/apis/"+api.ID, "", nil, nil)
}
