package webhooks

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/egress"
)

func TestEndpointLifecycle(t *testing.T) {
	e := setup(t, nil)
	ctx := t.Context()

	disabled := false
	ep, secret, err := e.svc.CreateEndpoint(ctx, member(e.org), EndpointInput{
		URL: "https://hooks.example.com/a", Description: "billing", EventTypes: []string{EventAPICreated}, Enabled: &disabled,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "whsec_") {
		t.Errorf("CreateEndpoint() secret = %q; want whsec_…", secret)
	}
	if ep.Enabled || ep.OrganizationID != e.org || ep.Description != "billing" || !slices.Equal(ep.EventTypes, []string{EventAPICreated}) {
		t.Errorf("CreateEndpoint() = %+v; want disabled, org %s, description billing, [api.created]", ep, e.org)
	}

	got, err := e.svc.GetEndpoint(ctx, e.org, ep.ID)
	if err != nil || got.URL != ep.URL || !got.CreatedAt.Equal(ep.CreatedAt) {
		t.Errorf("GetEndpoint() = %+v, %v; want %+v", got, err, ep)
	}

	url, on, types := "https://hooks.example.com/b", true, []string{"*"}
	upd, err := e.svc.UpdateEndpoint(ctx, member(e.org), ep.ID, EndpointPatch{URL: &url, Enabled: &on, EventTypes: &types})
	if err != nil {
		t.Fatal(err)
	}
	if upd.URL != url || !upd.Enabled || !slices.Equal(upd.EventTypes, types) || upd.Description != "billing" {
		t.Errorf("UpdateEndpoint() = %+v; want url %s, enabled, [*], description kept", upd, url)
	}
	bad := []string{"nope"}
	var v *ValidationError
	if _, err := e.svc.UpdateEndpoint(ctx, member(e.org), ep.ID, EndpointPatch{EventTypes: &bad}); !errors.As(err, &v) || v.Fields[0].Field != "event_types[0]" {
		t.Errorf("UpdateEndpoint(event_types [nope]) = %v; want a validation error on event_types[0]", err)
	}

	rotated, err := e.svc.RotateSecret(ctx, member(e.org), ep.ID)
	if err != nil || rotated == secret || !strings.HasPrefix(rotated, "whsec_") {
		t.Errorf("RotateSecret() = %q, %v; want a new whsec_ secret", rotated, err)
	}
	var stored string
	if err := e.pool.QueryRow(ctx, `SELECT secret FROM webhook_endpoints WHERE id = $1`, ep.ID).Scan(&stored); err != nil || stored != rotated {
		t.Errorf("stored secret = %q, %v; want the rotated one", stored, err)
	}

	if err := e.svc.DeleteEndpoint(ctx, member(e.org), ep.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.GetEndpoint(ctx, e.org, ep.ID); !errors.Is(err, ErrEndpointNotFound) {
		t.Errorf("GetEndpoint(deleted) = %v; want ErrEndpointNotFound", err)
	}
	if err := e.svc.DeleteEndpoint(ctx, member(e.org), ep.ID); !errors.Is(err, ErrEndpointNotFound) {
		t.Errorf("DeleteEndpoint(deleted) = %v; want ErrEndpointNotFound", err)
	}
}

func TestListEndpointsPages(t *testing.T) {
	e := setup(t, nil)
	ctx := t.Context()
	var want []uuid.UUID
	for range 5 {
		ep, _ := e.createEndpoint(e.org, "https://hooks.example.com/", "*")
		want = append(want, ep.ID)
	}
	e.createEndpoint(e.otherOrg, "https://hooks.example.com/", "*")

	var got []uuid.UUID
	after, pages := "", 0
	for {
		eps, next, err := e.svc.ListEndpoints(ctx, e.org, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, ep := range eps {
			got = append(got, ep.ID)
		}
		if next == "" {
			break
		}
		after = next
	}
	if !slices.Equal(got, want) || pages != 3 {
		t.Errorf("ListEndpoints by 2 = %v in %d pages; want %v in 3", got, pages, want)
	}
	if _, _, err := e.svc.ListEndpoints(ctx, e.org, "not-a-cursor", 2); !errors.Is(err, ErrBadCursor) {
		t.Errorf("ListEndpoints(bad cursor) = %v; want ErrBadCursor", err)
	}
}

func TestCreateEndpointValidation(t *testing.T) {
	e := setup(t, nil)
	_, _, err := e.svc.CreateEndpoint(t.Context(), member(e.org), EndpointInput{URL: "https://hooks.example.com/", EventTypes: []string{"api.created", "api.renamed"}})
	var v *ValidationError
	if !errors.As(err, &v) || len(v.Fields) != 1 || v.Fields[0].Field != "event_types[1]" || !strings.Contains(v.Fields[0].Detail, `"api.renamed"`) {
		t.Fatalf("CreateEndpoint(unknown type) = %v; want a validation error naming event_types[1] and the type", err)
	}
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM webhook_endpoints`).Scan(&n); err != nil || n != 0 {
		t.Errorf("endpoints after refused create = %d, %v; want 0", n, err)
	}
}

func TestOtherOrganizationCannotReachEndpoint(t *testing.T) {
	e := setup(t, nil)
	ctx := t.Context()
	r := newReceiver(t)
	ep, secret := e.createEndpoint(e.org, r.srv.URL, "*")
	e.publish(e.org, EventAPICreated)
	d := e.deliveries(ep.ID)[0]

	other := e.otherOrg
	desc := "mine now"
	checks := []struct {
		name string
		err  error
		want error
	}{
		{"GetEndpoint", second(e.svc.GetEndpoint(ctx, other, ep.ID)), ErrEndpointNotFound},
		{"UpdateEndpoint", second(e.svc.UpdateEndpoint(ctx, member(other), ep.ID, EndpointPatch{Description: &desc})), ErrEndpointNotFound},
		{"RotateSecret", second(e.svc.RotateSecret(ctx, member(other), ep.ID)), ErrEndpointNotFound},
		{"DeleteEndpoint", e.svc.DeleteEndpoint(ctx, member(other), ep.ID), ErrEndpointNotFound},
		{"ListDeliveries", third(e.svc.ListDeliveries(ctx, other, ep.ID, "", 10)), ErrEndpointNotFound},
		{"GetDelivery", second(e.svc.GetDelivery(ctx, other, d.ID)), ErrDeliveryNotFound},
		{"Redeliver", second(e.svc.Redeliver(ctx, member(other), d.ID)), ErrDeliveryNotFound},
	}
	for _, c := range checks {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s(other organization) = %v; want %v", c.name, c.err, c.want)
		}
	}
	if eps, _, err := e.svc.ListEndpoints(ctx, other, "", 10); err != nil || len(eps) != 0 {
		t.Errorf("ListEndpoints(other organization) = %v, %v; want none", eps, err)
	}

	got, err := e.svc.GetEndpoint(ctx, e.org, ep.ID)
	if err != nil || got.Description != "" || !got.UpdatedAt.Equal(ep.UpdatedAt) {
		t.Errorf("GetEndpoint(owner) = %+v, %v; want it unchanged", got, err)
	}
	var stored string
	if err := e.pool.QueryRow(ctx, `SELECT secret FROM webhook_endpoints WHERE id = $1`, ep.ID).Scan(&stored); err != nil || stored != secret {
		t.Errorf("secret after other organization's rotate = %q, %v; want the original", stored, err)
	}
	// Publishing in the other organization reaches none of its endpoints.
	e.publish(other, EventAPICreated)
	if ds := e.deliveries(ep.ID); len(ds) != 1 {
		t.Errorf("deliveries after the other organization published = %d; want 1", len(ds))
	}
}

func second[T any](_ T, err error) error { return err }

func third[T, U any](_ T, _ U, err error) error { return err }

func TestPrivateNetworksRefused(t *testing.T) {
	e := setup(t, func(c *Config) { c.AllowPrivateNetworks = false; c.MaxAttempts = 1 })
	ctx := t.Context()
	for _, url := range []string{
		"http://127.0.0.1:8080/hook",
		"http://localhost/hook",
		"http://[::1]/hook",
		"http://169.254.169.254/latest/meta-data",
		"https://10.0.0.7/hook",
		"http://0.0.0.0/",
	} {
		_, _, err := e.svc.CreateEndpoint(ctx, member(e.org), EndpointInput{URL: url, EventTypes: []string{"*"}})
		var v *ValidationError
		if !errors.As(err, &v) || v.Fields[0].Field != "url" {
			t.Errorf("CreateEndpoint(%s) = %v; want a validation error on url", url, err)
		}
	}
	// A public address is accepted (a literal: no name to resolve).
	ep, _ := e.createEndpoint(e.org, "https://93.184.215.14/hook", "*")
	private := "http://192.168.0.10/hook"
	var v *ValidationError
	if _, err := e.svc.UpdateEndpoint(ctx, member(e.org), ep.ID, EndpointPatch{URL: &private}); !errors.As(err, &v) || v.Fields[0].Field != "url" {
		t.Errorf("UpdateEndpoint(url %s) = %v; want a validation error on url", private, err)
	}

	// A name can resolve elsewhere once saved (DNS rebinding): the dialer
	// refuses too. The receiver listens on loopback; the row is written
	// directly, as if its name had resolved to a public address earlier.
	r := newReceiver(t)
	got := e.deliverUnchecked(r.srv.URL)
	if got.Status != StatusFailed || len(got.History) != 1 || got.History[0].StatusCode != nil ||
		!strings.Contains(got.History[0].Error, ErrPrivateAddress.Error()) {
		t.Errorf("delivery to loopback = %+v; want failed after one attempt refused with %q", got, ErrPrivateAddress)
	}
	if n := len(r.received()) + len(r.rejected()); n != 0 {
		t.Errorf("receiver on loopback got %d requests; want 0", n)
	}
}

// TestVeilServicesRefusedWithPrivateNetworks: opening private networks for
// development opens no Veil service. A URL naming the test's own Postgres
// on 127.0.0.1 (a Veil default port) or an endpoint on the policy's deny
// list (as the control plane denies the addresses it is configured with)
// is refused when saved and when a delivery dials, while another loopback
// receiver is accepted.
func TestVeilServicesRefusedWithPrivateNetworks(t *testing.T) {
	denied, allowed := newReceiver(t), newReceiver(t)
	deniedAddr := strings.TrimPrefix(denied.srv.URL, "http://")
	e := setup(t, func(c *Config) {
		p, err := EgressPolicy(t.Context(), true, []string{deniedAddr})
		if err != nil {
			t.Fatal(err)
		}
		c.Egress, c.MaxAttempts = p, 1
	})
	ctx := t.Context()
	postgres := fmt.Sprintf("http://127.0.0.1:%d/hook", e.pool.Config().ConnConfig.Port)

	for _, url := range []string{postgres, denied.srv.URL + "/hook"} {
		_, _, err := e.svc.CreateEndpoint(ctx, member(e.org), EndpointInput{URL: url, EventTypes: []string{"*"}})
		var v *ValidationError
		if !errors.As(err, &v) || v.Fields[0].Field != "url" || !strings.Contains(v.Fields[0].Detail, egress.KindVeil) {
			t.Errorf("CreateEndpoint(%s) = %v; want a validation error on url naming %s", url, err, egress.KindVeil)
		}
	}
	ep, _ := e.createEndpoint(e.org, allowed.srv.URL+"/hook", "*")
	var v *ValidationError
	if _, err := e.svc.UpdateEndpoint(ctx, member(e.org), ep.ID, EndpointPatch{URL: &postgres}); !errors.As(err, &v) || v.Fields[0].Field != "url" {
		t.Errorf("UpdateEndpoint(url %s) = %v; want a validation error on url", postgres, err)
	}

	// Rows written directly, as if saved before the policy denied them:
	// the delivery's dialer refuses them on its own.
	for _, url := range []string{postgres, denied.srv.URL + "/hook"} {
		got := e.deliverUnchecked(url)
		if got.Status != StatusFailed || len(got.History) != 1 || got.History[0].StatusCode != nil ||
			!strings.Contains(got.History[0].Error, egress.KindVeil) {
			t.Errorf("delivery to %s = %+v; want failed after one attempt refused as %s", url, got, egress.KindVeil)
		}
	}
	if n := len(denied.received()) + len(denied.rejected()); n != 0 {
		t.Errorf("denied receiver got %d requests; want 0", n)
	}
}
