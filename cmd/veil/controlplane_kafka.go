package main

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/veil-platform/veil/control-plane/analytics"
	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/processors"
)

// defaultProcessorGroup is the group the processors join unless told
// otherwise, whose lag the admin overview shows.
const defaultProcessorGroup = processors.DefaultGroup

// kafkaAdmin reads the processors' consumer lag for the admin overview.
type kafkaAdmin struct {
	cl *kgo.Client
}

// newKafkaAdmin returns an admin client on the seed brokers, nil without
// brokers. It connects on first use, so a broker that is down costs the
// overview's lag part, not the control plane's start.
func newKafkaAdmin(brokers string) (*kafkaAdmin, error) {
	seeds := broker.ParseBrokers(brokers)
	if len(seeds) == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return nil, fmt.Errorf("kafka admin client: %w", err)
	}
	return &kafkaAdmin{cl: cl}, nil
}

// lagger is what the analytics service reads the lag through; nil (the
// overview then says no client is configured) without brokers.
func (k *kafkaAdmin) lagger() analytics.GroupLagger {
	if k == nil {
		return nil
	}
	return kadm.NewClient(k.cl)
}

func (k *kafkaAdmin) close() {
	if k != nil {
		k.cl.Close()
	}
}
