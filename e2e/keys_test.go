package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/apikey"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
)

// TestControlPlaneKeyLifecycle walks API keys through the control plane
// (real River, Postgres, Redis and a Caddy gateway to make the API
// active) and checks that every change reaches the gateway's Redis record,
// then that no plaintext key issued on the way is left anywhere: not in any
// Postgres table, not in any Redis value, not in the control plane's logs.
func TestControlPlaneKeyLifecycle(t *testing.T) {
	e := newCPEnv(t)
	o := e.options(4)
	o.logLevel = "debug"
	c := e.startControlPlane(t, o)
	stop := func() {
		if err := c.stop(); err != nil {
			t.Errorf("control plane: %v", err)
		}
	}
	redisAddr := testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379")
	rc := redisClient(t, redisAddr, e.redisDB)
	records := enforcement.New(rc)
	ctx := t.Context()

	prov := providerToken(t)
	admin := adminToken(t)
	consumer := consumerToken(t)

	apiID := e.activeAPI(t, c, prov, admin, "keyed")

	planResp, err := c.CreatePlanWithResponse(ctx, apiID, nil, client.PlanInput{
		Name: "Starter", Slug: "starter",
		Terms: client.TermsInput{Type: client.Ptr(client.PlanTypeSubscription), Currency: "USD", BaseFee: "0",
			QuotaRequests: client.Ptr[int64](10000), QuotaHard: client.Ptr(true), RatePerSecond: client.Ptr(10)},
	}, client.Bearer(prov))
	expect(t, http.StatusCreated, planResp, err)
	plan := planResp.JSON201
	subResp, err := c.SubscribeWithResponse(ctx, nil, client.SubscribeInput{PlanId: plan.Id}, client.Bearer(consumer))
	expect(t, http.StatusCreated, subResp, err)
	sub := subResp.JSON201
	if sub.Status != "active" {
		t.Fatalf("POST /v1/subscriptions status = %s; want active", sub.Status)
	}

	// Every plaintext the control plane hands out, for the scan at the end.
	var issued []string
	issue := func(name string) client.KeyWithPlaintext {
		t.Helper()
		// With an Idempotency-Key, as a careful client sends it: the
		// answer holding the plaintext must not be kept for replay.
		idem := "issue-" + name
		path := "/v1/subscriptions/" + sub.Id.String() + "/keys"
		body := client.KeySettings{Name: client.Ptr(name)}
		resp, err := c.CreateKeyWithResponse(ctx, sub.Id, nil, body, client.Bearer(consumer), client.Idempotent(idem))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		if got := resp.StatusCode(); got != http.StatusCreated {
			t.Fatalf("POST %s = %d; want 201", path, got)
		}
		again, err := c.CreateKeyWithResponse(ctx, sub.Id, nil, body, client.Bearer(consumer), client.Idempotent(idem))
		if err != nil {
			t.Fatalf("repeat of POST %s: %v", path, err)
		}
		if got := again.StatusCode(); got != http.StatusConflict || !client.IsProblem(client.Check(again, nil), "idempotency-response-withheld") {
			t.Fatalf("repeat of POST %s = %d %s; want 409 idempotency-response-withheld", path, got, again.Body)
		}
		k := *resp.JSON201
		checkIssued(t, k)
		issued = append(issued, k.Key)
		return k
	}
	// record polls the gateway's record of a key until check passes.
	record := func(t *testing.T, plaintext string, check func(enforcement.KeyRecord) error) enforcement.KeyRecord {
		t.Helper()
		var r enforcement.KeyRecord
		testenv.Deadline(t, 20*time.Second, func() error {
			var err error
			if r, err = records.GetKey(ctx, apikey.Hash(plaintext)); err != nil {
				return err
			}
			return check(r)
		})
		return r
	}
	status := func(want string) func(enforcement.KeyRecord) error {
		return func(r enforcement.KeyRecord) error {
			if r.Status != want {
				return fmt.Errorf("record status %s; want %s", r.Status, want)
			}
			return nil
		}
	}

	k1 := issue("primary")
	if k1.State != "pending" {
		t.Errorf("new key state = %s; want pending until the gateway holds it", k1.State)
	}
	waitKey(t, c, consumer, k1.Id, "active")
	r1 := record(t, k1.Key, status(enforcement.KeyActive))
	if r1.KeyID != k1.Id.String() || r1.SubscriptionID != sub.Id.String() || r1.APIID != apiID.String() {
		t.Errorf("GetKey(hash of key 1) = key %s, subscription %s, api %s; want %s, %s, %s",
			r1.KeyID, r1.SubscriptionID, r1.APIID, k1.Id, sub.Id, apiID)
	}
	got, err := c.GetKeyWithResponse(ctx, k1.Id, nil, client.Bearer(consumer))
	expect(t, http.StatusOK, got, err)
	if carriesPlaintext(got.Body) {
		t.Errorf("GET /v1/keys/%s carries the plaintext", k1.Id)
	}
	testenv.Deadline(t, 20*time.Second, func() error {
		s, err := records.GetSubscription(ctx, sub.Id.String())
		if err != nil {
			return err
		}
		if s.Status != enforcement.SubscriptionActive || s.PlanID != plan.Id.String() || s.APIID != apiID.String() ||
			s.QuotaRequests != 10000 || !s.QuotaHard || s.RatePerSecond != 10 || s.RatePerMinute != 0 {
			return fmt.Errorf("subscription record = %+v; want active, plan %s, 10000 hard, 10/s", s, plan.Id)
		}
		return nil
	})

	t.Run("suspend", func(t *testing.T) {
		resp, err := c.SuspendKeyWithResponse(t.Context(), k1.Id, nil, client.ReasonInput{Reason: client.Ptr("leaked in a log")}, client.Bearer(consumer))
		expect(t, http.StatusOK, resp, err)
		if k := resp.JSON200; k.State != "suspended" {
			t.Errorf("suspend answered state %s; want suspended", k.State)
		}
		record(t, k1.Key, status(enforcement.KeySuspended))
	})

	k2 := issue("rotating")
	waitKey(t, c, consumer, k2.Id, "active")
	record(t, k2.Key, status(enforcement.KeyActive))
	var k3 client.KeyWithPlaintext
	t.Run("rotate with an hour of grace", func(t *testing.T) {
		before := time.Now().Truncate(time.Second)
		resp, err := c.RotateKeyWithResponse(t.Context(), k2.Id, nil, client.RotateInput{GraceSeconds: client.Ptr[int64](3600)}, client.Bearer(consumer))
		expect(t, http.StatusCreated, resp, err)
		after := time.Now()
		k3 = *resp.JSON201
		checkIssued(t, k3)
		issued = append(issued, k3.Key)
		if k3.RotatedFrom == nil || *k3.RotatedFrom != k2.Id {
			t.Errorf("successor rotated_from = %v; want %s", k3.RotatedFrom, k2.Id)
		}
		inHour := func(g time.Time) error {
			if g.Before(before.Add(time.Hour)) || g.After(after.Add(time.Hour)) {
				return fmt.Errorf("grace until %s; want between %s and %s", g, before.Add(time.Hour), after.Add(time.Hour))
			}
			return nil
		}
		old := record(t, k2.Key, func(r enforcement.KeyRecord) error {
			if r.Status != enforcement.KeyActive {
				return fmt.Errorf("rotated-out record status %s; want active during its grace", r.Status)
			}
			return inHour(r.GraceUntil)
		})
		// Redis drops the record a day after its grace ends.
		ttl, err := rc.Do(ctx, rc.B().Pttl().Key(enforcement.KeyName(apikey.Hash(k2.Key))).Build()).AsInt64()
		if want := time.Until(old.GraceUntil.Add(24 * time.Hour)); err != nil || (time.Duration(ttl)*time.Millisecond-want).Abs() > time.Minute {
			t.Errorf("PTTL of the rotated-out record = %dms, %v; want about %s", ttl, err, want)
		}
		got, err := c.GetKeyWithResponse(t.Context(), k2.Id, nil, client.Bearer(consumer))
		expect(t, http.StatusOK, got, err)
		if g := got.JSON200.GraceUntil; g == nil || inHour(*g) != nil {
			t.Errorf("GET rotated-out key grace_until = %v; want an hour from the rotation", g)
		}
		waitKey(t, c, consumer, k3.Id, "active")
		r3 := record(t, k3.Key, status(enforcement.KeyActive))
		if r3.KeyID != k3.Id.String() || !r3.GraceUntil.IsZero() {
			t.Errorf("successor record = key %s, grace %s; want key %s without grace", r3.KeyID, r3.GraceUntil, k3.Id)
		}
	})

	t.Run("revoke", func(t *testing.T) {
		resp, err := c.RevokeKeyWithResponse(t.Context(), k1.Id, nil, client.ReasonInput{}, client.Bearer(consumer))
		expect(t, http.StatusOK, resp, err)
		k := resp.JSON200
		if k.State != "revoked" || k.RevokedAt == nil {
			t.Fatalf("revoke answered state %s, revoked_at %v; want revoked with a time", k.State, k.RevokedAt)
		}
		r := record(t, k1.Key, status(enforcement.KeyRevoked))
		if !r.GraceUntil.Equal(k.RevokedAt.Truncate(time.Second)) {
			t.Errorf("revoked record grace_until = %s; want the revocation, %s", r.GraceUntil, k.RevokedAt.Truncate(time.Second))
		}
	})

	t.Run("delete", func(t *testing.T) {
		del, err := c.DeleteKeyWithResponse(t.Context(), k3.Id, nil, client.Bearer(consumer))
		expect(t, http.StatusNoContent, del, err)
		got, err := c.GetKeyWithResponse(t.Context(), k3.Id, nil, client.Bearer(consumer))
		expect(t, http.StatusNotFound, got, err)
		testenv.Deadline(t, 20*time.Second, func() error {
			r, err := records.GetKey(ctx, apikey.Hash(k3.Key))
			if !errors.Is(err, enforcement.ErrNotFound) {
				return fmt.Errorf("GetKey(hash of deleted key) = %+v, %v; want ErrNotFound", r, err)
			}
			return nil
		})
	})
	if t.Failed() {
		return
	}

	// The scan covers the whole life of the control plane: stop it first,
	// so that its shutdown is in the logs too.
	stop()
	if len(issued) != 3 {
		t.Fatalf("issued %d keys; want 3", len(issued))
	}
	scanForKeys(t, e, c.out.String(), issued, k3.Key, redisAddr)
}

// scanForKeys looks for every issued plaintext key, in each of its
// encodings, in every Postgres table, every Redis value and log, and for
// its hash where it must be: in Postgres, and in Redis unless deleted.
func scanForKeys(t *testing.T, e *cpEnv, log string, issued []string, deleted, redisAddr string) {
	t.Helper()
	pg := dumpPostgres(t, e.pgURL)
	if !strings.Contains(pg["public.river_job"], `"kind":"key_sync"`) {
		t.Fatalf("the Postgres dump of river_job holds no key_sync job: the scan missed the job arguments")
	}
	rd := dumpRedis(t, redisAddr)
	if !strings.Contains(log, `}/rotate","status":201`) {
		t.Fatalf("captured logs lack the access log of the rotation: the log capture is broken")
	}
	for i, p := range issued {
		for form, needle := range secretForms(p) {
			for table, rows := range pg {
				if strings.Contains(rows, needle) {
					t.Errorf("key %d (%s) is in Postgres table %s", i+1, form, table)
				}
			}
			for where, v := range rd {
				if strings.Contains(v, needle) {
					t.Errorf("key %d (%s) is in Redis %s", i+1, form, where)
				}
			}
			if strings.Contains(log, needle) {
				t.Errorf("key %d (%s) is in the control plane's logs", i+1, form)
			}
		}
		// The hashes are stored, so a scan that finds nothing is not blind.
		h := apikey.Hash(p)
		if !anyContains(pg, h) {
			t.Errorf("key %d: its hash %s is nowhere in Postgres; the scan cannot be trusted", i+1, h)
		}
		inRedis := strings.Contains(rd[fmt.Sprintf("db%d", e.redisDB)], h)
		if isDeleted := p == deleted; inRedis == isDeleted {
			t.Errorf("key %d: its hash in Redis database %d = %t; want %t (the deleted key's record is gone, every other one is there)",
				i+1, e.redisDB, inRedis, !isDeleted)
		}
	}
}

// carriesPlaintext reports whether a key's JSON answer carries the key
// itself, which only the answer that issues it may.
func carriesPlaintext(body []byte) bool {
	var k struct {
		Key string `json:"key"`
	}
	return json.Unmarshal(body, &k) == nil && k.Key != ""
}
