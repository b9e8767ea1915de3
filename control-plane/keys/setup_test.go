package keys_test

import (
	"testing"

	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/subscriptions/subscriptionstest"
)

// fixture is the shared one, with this package's helpers as its methods.
type fixture struct{ *subscriptionstest.Fixture }

func setup(t *testing.T, opts ...func(*subscriptions.Config)) *fixture {
	return &fixture{subscriptionstest.Setup(t, opts...)}
}
