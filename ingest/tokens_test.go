package ingest_test

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/ingesttokens"
	"github.com/veil-platform/veil/ingest"
	"github.com/veil-platform/veil/internal/ingesttoken"
	"github.com/veil-platform/veil/internal/testenv"
)

var admin = identity.Actor{Subject: "ops", Role: identity.RoleAdmin}

// tokenStore migrates the test database and returns the control plane's
// token service and ingest's lookup on it.
func tokenStore(t *testing.T) (*ingesttokens.Service, *ingesttoken.Store) {
	svc, store, _ := tokenDB(t)
	return svc, store
}

// tokenDB is tokenStore with the pool, for tests that need APIs and
// subscriptions in the database.
func tokenDB(t *testing.T) (*ingesttokens.Service, *ingesttoken.Store, *pgxpool.Pool) {
	t.Helper()
	pool := testenv.Postgres(t)
	return ingesttokens.New(pool), ingesttoken.NewStore(pool), pool
}

// catalog inserts a provider organization with n APIs and returns their ids.
func catalog(t *testing.T, pool *pgxpool.Pool, n int) []string {
	t.Helper()
	sfx := testenv.Suffix()
	var org string
	if err := pool.QueryRow(t.Context(), `INSERT INTO organizations (slug, name) VALUES ($1, $1) RETURNING id::text`, "provider-"+sfx).Scan(&org); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range n {
		var id string
		if err := pool.QueryRow(t.Context(), `INSERT INTO apis (organization_id, name, slug, upstream_url, version, state, created_by)
			VALUES ($1, 'API', $2, 'http://127.0.0.1:1', '1', 'active', 'provider-user') RETURNING id::text`,
			org, fmt.Sprintf("api-%s-%d", sfx, i)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// subscribe inserts a consumer organization's subscription to apiID and
// returns its id.
func subscribe(t *testing.T, pool *pgxpool.Pool, apiID string) string {
	t.Helper()
	sfx := testenv.Suffix()
	var org, plan, version, id string
	if err := pool.QueryRow(t.Context(), `INSERT INTO organizations (slug, name) VALUES ($1, $1) RETURNING id::text`, "consumer-"+sfx).Scan(&org); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(t.Context(), `INSERT INTO plans (api_id, name, slug, status) VALUES ($1, 'Starter', $2, 'active') RETURNING id::text`,
		apiID, "starter-"+sfx).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(t.Context(), `INSERT INTO plan_versions (plan_id, version, type, currency, created_by)
		VALUES ($1, 1, 'subscription', 'USD', 'provider-user') RETURNING id::text`, plan).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(t.Context(), `INSERT INTO subscriptions (organization_id, subscriber, api_id, plan_version_id,
			current_period_start, current_period_end) VALUES ($1, 'consumer', $2, $3, now(), now() + interval '30 days') RETURNING id::text`,
		org, apiID, version).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func scopedEvent(id, source, apiID string) string {
	return subjectEvent(id, source, apiID, uuid.NewString())
}

func subjectEvent(id, source, apiID, subject string) string {
	return fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":%q,"type":"veil.usage.record","time":%q,"subject":%q,"data":{"api_id":%q,"units":1}}`,
		id, source, now.Format(time.RFC3339), subject, apiID)
}

func reasons(a answer) map[string]string {
	out := map[string]string{}
	errs, _ := a.Body["errors"].([]any)
	for _, e := range errs {
		m := e.(map[string]any)
		out[m["id"].(string)] = m["reason"].(string) + " " + fmt.Sprint(m["field"])
	}
	return out
}

// checkPartial checks a 207 answer to a mixed batch: accepted events
// written, the others named with their reason and field as in want.
func checkPartial(t *testing.T, a answer, accepted int, want map[string]string) {
	t.Helper()
	if a.Status != http.StatusMultiStatus || a.Body["accepted"] != float64(accepted) {
		t.Fatalf("POST mixed batch = %d %v; want 207 with %d accepted", a.Status, a.Body, accepted)
	}
	if got := reasons(a); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rejections = %v; want %v", got, want)
	}
}

// TestScopedTokenRefusesOtherSourcesAndAPIs: a token issued for one source
// and one API writes exactly those; every other event of its batch is
// named with its reason, and a batch of nothing but such events is 403.
// Only the allowed events reach the topic.
func TestScopedTokenRefusesOtherSourcesAndAPIs(t *testing.T) {
	svc, store, pool := tokenDB(t)
	apis := catalog(t, pool, 2)
	apiA, apiB := apis[0], apis[1]
	subA, subB := subscribe(t, pool, apiA), subscribe(t, pool, apiB)
	tok, err := svc.Create(t.Context(), admin, ingesttokens.CreateInput{Name: "billing-eu", Sources: []string{"/billing/eu", "/crm/*"}, APIIDs: []string{apiA}})
	if err != nil {
		t.Fatal(err)
	}
	f := setup(t, false, func(c *ingest.Config) { c.Tokens, c.Lookup = nil, store })
	auth := "Bearer " + tok.Secret

	body := "[" + strings.Join([]string{
		subjectEvent("ok", "/billing/eu", apiA, subA),
		subjectEvent("ok-prefix", "/crm/acme", apiA, subA),
		subjectEvent("other-source", "/billing/us", apiA, subA),
		subjectEvent("other-api", "/billing/eu", apiB, subB),
		subjectEvent("gateway", "/gateway/eu-1", apiA, subA),
	}, ",") + "]"
	a := f.post(t, ingest.MediaTypeBatch, body, auth)
	checkPartial(t, a, 2, map[string]string{
		"other-source": "source_not_allowed source",
		"other-api":    "api_not_allowed data.api_id",
		"gateway":      "source_not_allowed source",
	})

	a = f.post(t, ingest.MediaTypeBatch, "["+subjectEvent("only-bad", "/billing/us", apiA, subA)+"]", auth)
	if a.Status != http.StatusForbidden || a.Body["type"] != "https://veil.dev/problems/events-out-of-scope" {
		t.Errorf("POST out-of-scope batch = %d %v; want 403 events-out-of-scope", a.Status, a.Body)
	}

	got := ids(f.kafka.ReadAll(t, f.topic))
	if len(got) != 2 || got["ok"] == nil || got["ok-prefix"] == nil {
		t.Errorf("topic holds %v; want exactly ok and ok-prefix", slices.Sorted(maps.Keys(got)))
	}
}

// TestAPIScopedTokenHoldsSubjectsToItsAPIs: a token scoped to API A may
// name as subject only subscriptions of the event's API: a subscription of
// API B, even with data.api_id A, and an id that is no subscription are
// refused with subject_not_allowed, and a batch of nothing else is 403.
// A token without an API list writes any subject.
func TestAPIScopedTokenHoldsSubjectsToItsAPIs(t *testing.T) {
	svc, store, pool := tokenDB(t)
	apis := catalog(t, pool, 3)
	apiA, apiB, apiC := apis[0], apis[1], apis[2]
	subA, subB, subC := subscribe(t, pool, apiA), subscribe(t, pool, apiB), subscribe(t, pool, apiC)
	scoped, err := svc.Create(t.Context(), admin, ingesttokens.CreateInput{Name: "billing", Sources: []string{"/billing"}, APIIDs: []string{apiA, apiC}})
	if err != nil {
		t.Fatal(err)
	}
	anyAPI, err := svc.Create(t.Context(), admin, ingesttokens.CreateInput{Name: "crm", Sources: []string{"/crm"}})
	if err != nil {
		t.Fatal(err)
	}
	f := setup(t, false, func(c *ingest.Config) { c.Tokens, c.Lookup = nil, store })

	body := "[" + strings.Join([]string{
		subjectEvent("own", "/billing", apiA, subA),
		subjectEvent("other-api-sub", "/billing", apiA, subB),
		subjectEvent("no-sub", "/billing", apiA, uuid.NewString()),
		subjectEvent("crossed", "/billing", apiA, subC),
		subjectEvent("own-c", "/billing", apiC, subC),
		// An anonymous refusal names no subscription: refused, and never
		// sent to the lookup (which takes subscription ids only).
		fmt.Sprintf(`{"specversion":"1.0","id":"anon","source":"/billing","type":"veil.api.request","time":%q,"subject":"anonymous","data":{"api_id":%q,"method":"GET","route":"/r","path":"/r","status":401,"latency_ms":1,"request_bytes":1,"response_bytes":1,"refusal":"key_missing"}}`,
			now.Format(time.RFC3339), apiA),
	}, ",") + "]"
	a := f.post(t, ingest.MediaTypeBatch, body, "Bearer "+scoped.Secret)
	checkPartial(t, a, 2, map[string]string{
		"other-api-sub": "subject_not_allowed subject",
		"no-sub":        "subject_not_allowed subject",
		"crossed":       "subject_not_allowed subject",
		"anon":          "subject_not_allowed subject",
	})
	a = f.post(t, ingest.MediaTypeBatch, "["+subjectEvent("only-foreign", "/billing", apiA, subB)+"]", "Bearer "+scoped.Secret)
	if a.Status != http.StatusForbidden || a.Body["type"] != "https://veil.dev/problems/events-out-of-scope" {
		t.Errorf("POST batch of foreign subjects = %d %v; want 403 events-out-of-scope", a.Status, a.Body)
	}
	if a := f.post(t, ingest.MediaTypeEvent, subjectEvent("any", "/crm", apiA, uuid.NewString()), "Bearer "+anyAPI.Secret); a.Status != http.StatusAccepted {
		t.Errorf("POST with a token for any API = %d %v; want 202", a.Status, a.Body)
	}
	got := ids(f.kafka.ReadAll(t, f.topic))
	if len(got) != 3 || got["own"] == nil || got["own-c"] == nil || got["any"] == nil {
		t.Errorf("topic holds %v; want exactly own, own-c and any", slices.Sorted(maps.Keys(got)))
	}
}

// TestBootstrapTokenScope: a bootstrap token without a scope writes any
// source but a gateway's; one with a scope only its sources.
func TestBootstrapTokenScope(t *testing.T) {
	const gw = "gateway-token-0123456789"
	f := setup(t, true, func(c *ingest.Config) { c.Tokens = append(c.Tokens, gw+"=/gateway/eu-1") })
	tests := []struct {
		token, source string
		want          int
	}{
		{token, "/billing/eu", http.StatusAccepted},
		{token, "/gateway/eu-1", http.StatusForbidden},
		{gw, "/gateway/eu-1", http.StatusAccepted},
		{gw, "/gateway/eu-2", http.StatusForbidden},
		{gw, "/billing/eu", http.StatusForbidden},
	}
	for i, tc := range tests {
		a := f.post(t, ingest.MediaTypeEvent, scopedEvent(fmt.Sprint("e", i), tc.source, "api_1"), "Bearer "+tc.token)
		if a.Status != tc.want {
			t.Errorf("POST source %s with token %s… = %d %v; want %d", tc.source, tc.token[:4], a.Status, a.Body, tc.want)
		}
	}
}

// TestRevokedTokenStopsWorking: once revoked through the control plane, an
// issued token is refused within the cache TTL; a token never issued is
// refused at once, and the database holds no plaintext.
func TestRevokedTokenStopsWorking(t *testing.T) {
	svc, store := tokenStore(t)
	tok, err := svc.Create(t.Context(), admin, ingesttokens.CreateInput{Name: "crm", Sources: []string{"/crm"}})
	if err != nil {
		t.Fatal(err)
	}
	f := setup(t, false, func(c *ingest.Config) { c.Lookup, c.TokenCacheTTL = store, 200*time.Millisecond })
	auth := "Bearer " + tok.Secret
	if a := f.post(t, ingest.MediaTypeEvent, scopedEvent("before", "/crm", "api_1"), auth); a.Status != http.StatusAccepted {
		t.Fatalf("POST with a live token = %d %v; want 202", a.Status, a.Body)
	}
	if a := f.post(t, ingest.MediaTypeEvent, scopedEvent("forged", "/crm", "api_1"), "Bearer "+ingesttoken.Prefix+strings.Repeat("A", 43)); a.Status != http.StatusUnauthorized {
		t.Errorf("POST with a token never issued = %d %v; want 401", a.Status, a.Body)
	}
	list, err := svc.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list {
		if strings.Contains(fmt.Sprintf("%+v", l), tok.Secret) {
			t.Fatalf("listed token %+v holds the plaintext", l)
		}
	}

	if _, err := svc.Revoke(t.Context(), admin, tok.ID); err != nil {
		t.Fatal(err)
	}
	n := 0
	testenv.Deadline(t, 10*time.Second, func() error {
		n++
		a := f.post(t, ingest.MediaTypeEvent, scopedEvent(fmt.Sprint("after-", n), "/crm", "api_1"), auth)
		if a.Status != http.StatusUnauthorized {
			return fmt.Errorf("POST with a revoked token = %d; want 401", a.Status)
		}
		return nil
	})
}

// TestSubjectMustBeASubscriptionID: a subject that is not a subscription id,
// braces of a Redis Cluster hash tag above all, is refused with its reason
// and never reaches the topic.
func TestSubjectMustBeASubscriptionID(t *testing.T) {
	f := setup(t, false, nil)
	good := uuid.NewString()
	bad := map[string]string{
		"hash-tag":   "{" + good + "}",
		"braces":     "sub_{a}",
		"name":       "sub_demo_0",
		"upper-case": strings.ToUpper(good),
		"anonymous":  "anonymous",
	}
	events := []string{fmt.Sprintf(`{"specversion":"1.0","id":"good","source":"/test","type":"veil.usage.record","time":%q,"subject":%q,"data":{"api_id":"api_1"}}`, now.Format(time.RFC3339), good)}
	for id, subject := range bad {
		events = append(events, fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/test","type":"veil.usage.record","time":%q,"subject":%q,"data":{"api_id":"api_1"}}`, id, now.Format(time.RFC3339), subject))
	}
	a := f.post(t, ingest.MediaTypeBatch, "["+strings.Join(events, ",")+"]", "Bearer "+token)
	if a.Status != http.StatusMultiStatus || a.Body["accepted"] != float64(1) {
		t.Fatalf("POST = %d %v; want 207 with 1 accepted", a.Status, a.Body)
	}
	got := reasons(a)
	for id := range bad {
		if got[id] != "invalid_subject subject" {
			t.Errorf("event %s (subject %q) rejected as %q; want invalid_subject on subject", id, bad[id], got[id])
		}
	}
	if recs := ids(f.kafka.ReadAll(t, f.topic)); len(recs) != 1 || recs["good"] == nil {
		t.Errorf("topic holds %v; want only good", slices.Sorted(maps.Keys(recs)))
	}
}
