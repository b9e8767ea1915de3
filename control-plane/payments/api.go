package payments

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/payments/internal/db"
	"github.com/veil-platform/veil/metering"
)

// Attempt is one attempt of a payment, as its parties see it: never a
// card number or a secret, only the provider's codes.
type Attempt struct {
	No                int        `json:"attempt_no"`
	Status            string     `json:"status"`
	ProviderPaymentID *string    `json:"provider_payment_id"`
	FailureCode       string     `json:"failure_code"`
	DeclineCode       string     `json:"decline_code"`
	FailureMessage    string     `json:"failure_message"`
	Reference         string     `json:"reference"`
	CreatedAt         time.Time  `json:"created_at"`
	FinishedAt        *time.Time `json:"finished_at"`
}

// Attempts returns an invoice's payment and its attempts, for an actor of
// its issuer or customer (ErrNotFound for anyone else).
func (s *Service) Attempts(ctx context.Context, actor identity.Actor, invoiceID uuid.UUID) (Payment, []Attempt, error) {
	p, err := s.Get(ctx, actor, invoiceID)
	if err != nil {
		return p, nil, err
	}
	rows, err := db.New(s.pool).AttemptsOf(ctx, p.ID)
	if err != nil {
		return p, nil, fmt.Errorf("read payment attempts: %w", err)
	}
	return p, toAttempts(rows), nil
}

// Webhook verifies a provider's delivery and applies its event once. An
// error wrapping metering.ErrBadSignature, ErrStaleWebhook,
// ErrMalformedWebhook or ErrWebhookAPIVersion means the delivery was
// refused and nothing changed; any other error that it may be delivered
// again.
func (s *Service) Webhook(ctx context.Context, provider string, payload []byte, header http.Header) (metering.WebhookEvent, error) {
	prov := s.cfg.Providers[provider]
	if prov == nil {
		return metering.WebhookEvent{}, fmt.Errorf("receive webhook: %w: provider %q", ErrNotConfigured, provider)
	}
	ev, err := prov.ParseWebhook(payload, header, s.now())
	if err != nil {
		return ev, fmt.Errorf("verify webhook: %w", err)
	}
	switch ev.Type {
	case metering.WebhookPaymentMethodAttached, metering.WebhookPaymentMethodDefault, metering.WebhookPaymentMethodDetached:
		return ev, s.methodEvent(ctx, provider, ev)
	}
	return ev, s.ApplyEvent(ctx, provider, ev)
}

// methodEvent records a customer's default payment method as the
// provider reports it, once per event and in the order the provider made
// the events (their created time, kept on the customer): an event older
// than the one that last set the default changes nothing, so a late
// delivery of an old card's setup cannot make it the default again. A
// completed setup of Veil's or a default changed at the provider sets the
// default; a detached default is forgotten; an attached method only
// brings the card summary of the default. Card details are kept as the
// summary only.
func (s *Service) methodEvent(ctx context.Context, provider string, ev metering.WebhookEvent) error {
	if ev.ID == "" || len(ev.ID) > 255 || ev.ProviderCustomerID == "" || ev.PaymentMethodID == "" || ev.Created.IsZero() {
		s.log.Info("payment method event without its customer, method or time", "event", ev.ID, "type", ev.ProviderType)
		return nil
	}
	var newDefault bool
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		q := db.New(tx)
		n, err := q.EventInsert(ctx, db.EventInsertParams{Provider: provider, EventID: ev.ID, Type: string(ev.Type),
			ObjectID: ev.PaymentMethodID, ReceivedAt: s.now()})
		if err != nil || n == 0 {
			return err
		}
		var brand, last4 *string
		var month, year *int32
		if c := ev.Card; c != nil && len(c.Last4) == 4 && c.ExpMonth >= 1 && c.ExpMonth <= 12 && c.ExpYear >= 2000 && c.ExpYear <= 2200 {
			b, m, y := truncate(c.Brand, 32), int32(c.ExpMonth), int32(c.ExpYear)
			brand, last4, month, year = &b, &c.Last4, &m, &y
		}
		at := ev.Created.UTC()
		switch ev.Type {
		case metering.WebhookPaymentMethodDetached:
			n, err = q.CustomerMethodDetached(ctx, db.CustomerMethodDetachedParams{Provider: provider,
				ProviderCustomerID: ev.ProviderCustomerID, PmID: &ev.PaymentMethodID, EventAt: &at})
		case metering.WebhookPaymentMethodAttached:
			if last4 == nil {
				return nil
			}
			n, err = q.CustomerMethodCard(ctx, db.CustomerMethodCardParams{Provider: provider, ProviderCustomerID: ev.ProviderCustomerID,
				PmID: &ev.PaymentMethodID, Brand: brand, Last4: last4, ExpMonth: month, ExpYear: year})
		default:
			n, err = q.CustomerMethodDefault(ctx, db.CustomerMethodDefaultParams{Provider: provider, ProviderCustomerID: ev.ProviderCustomerID,
				PmID: &ev.PaymentMethodID, Brand: brand, Last4: last4, ExpMonth: month, ExpYear: year, EventAt: &at})
		}
		if err != nil {
			return fmt.Errorf("record payment method: %w", err)
		}
		if n == 0 {
			s.log.Info("payment method event changed nothing: an unknown customer, another method or an older event",
				"event", ev.ID, "type", ev.ProviderType, "provider_customer", ev.ProviderCustomerID)
		}
		newDefault = n > 0 && ev.Type != metering.WebhookPaymentMethodDetached && ev.Type != metering.WebhookPaymentMethodAttached
		return nil
	})
	if err == nil && newDefault {
		s.PayAfterNewMethod(ctx, provider, ev.ProviderCustomerID)
	}
	return err
}

// Setup is what a portal needs to collect a payment method.
type Setup struct {
	Provider     string `json:"provider"`
	SetupID      string `json:"setup_id"`
	ClientSecret string `json:"client_secret"`
	Instructions string `json:"instructions"`
}

// SetupPaymentMethod starts the setup of a payment method of the actor's
// organization at provider, creating its customer there first, audited.
// The client secret is returned to the caller and kept nowhere.
func (s *Service) SetupPaymentMethod(ctx context.Context, actor identity.Actor, provider string) (Setup, error) {
	if actor.OrgID == uuid.Nil {
		return Setup{}, identity.ErrForbidden
	}
	prov := s.cfg.Providers[provider]
	if prov == nil {
		return Setup{}, fmt.Errorf("set up payment method: %w: provider %q", ErrNotConfigured, provider)
	}
	ref, err := s.EnsureCustomer(ctx, actor.OrgID, provider)
	if err != nil {
		return Setup{}, err
	}
	// A new key per call: each setup is a SetupIntent of its own, and a
	// repeated request (the API's Idempotency-Key) is answered before this.
	ses, err := prov.SetupPaymentMethod(ctx, metering.SetupInput{Customer: ref,
		IdempotencyKey: "veil-setup-" + actor.OrgID.String() + "-" + uuid.NewString()})
	if err != nil {
		return Setup{}, fmt.Errorf("set up payment method: %w", err)
	}
	err = audit.RecordNow(ctx, s.pool, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: actor.OrgID, Action: "payment_method.setup",
		TargetType: "organization", TargetID: actor.OrgID.String(), After: map[string]any{"provider": provider, "setup_id": ses.ProviderID},
	})
	if err != nil {
		return Setup{}, err
	}
	return Setup{Provider: provider, SetupID: ses.ProviderID, ClientSecret: ses.ClientSecret, Instructions: ses.Instructions}, nil
}

// MaxGraceDays bounds the days a past_due subscription keeps being
// admitted before it is suspended (payment_settings.grace_days's check).
const MaxGraceDays = 90

// PutSettings sets an issuer's payment settings, for admins, audited.
func (s *Service) PutSettings(ctx context.Context, actor identity.Actor, issuer uuid.UUID, st Settings) (Settings, error) {
	if !actor.IsAdmin() {
		return Settings{}, identity.ErrForbidden
	}
	if len(st.RetryDays) > 20 || st.GraceDays < 0 || st.GraceDays > MaxGraceDays {
		return Settings{}, fmt.Errorf("set payment settings: %w: up to 20 retry days, grace days 0 to %d", ErrInvalid, MaxGraceDays)
	}
	for i, d := range st.RetryDays {
		if d < 1 || d > 365 {
			return Settings{}, fmt.Errorf("set payment settings: %w: retry days 1 to 365", ErrInvalid)
		}
		// They count from the first failure: one not after the one before
		// would be due at once, with no gap.
		if i > 0 && d <= st.RetryDays[i-1] {
			return Settings{}, fmt.Errorf("set payment settings: %w: retry days strictly ascending", ErrInvalid)
		}
	}
	exists, err := db.New(s.pool).OrganizationExists(ctx, issuer)
	if err != nil {
		return Settings{}, fmt.Errorf("read organization: %w", err)
	}
	if !exists {
		return Settings{}, ErrNotFound
	}
	if err := s.SetSettings(ctx, issuer, st); err != nil {
		return Settings{}, err
	}
	if st.RetryDays == nil {
		st.RetryDays = DefaultRetryDays
	}
	err = audit.RecordNow(ctx, s.pool, audit.Change{
		Actor: actor.Subject, ActorRole: string(actor.Role), OrganizationID: issuer, Action: "payment_settings.update",
		TargetType: "organization", TargetID: issuer.String(),
		After: map[string]any{"provider": st.Provider, "retry_days": st.RetryDays, "grace_days": st.GraceDays},
	})
	if err != nil {
		return Settings{}, err
	}
	return st, nil
}
