// Package broker builds Veil's Kafka clients, creates its topics, exports
// client metrics and runs the embedded Kafka-protocol broker of veil dev.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// Topic names are part of Veil's contract (DESIGN.md).
const (
	// TopicUsageRaw carries usage events keyed by subject.
	TopicUsageRaw = "veil.usage.raw"
	// TopicUsageDLQ carries records the processors refused, with the reason in headers.
	TopicUsageDLQ = "veil.usage.dlq"
	// TopicQuotaEvents carries the processors' quota threshold crossings,
	// keyed by subscription, to the control plane's notices.
	TopicQuotaEvents = "veil.quota.events"
)

// DefaultPartitions is the partition count of veil.usage.raw when Veil
// creates it: enough for a dozen processors to share the load.
const DefaultPartitions = 12

// ErrNoBrokers is returned when a client is asked for without seed brokers.
var ErrNoBrokers = errors.New("no Kafka brokers configured")

// ClientConfig configures a franz-go client the way every Veil component
// needs it.
type ClientConfig struct {
	Brokers []string
	// ClientID names the client to the broker and labels its metrics.
	ClientID string
	Logger   *slog.Logger
	Metrics  *metrics.Set
	// Opts are appended to Veil's defaults and may override them.
	Opts []kgo.Opt
}

// NewClient returns a client with an idempotent, acks=all producer (franz-go's
// defaults, stated here so they cannot drift), client metrics and slog logs.
func NewClient(cfg ClientConfig) (*kgo.Client, error) {
	if len(cfg.Brokers) == 0 {
		return nil, ErrNoBrokers
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.WithLogger(kslog.New(cfg.Logger.With("kafka_client", cfg.ClientID))),
	}
	if cfg.Metrics != nil {
		opts = append(opts, kgo.WithHooks(NewHooks(cfg.Metrics, cfg.ClientID)))
	}
	opts = append(opts, cfg.Opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("new kafka client: %w", err)
	}
	return cl, nil
}

// ParseBrokers splits a comma-separated broker list, dropping blanks.
func ParseBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// TopicSpec describes a topic Veil owns.
type TopicSpec struct {
	Name       string
	Partitions int32
	Configs    map[string]*string
}

// Topics returns Veil's topics with the given partition count for the raw topic.
func Topics(partitions int32) []TopicSpec {
	week := "604800000"
	month := "2592000000"
	return []TopicSpec{
		{Name: TopicUsageRaw, Partitions: partitions, Configs: map[string]*string{"retention.ms": &week}},
		{Name: TopicUsageDLQ, Partitions: 1, Configs: map[string]*string{"retention.ms": &month}},
		{Name: TopicQuotaEvents, Partitions: 1, Configs: map[string]*string{"retention.ms": &month}},
	}
}

// EnsureTopics creates the topics that do not exist yet. Existing topics are
// left as they are, so running it again, or from several processes at once,
// is safe.
func EnsureTopics(ctx context.Context, cl *kgo.Client, specs []TopicSpec) error {
	adm := kadm.NewClient(cl)
	for _, s := range specs {
		resp, err := adm.CreateTopic(ctx, s.Partitions, -1, s.Configs, s.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", s.Name, err)
		}
	}
	return nil
}

// Ping reports whether any broker answers within the context's deadline.
func Ping(ctx context.Context, cl *kgo.Client) error {
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("ping kafka: %w", err)
	}
	return nil
}

// WaitForTopic polls until the topic's metadata shows it, or ctx ends.
func WaitForTopic(ctx context.Context, cl *kgo.Client, topic string) error {
	adm := kadm.NewClient(cl)
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			if t, ok := md.Topics[topic]; ok && t.Err == nil && len(t.Partitions) > 0 {
				return nil
			} else if ok && t.Err != nil {
				err = t.Err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for topic %s: %w (last: %v)", topic, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
