package broker

import (
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Embedded is the in-process Kafka-protocol broker veil dev runs when no
// brokers are configured. With a data directory it persists its logs, so
// events survive a restart.
type Embedded struct {
	cluster *kfake.Cluster
}

// EmbeddedConfig configures the embedded broker.
type EmbeddedConfig struct {
	// Port on 127.0.0.1; 0 picks a free one.
	Port int
	// DataDir persists topics and offsets; empty keeps everything in memory.
	DataDir string
	// Partitions of veil.usage.raw. Default DefaultPartitions.
	Partitions int32
	Logger     *slog.Logger
}

// StartEmbedded starts the broker with Veil's topics already created.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Partitions == 0 {
		cfg.Partitions = DefaultPartitions
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(cfg.Port),
		kfake.SeedTopics(cfg.Partitions, TopicUsageRaw),
		kfake.SeedTopics(1, TopicUsageDLQ),
		kfake.SeedTopics(1, TopicQuotaEvents),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded broker: %w", err)
	}
	if cfg.Logger != nil {
		cfg.Logger.Info("embedded kafka broker started", "addrs", c.ListenAddrs(), "data_dir", cfg.DataDir)
	}
	return &Embedded{cluster: c}, nil
}

// Addrs are the broker's listen addresses.
func (e *Embedded) Addrs() []string { return e.cluster.ListenAddrs() }

// Cluster exposes the kfake cluster, for fault injection in tests.
func (e *Embedded) Cluster() *kfake.Cluster { return e.cluster }

// Close stops the broker, flushing its data directory.
func (e *Embedded) Close() { e.cluster.Close() }
