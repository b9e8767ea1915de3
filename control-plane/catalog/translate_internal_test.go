package catalog

import (
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/testenv"
)

// TestTranslateForeignKeys: the foreign key of a subscription that refuses
// its API's deletion is ErrAPIInUse; an API row naming no organization is
// not "in use".
func TestTranslateForeignKeys(t *testing.T) {
	pool := testenv.Postgres(t)
	ctx := t.Context()
	var org, api, plan, version string
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(pool.QueryRow(ctx, `INSERT INTO organizations (slug, name) VALUES ('fk-org', 'fk-org') RETURNING id::text`).Scan(&org))
	must(pool.QueryRow(ctx, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
		VALUES ($1, 'API', 'fk-api', 'http://127.0.0.1:1', '1', 'retired', 'p') RETURNING id::text`, org).Scan(&api))
	must(pool.QueryRow(ctx, `INSERT INTO plans (api_id, name, slug) VALUES ($1, 'P', 'p') RETURNING id::text`, api).Scan(&plan))
	must(pool.QueryRow(ctx, `INSERT INTO plan_versions (plan_id, version, type, currency, created_by)
		VALUES ($1, 1, 'subscription', 'USD', 'p') RETURNING id::text`, plan).Scan(&version))
	_, err := pool.Exec(ctx, `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id, current_period_start, current_period_end)
		VALUES ($1, 'c', $2, $3, now(), now() + interval '1 month')`, org, api, version)
	must(err)

	_, err = pool.Exec(ctx, `DELETE FROM apis WHERE id = $1`, api)
	if got := translate(err); !errors.Is(got, ErrAPIInUse) {
		t.Errorf("translate(delete of a subscribed API: %v) = %v; want ErrAPIInUse", err, got)
	}
	_, err = pool.Exec(ctx, `INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
		VALUES ($1, 'API', 'fk-orphan', 'http://127.0.0.1:1', '1', 'draft', 'p')`, uuid.NewString())
	if got := translate(err); err == nil || errors.Is(got, ErrAPIInUse) {
		t.Errorf("translate(insert of an API of no organization: %v) = %v; want another error", err, got)
	}
}
