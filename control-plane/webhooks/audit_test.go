package webhooks

import (
	"fmt"
	"testing"

	"github.com/google/uuid"
)

// state is what the tests compare before and after a change: the
// endpoint's row (secret included), its deliveries' statuses, the jobs
// queued for them and the audit log.
type state struct {
	endpoints, jobs, audits int
	endpoint, deliveries    string
}

func (e *env) state(id uuid.UUID) state {
	e.t.Helper()
	var s state
	err := e.pool.QueryRow(e.t.Context(), `SELECT
			(SELECT count(*) FROM webhook_endpoints),
			(SELECT count(*) FROM river_job),
			(SELECT count(*) FROM audit_log),
			coalesce((SELECT row_to_json(w)::text FROM webhook_endpoints w WHERE id = $1), ''),
			coalesce((SELECT string_agg(d.id || ':' || d.status, ',' ORDER BY d.id) FROM webhook_deliveries d WHERE endpoint_id = $1), '')`,
		id).Scan(&s.endpoints, &s.jobs, &s.audits, &s.endpoint, &s.deliveries)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// audits returns the actions audited on endpoint id of org, oldest first.
func (e *env) audits(org, id uuid.UUID) []string {
	e.t.Helper()
	var out []string
	err := e.pool.QueryRow(e.t.Context(), `SELECT coalesce(array_agg(action || ' by ' || actor ORDER BY id), '{}')
		FROM audit_log WHERE organization_id = $1 AND target_type = 'webhook_endpoint' AND target_id = $2`,
		org, id.String()).Scan(&out)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// failedDelivery publishes an event to ep and marks its delivery failed,
// so that a redelivery has something to change.
func (e *env) failedDelivery(ep Endpoint) uuid.UUID {
	e.t.Helper()
	e.publish(ep.OrganizationID, EventAPICreated)
	ds := e.deliveries(ep.ID)
	if len(ds) == 0 {
		e.t.Fatalf("no delivery to %s", ep.ID)
	}
	id := ds[len(ds)-1].ID
	if _, err := e.pool.Exec(e.t.Context(), `UPDATE webhook_deliveries SET status = 'failed' WHERE id = $1`, id); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// changes are the audited changes of an endpoint, each run on ep.
var changes = []struct {
	action string
	run    func(e *env, ep Endpoint) error
}{
	{"webhook.update", func(e *env, ep Endpoint) error {
		desc := "changed"
		_, err := e.svc.UpdateEndpoint(e.t.Context(), member(ep.OrganizationID), ep.ID, EndpointPatch{Description: &desc})
		return err
	}},
	{"webhook.rotate_secret", func(e *env, ep Endpoint) error {
		_, err := e.svc.RotateSecret(e.t.Context(), member(ep.OrganizationID), ep.ID)
		return err
	}},
	{"webhook.redeliver", func(e *env, ep Endpoint) error {
		_, err := e.svc.Redeliver(e.t.Context(), member(ep.OrganizationID), e.failedDelivery(ep))
		return err
	}},
	{"webhook.delete", func(e *env, ep Endpoint) error {
		return e.svc.DeleteEndpoint(e.t.Context(), member(ep.OrganizationID), ep.ID)
	}},
}

// TestChangesAreAudited: every change to an endpoint writes one entry,
// attributed to its actor, in the endpoint's organization.
func TestChangesAreAudited(t *testing.T) {
	e := setup(t, nil)
	ep, _ := e.createEndpoint(e.org, "https://hooks.example.com/a", "*")
	want := []string{"webhook.create by member-1"}
	for _, c := range changes {
		if err := c.run(e, ep); err != nil {
			t.Fatalf("%s: %v", c.action, err)
		}
		want = append(want, c.action+" by member-1")
	}
	if got := e.audits(e.org, ep.ID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("audit log of %s = %v; want %v", ep.ID, got, want)
	}
}

// TestChangeAndAuditEntryCommitTogether: a change whose audit entry cannot
// be written does not happen. A trigger in the test's own database refuses
// every audit entry; each change must then fail and leave the endpoint, its
// deliveries, the job queue and the log as they were.
func TestChangeAndAuditEntryCommitTogether(t *testing.T) {
	e := setup(t, nil)
	ctx := t.Context()
	eps := make([]Endpoint, len(changes))
	for i := range changes {
		eps[i], _ = e.createEndpoint(e.org, fmt.Sprintf("https://hooks.example.com/%d", i), "*")
	}
	// The redelivery needs its failed delivery before the log closes.
	var delivery uuid.UUID
	for i, c := range changes {
		if c.action == "webhook.redeliver" {
			delivery = e.failedDelivery(eps[i])
		}
	}
	if _, err := e.pool.Exec(ctx, `
		CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'audit log closed'; END $$;
		CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_log
			FOR EACH ROW EXECUTE FUNCTION test_refuse_audit()`); err != nil {
		t.Fatal(err)
	}

	before := e.state(uuid.Nil)
	if _, _, err := e.svc.CreateEndpoint(ctx, member(e.org), EndpointInput{URL: "https://hooks.example.com/new", EventTypes: []string{"*"}}); err == nil {
		t.Error("CreateEndpoint() with the audit log refusing = nil; want an error")
	}
	if after := e.state(uuid.Nil); after != before {
		t.Errorf("after a refused CreateEndpoint: %+v; want %+v", after, before)
	}

	for i, c := range changes {
		ep := eps[i]
		before := e.state(ep.ID)
		var err error
		if c.action == "webhook.redeliver" {
			_, err = e.svc.Redeliver(ctx, member(e.org), delivery)
		} else {
			err = c.run(e, ep)
		}
		if err == nil {
			t.Errorf("%s with the audit log refusing = nil; want an error", c.action)
		}
		if after := e.state(ep.ID); after != before {
			t.Errorf("after a refused %s: %+v; want %+v", c.action, after, before)
		}
	}
}
