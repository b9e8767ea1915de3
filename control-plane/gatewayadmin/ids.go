package gatewayadmin

import (
	"context"
	"fmt"
	"strings"

	"github.com/veil-platform/veil/internal/gatewayroute"
)

// IDs returns the @id of every route whose id starts with idPrefix,
// including routes List cannot parse (written by hand or by another tool),
// so that reconciliation can remove them too.
func (c *Client) IDs(ctx context.Context, idPrefix string) ([]string, error) {
	routes, _, err := c.routes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list route ids: %w", err)
	}
	out := []string{}
	for _, raw := range routes {
		id := routeID(raw)
		if id == "" || id == gatewayroute.HealthRouteID || id == gatewayroute.NotFoundRouteID || id == gatewayroute.MetricsRouteID || !strings.HasPrefix(id, idPrefix) {
			continue
		}
		out = append(out, id)
	}
	return out, nil
}
