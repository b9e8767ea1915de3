package httpapi_test

import (
	"testing"

	"github.com/veil-platform/veil/internal/egress"
)

// loopbackEgress is the upstream policy of these tests, whose upstreams
// are on loopback (127.0.0.1:9); Veil's own ports stay refused.
func loopbackEgress(t testing.TB) *egress.Policy {
	t.Helper()
	p, err := egress.New(t.Context(), egress.Config{Allow: []string{"127.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
