package webhooks

import (
	"context"
	"errors"
	"fmt"

	"github.com/veil-platform/veil/internal/egress"
)

// ErrPrivateAddress reports a webhook URL or a delivery's connection the
// egress policy refuses. It is egress.ErrRefused: the egress package holds
// the one rule for every address Veil connects to on a customer's behalf.
var ErrPrivateAddress = egress.ErrRefused

// privateNetworks are what AllowPrivateNetworks opens: loopback, the
// private ranges and link-local, where development receivers listen.
var privateNetworks = []string{
	"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7",
	"169.254.0.0/16", "fe80::/10",
}

// EgressPolicy builds the policy webhook deliveries connect under: public
// addresses only or, with allowPrivate, also loopback, private and
// link-local networks. Either way Veil's default ports on loopback and
// this host's addresses (egress.VeilPorts) and deny (host:port, the
// endpoints of the services the control plane is configured with) stay
// refused, and a private network opens no Veil default port in it: the
// platform's own stores are never a webhook's receiver. ctx bounds the
// look-ups of deny's names.
func EgressPolicy(ctx context.Context, allowPrivate bool, deny []string) (*egress.Policy, error) {
	cfg := egress.Config{Deny: deny}
	if allowPrivate {
		cfg.Allow = privateNetworks
	}
	p, err := egress.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("webhook egress policy: %w", err)
	}
	return p, nil
}

// checkURL refuses, as a validation error of field, a URL the egress
// policy refuses: one whose host is, or resolves to, an address deliveries
// may not connect to. The dialer checks again at every delivery, so a
// name that resolves elsewhere later (DNS rebinding) gains nothing. A name
// that does not resolve is refused too, except with AllowPrivateNetworks,
// where development receivers may not be up yet.
func (s *Service) checkURL(ctx context.Context, field, raw string) error {
	err := s.egress.CheckURL(ctx, raw)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, egress.ErrRefused):
		return &ValidationError{Fields: []FieldError{{Field: field,
			Detail: fmt.Sprintf("%v; webhooks may not reach internal networks or Veil's own services", err)}}}
	case errors.Is(err, egress.ErrUnresolvable):
		if s.cfg.AllowPrivateNetworks {
			return nil
		}
		return &ValidationError{Fields: []FieldError{{Field: field, Detail: fmt.Sprintf("%v", err)}}}
	default:
		return fmt.Errorf("check webhook url: %w", err)
	}
}
