// Package manualpay is the payment provider of invoices paid by bank
// transfer: collecting an invoice only says how to pay it, with the
// invoice number as the transfer's reference, and the payment stays
// pending until the API provider or an administrator marks the invoice
// paid in Veil. It has no remote state and sends no webhooks. It is also
// what keeps metering.PaymentProvider from taking Stripe's shape.
package manualpay

import (
	"context"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/veil-platform/veil/metering"
)

// Name is the provider's name.
const Name = "manual"

// paymentPrefix marks the payment ids this provider makes up.
const paymentPrefix = "manual-"

// Config is the account transfers go to.
type Config struct {
	AccountHolder string
	// IBAN is checked (ISO 13616 mod-97) and kept without spaces.
	IBAN string
	// BIC is optional within SEPA.
	BIC string
}

// Provider is the bank-transfer metering.PaymentProvider.
type Provider struct{ cfg Config }

var _ metering.PaymentProvider = (*Provider)(nil)

// New returns a Provider paying into cfg's account.
func New(cfg Config) (*Provider, error) {
	cfg.IBAN = strings.ToUpper(strings.ReplaceAll(cfg.IBAN, " ", ""))
	if strings.TrimSpace(cfg.AccountHolder) == "" {
		return nil, fmt.Errorf("create manual provider: account holder missing")
	}
	if !validIBAN(cfg.IBAN) {
		return nil, fmt.Errorf("create manual provider: IBAN %q is not valid", cfg.IBAN)
	}
	return &Provider{cfg: cfg}, nil
}

// Name implements metering.PaymentProvider.
func (p *Provider) Name() string { return Name }

// EnsureCustomer has nothing to create: the customer is Veil's own.
func (p *Provider) EnsureCustomer(_ context.Context, in metering.CustomerInput) (metering.CustomerRef, error) {
	if err := in.Validate(); err != nil {
		return metering.CustomerRef{}, fmt.Errorf("ensure manual customer: %w", err)
	}
	return metering.CustomerRef{Provider: Name, ID: in.CustomerID}, nil
}

// SetupPaymentMethod has no method to set up, only instructions.
func (p *Provider) SetupPaymentMethod(context.Context, metering.SetupInput) (metering.SetupSession, error) {
	return metering.SetupSession{Instructions: "Invoices are paid by bank transfer to " +
		p.cfg.AccountHolder + ", IBAN " + p.cfg.IBAN + ", with the invoice number as the reference."}, nil
}

// Collect returns a pending payment with the transfer's instructions. The
// payment id is the invoice's: every attempt of one invoice is the same
// transfer.
func (p *Provider) Collect(_ context.Context, in metering.CollectInput) (metering.PaymentResult, error) {
	if err := in.Validate(); err != nil {
		return metering.PaymentResult{}, fmt.Errorf("collect by transfer: %w", err)
	}
	return metering.PaymentResult{
		ProviderPaymentID: paymentPrefix + in.InvoiceID,
		Status:            metering.PaymentPending,
		ProviderStatus:    "awaiting_transfer",
		Amount:            in.Amount,
		Instructions: &metering.PaymentInstructions{
			Reference: in.InvoiceNumber, AccountHolder: p.cfg.AccountHolder,
			IBAN: p.cfg.IBAN, BIC: p.cfg.BIC, Amount: in.Amount,
		},
	}, nil
}

// PaymentStatus knows nothing beyond Veil's own records: a transfer is
// pending until someone marks the invoice paid there.
func (p *Provider) PaymentStatus(_ context.Context, id string) (metering.PaymentResult, error) {
	if !strings.HasPrefix(id, paymentPrefix) {
		return metering.PaymentResult{}, fmt.Errorf("read manual payment %q: %w", id, metering.ErrPaymentNotFound)
	}
	return metering.PaymentResult{ProviderPaymentID: id, Status: metering.PaymentPending, ProviderStatus: "awaiting_transfer"}, nil
}

// CancelPayment has nothing to stop: voiding the invoice is enough.
func (p *Provider) CancelPayment(_ context.Context, id string) error {
	if !strings.HasPrefix(id, paymentPrefix) {
		return fmt.Errorf("cancel manual payment %q: %w", id, metering.ErrPaymentNotFound)
	}
	return nil
}

// Refund records that money is to be sent back by hand: pending until it
// is marked done.
func (p *Provider) Refund(_ context.Context, in metering.RefundInput) (metering.RefundResult, error) {
	if !strings.HasPrefix(in.ProviderPaymentID, paymentPrefix) {
		return metering.RefundResult{}, fmt.Errorf("refund manual payment %q: %w", in.ProviderPaymentID, metering.ErrPaymentNotFound)
	}
	if err := metering.CheckIdempotencyKey(in.IdempotencyKey); err != nil {
		return metering.RefundResult{}, fmt.Errorf("refund manual payment: %w", err)
	}
	return metering.RefundResult{ProviderRefundID: paymentPrefix + in.IdempotencyKey, Status: metering.RefundPending, Amount: in.Amount}, nil
}

// ParseWebhook refuses: a bank transfer announces nothing.
func (p *Provider) ParseWebhook([]byte, http.Header, time.Time) (metering.WebhookEvent, error) {
	return metering.WebhookEvent{}, fmt.Errorf("parse manual webhook: %w", metering.ErrPaymentUnsupported)
}

// validIBAN checks an IBAN's shape and its ISO 7064 mod-97 check digits.
func validIBAN(iban string) bool {
	if len(iban) < 15 || len(iban) > 34 {
		return false
	}
	var digits strings.Builder
	for _, r := range iban[4:] + iban[:4] {
		switch {
		case r >= '0' && r <= '9':
			digits.WriteRune(r)
		case r >= 'A' && r <= 'Z':
			fmt.Fprintf(&digits, "%d", r-'A'+10)
		default:
			return false
		}
	}
	n, ok := new(big.Int).SetString(digits.String(), 10)
	return ok && new(big.Int).Mod(n, big.NewInt(97)).Int64() == 1
}
