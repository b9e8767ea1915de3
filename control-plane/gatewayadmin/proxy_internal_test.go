package gatewayadmin

import (
	"net/http"
	"testing"
)

// TestAdminClientIgnoresProxy: the default client of an http:// admin URL
// has a transport of its own without a proxy, so HTTP_PROXY never sees the
// signing secrets in the routes put.
func TestAdminClientIgnoresProxy(t *testing.T) {
	t.Parallel()
	c, err := New(Config{AdminURL: "http://127.0.0.1:2019"})
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := c.http.Transport.(*http.Transport)
	if !ok || tr.Proxy != nil {
		t.Fatalf("admin client transport = %T (proxy set: %t); want an *http.Transport without a proxy", c.http.Transport, ok && tr.Proxy != nil)
	}
}
