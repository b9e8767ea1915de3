package catalog

import (
	"net/http"
	"testing"
)

// TestRouteCheckClientIgnoresProxy: the default client that verifies
// routes through the gateway has a transport of its own without a proxy,
// so HTTP_PROXY neither sees nor redirects the checks.
func TestRouteCheckClientIgnoresProxy(t *testing.T) {
	t.Parallel()
	c := routeCheckClient()
	tr, ok := c.Transport.(*http.Transport)
	if !ok || tr.Proxy != nil {
		t.Fatalf("route check client transport = %T (proxy set: %t); want an *http.Transport without a proxy", c.Transport, ok && tr.Proxy != nil)
	}
	if c.CheckRedirect == nil {
		t.Error("route check client follows redirects; want none followed")
	}
}
