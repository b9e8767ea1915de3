package enforcement

import (
	"context"
	"fmt"

	"github.com/redis/rueidis"
)

// Primaries returns the clients to SCAN: the client itself, or on Redis
// Cluster every primary (SCAN walks one node; replicas would repeat).
func Primaries(ctx context.Context, client rueidis.Client) ([]rueidis.Client, error) {
	if client.Mode() != rueidis.ClientModeCluster {
		return []rueidis.Client{client}, nil
	}
	var out []rueidis.Client
	for addr, node := range client.Nodes() {
		role, err := node.Do(ctx, node.B().Role().Build()).ToArray()
		if err != nil {
			return nil, fmt.Errorf("read role of %s: %w", addr, err)
		}
		if len(role) == 0 {
			return nil, fmt.Errorf("read role of %s: empty reply", addr)
		}
		if r, _ := role[0].ToString(); r == "master" {
			out = append(out, node)
		}
	}
	return out, nil
}
