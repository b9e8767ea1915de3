package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/internal/testenv"
)

// keyView is an API key as the control plane answers it.
type keyView struct {
	ID             string     `json:"id"`
	SubscriptionID string     `json:"subscription_id"`
	APIID          string     `json:"api_id"`
	Prefix         string     `json:"prefix"`
	Masked         string     `json:"masked"`
	State          string     `json:"state"`
	GraceUntil     *time.Time `json:"grace_until"`
	RotatedFrom    *string    `json:"rotated_from"`
	RevokedAt      *time.Time `json:"revoked_at"`
	Plaintext      string     `json:"key"`
}

// TestControlPlaneKeyLifecycle walks API keys through the wired control
// plane (real River, Postgres, Redis and a Caddy gateway to make the API
// active) and checks that every change reaches the gateway's Redis record,
// then that no plaintext key issued on the way is left anywhere: not in any
// Postgres table, not in any Redis value, not in the control plane's logs.
func TestControlPlaneKeyLifecycle(t *testing.T) {
	e := newCPEnv(t)
	logs := &testenv.SyncBuffer{}
	logger := slog.New(slog.NewMultiHandler(testenv.Logger(t).Handler(),
		slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	c, stop := e.startLoggedControlPlane(t, logger)
	redisAddr := testenv.Env("VEIL_TEST_REDIS_ADDR", "127.0.0.1:6379")
	rc := redisClient(t, redisAddr, e.redisDB)
	records := enforcement.New(rc)
	ctx := t.Context()

	prov := token(t, "acme", "alice", identity.RoleProvider)
	admin := token(t, "platform", "operator", identity.RoleAdmin)
	consumer := token(t, "globex", "bob", identity.RoleConsumer)

	apiID, approvalID := e.register(c, prov, "keyed")
	c.must(http.StatusOK, "POST", "/v1/admin/approvals/"+approvalID+"/approve", admin, nil, nil)
	waitState(t, c, prov, apiID, "active", 30*time.Second, "failed")

	var plan struct {
		ID string `json:"id"`
	}
	c.must(http.StatusCreated, "POST", "/v1/apis/"+apiID+"/plans", prov, map[string]any{
		"name": "Starter", "slug": "starter",
		"terms": map[string]any{"type": "subscription", "currency": "USD", "base_fee": "0",
			"quota_requests": 10000, "quota_hard": true, "rate_per_second": 10},
	}, &plan)
	var sub struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	c.must(http.StatusCreated, "POST", "/v1/subscriptions", consumer, map[string]any{"plan_id": plan.ID}, &sub)
	if sub.Status != "active" {
		t.Fatalf("POST /v1/subscriptions status = %s; want active", sub.Status)
	}

	// Every plaintext the control plane hands out, for the scan at the end.
	var issued []string
	issue := func(name string) keyView {
		t.Helper()
		var k keyView
		// With an Idempotency-Key, as a careful client sends it: the
		// answer holding the plaintext must not be kept for replay.
		idem := "issue-" + name
		path, body := "/v1/subscriptions/"+sub.ID+"/keys", map[string]any{"name": name}
		if got := c.doWith("POST", path, consumer, body, &k, "Idempotency-Key", idem); got != http.StatusCreated {
			t.Fatalf("POST %s = %d; want 201", path, got)
		}
		var again map[string]any
		if got := c.doWith("POST", path, consumer, body, &again, "Idempotency-Key", idem); got != http.StatusConflict ||
			again["type"] != "https://veil.dev/problems/idempotency-response-withheld" {
			t.Fatalf("repeat of POST %s = %d %v; want 409 idempotency-response-withheld", path, got, again)
		}
		checkIssued(t, k)
		issued = append(issued, k.Plaintext)
		return k
	}
	// record polls the gateway's record of a key until check passes.
	record := func(t *testing.T, plaintext string, check func(enforcement.KeyRecord) error) enforcement.KeyRecord {
		t.Helper()
		var r enforcement.KeyRecord
		testenv.Deadline(t, 20*time.Second, func() error {
			var err error
			if r, err = records.GetKey(ctx, enforcement.Hash(plaintext)); err != nil {
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
	waitKey(t, c, consumer, k1.ID, "active")
	r1 := record(t, k1.Plaintext, status(enforcement.KeyActive))
	if r1.KeyID != k1.ID || r1.SubscriptionID != sub.ID || r1.APIID != apiID {
		t.Errorf("GetKey(hash of key 1) = key %s, subscription %s, api %s; want %s, %s, %s",
			r1.KeyID, r1.SubscriptionID, r1.APIID, k1.ID, sub.ID, apiID)
	}
	var got keyView
	c.must(http.StatusOK, "GET", "/v1/keys/"+k1.ID, consumer, nil, &got)
	if got.Plaintext != "" {
		t.Errorf("GET /v1/keys/%s carries the plaintext", k1.ID)
	}
	testenv.Deadline(t, 20*time.Second, func() error {
		s, err := records.GetSubscription(ctx, sub.ID)
		if err != nil {
			return err
		}
		if s.Status != enforcement.SubscriptionActive || s.PlanID != plan.ID || s.APIID != apiID ||
			s.QuotaRequests != 10000 || !s.QuotaHard || s.RatePerSecond != 10 || s.RatePerMinute != 0 {
			return fmt.Errorf("subscription record = %+v; want active, plan %s, 10000 hard, 10/s", s, plan.ID)
		}
		return nil
	})

	t.Run("suspend", func(t *testing.T) {
		c := c.with(t)
		var k keyView
		c.must(http.StatusOK, "POST", "/v1/keys/"+k1.ID+"/suspend", consumer, map[string]string{"reason": "leaked in a log"}, &k)
		if k.State != "suspended" {
			t.Errorf("suspend answered state %s; want suspended", k.State)
		}
		record(t, k1.Plaintext, status(enforcement.KeySuspended))
	})

	k2 := issue("rotating")
	waitKey(t, c, consumer, k2.ID, "active")
	record(t, k2.Plaintext, status(enforcement.KeyActive))
	var k3 keyView
	t.Run("rotate with an hour of grace", func(t *testing.T) {
		c := c.with(t)
		before := time.Now().Truncate(time.Second)
		c.must(http.StatusCreated, "POST", "/v1/keys/"+k2.ID+"/rotate", consumer, map[string]any{"grace_seconds": 3600}, &k3)
		after := time.Now()
		checkIssued(t, k3)
		issued = append(issued, k3.Plaintext)
		if k3.RotatedFrom == nil || *k3.RotatedFrom != k2.ID {
			t.Errorf("successor rotated_from = %v; want %s", k3.RotatedFrom, k2.ID)
		}
		inHour := func(g time.Time) error {
			if g.Before(before.Add(time.Hour)) || g.After(after.Add(time.Hour)) {
				return fmt.Errorf("grace until %s; want between %s and %s", g, before.Add(time.Hour), after.Add(time.Hour))
			}
			return nil
		}
		old := record(t, k2.Plaintext, func(r enforcement.KeyRecord) error {
			if r.Status != enforcement.KeyActive {
				return fmt.Errorf("rotated-out record status %s; want active during its grace", r.Status)
			}
			return inHour(r.GraceUntil)
		})
		// Redis drops the record a day after its grace ends.
		ttl, err := rc.Do(ctx, rc.B().Pttl().Key(enforcement.KeyName(enforcement.Hash(k2.Plaintext))).Build()).AsInt64()
		if want := time.Until(old.GraceUntil.Add(24 * time.Hour)); err != nil || (time.Duration(ttl)*time.Millisecond-want).Abs() > time.Minute {
			t.Errorf("PTTL of the rotated-out record = %dms, %v; want about %s", ttl, err, want)
		}
		c.must(http.StatusOK, "GET", "/v1/keys/"+k2.ID, consumer, nil, &got)
		if got.GraceUntil == nil || inHour(*got.GraceUntil) != nil {
			t.Errorf("GET rotated-out key grace_until = %v; want an hour from the rotation", got.GraceUntil)
		}
		waitKey(t, c, consumer, k3.ID, "active")
		r3 := record(t, k3.Plaintext, status(enforcement.KeyActive))
		if r3.KeyID != k3.ID || !r3.GraceUntil.IsZero() {
			t.Errorf("successor record = key %s, grace %s; want key %s without grace", r3.KeyID, r3.GraceUntil, k3.ID)
		}
	})

	t.Run("revoke", func(t *testing.T) {
		c := c.with(t)
		var k keyView
		c.must(http.StatusOK, "POST", "/v1/keys/"+k1.ID+"/revoke", consumer, nil, &k)
		if k.State != "revoked" || k.RevokedAt == nil {
			t.Fatalf("revoke answered state %s, revoked_at %v; want revoked with a time", k.State, k.RevokedAt)
		}
		r := record(t, k1.Plaintext, status(enforcement.KeyRevoked))
		if !r.GraceUntil.Equal(k.RevokedAt.Truncate(time.Second)) {
			t.Errorf("revoked record grace_until = %s; want the revocation, %s", r.GraceUntil, k.RevokedAt.Truncate(time.Second))
		}
	})

	t.Run("delete", func(t *testing.T) {
		c := c.with(t)
		c.must(http.StatusNoContent, "DELETE", "/v1/keys/"+k3.ID, consumer, nil, nil)
		c.must(http.StatusNotFound, "GET", "/v1/keys/"+k3.ID, consumer, nil, nil)
		testenv.Deadline(t, 20*time.Second, func() error {
			r, err := records.GetKey(ctx, enforcement.Hash(k3.Plaintext))
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
	pg := dumpPostgres(t, e.pgURL)
	if !strings.Contains(pg["public.river_job"], `"kind":"key_sync"`) {
		t.Fatalf("the Postgres dump of river_job holds no key_sync job: the scan missed the job arguments")
	}
	rd := dumpRedis(t, redisAddr)
	log := logs.String()
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
		h := enforcement.Hash(p)
		if !anyContains(pg, h) {
			t.Errorf("key %d: its hash %s is nowhere in Postgres; the scan cannot be trusted", i+1, h)
		}
		inRedis := strings.Contains(rd[fmt.Sprintf("db%d", e.redisDB)], h)
		if deleted := p == k3.Plaintext; inRedis == deleted {
			t.Errorf("key %d: its hash in Redis database %d = %t; want %t (the deleted key's record is gone, every other one is there)",
				i+1, e.redisDB, inRedis, !deleted)
		}
	}
}

// checkIssued checks the one answer that carries a key's plaintext.
func checkIssued(t *testing.T, k keyView) {
	t.Helper()
	if !keyShape.MatchString(k.Plaintext) {
		t.Fatalf("issued key = %q; want veil_test_ and 39 base62 characters", k.Plaintext)
	}
	if want := k.Prefix + "…" + k.Plaintext[len(k.Plaintext)-4:]; k.Masked != want || !strings.HasPrefix(k.Plaintext, k.Prefix) {
		t.Errorf("masked = %q, prefix %q; want %q", k.Masked, k.Prefix, want)
	}
}

var keyShape = regexp.MustCompile(`^veil_test_[0-9A-Za-z]{39}$`)

// waitKey polls a key until its state is want.
func waitKey(t *testing.T, c cpClient, tok, id, want string) {
	t.Helper()
	testenv.Deadline(t, 20*time.Second, func() error {
		var k keyView
		c.must(http.StatusOK, "GET", "/v1/keys/"+id, tok, nil, &k)
		if k.State != want {
			return fmt.Errorf("key %s state %s; want %s", id, k.State, want)
		}
		return nil
	})
}

// startLoggedControlPlane is startControlPlane with the given logger; stop
// ends the control plane (and is called again, harmlessly, at cleanup).
func (e *cpEnv) startLoggedControlPlane(t *testing.T, logger *slog.Logger) (cpClient, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	plane, err := newControlPlane(ctx, e.flags(t, 4), e.pgURL, logger, metrics.NewSet())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- plane.run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("control plane: %v", err)
			}
			plane.close()
		})
	}
	t.Cleanup(stop)
	return cpClient{t: t, base: "http://" + plane.addr().String()}, stop
}

func redisClient(t *testing.T, addr string, db int) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, SelectDB: db, DisableCache: true})
	if err != nil {
		t.Fatalf("Redis at %s database %d: %v", addr, db, err)
	}
	t.Cleanup(c.Close)
	return c
}

// secretForms are the ways a plaintext key could be written down: as is, in
// hex (how Postgres renders bytea) and in base64 (how JSON carries []byte,
// for example a cached response body), for each of the three byte
// alignments the key can have in the encoded data, in the standard and the
// URL alphabet. A base64 form is the part of the encoding that only the
// key's own bytes determine.
func secretForms(plaintext string) map[string]string {
	forms := map[string]string{"plaintext": plaintext, "hex": hex.EncodeToString([]byte(plaintext))}
	url := strings.NewReplacer("+", "-", "/", "_")
	for shift := range 3 {
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, shift), plaintext...))
		// Skip the characters that mix in the leading bytes and the last
		// quantum, which mixes in whatever follows.
		frag := enc[(shift*8+5)/6 : len(enc)-4]
		forms["base64/"+strconv.Itoa(shift)] = frag
		forms["base64url/"+strconv.Itoa(shift)] = url.Replace(frag)
	}
	return forms
}

func TestSecretFormsFindEncodedKeys(t *testing.T) {
	const key = "veil_test_09sEnlPup2LeQpdf3yobIZ8xli1pT9yZUaSwH04"
	forms := secretForms(key)
	found := func(s string) bool {
		for _, f := range forms {
			if strings.Contains(s, f) {
				return true
			}
		}
		return false
	}
	for lead := range 6 {
		body := []byte(`{"id":"` + strings.Repeat("x", lead) + `","key":"` + key + `","state":"pending"}`)
		for name, enc := range map[string]string{
			"plain":     string(body),
			"hex":       `"\\x` + hex.EncodeToString(body) + `"`,
			"base64":    base64.StdEncoding.EncodeToString(body),
			"base64url": base64.RawURLEncoding.EncodeToString(body),
		} {
			if !found(enc) {
				t.Errorf("secretForms(key) in %s of a body with %d leading bytes = not found; want found", name, lead)
			}
		}
	}
	if other := base64.StdEncoding.EncodeToString([]byte(strings.Replace(key, "yZU", "yZV", 1))); found(other) {
		t.Errorf("secretForms(key) found in the encoding of another key")
	}
}

func anyContains(m map[string]string, s string) bool {
	for _, v := range m {
		if strings.Contains(v, s) {
			return true
		}
	}
	return false
}

// dumpPostgres returns every row of every table outside the system schemas
// (the control plane's tables, River's jobs, the migration history) as
// JSON text, one row per line, by schema-qualified table. row_to_json
// writes every column: text, jsonb and bytea (as \x hex) alike.
func dumpPostgres(t *testing.T, url string) map[string]string {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT table_schema, table_name FROM information_schema.tables
		WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')
		ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var s [2]string
		return s, r.Scan(&s[0], &s[1])
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tb := range tables {
		var dump string
		q := `SELECT coalesce(string_agg(row_to_json(t)::text, E'\n'), '') FROM ` + pgx.Identifier{tb[0], tb[1]}.Sanitize() + ` t`
		if err := conn.QueryRow(ctx, q).Scan(&dump); err != nil {
			t.Fatalf("dump %s.%s: %v", tb[0], tb[1], err)
		}
		out[tb[0]+"."+tb[1]] = dump
	}
	if len(out) < 10 {
		t.Fatalf("dumped %d tables: %v; want the whole schema", len(out), out)
	}
	return out
}

// dumpRedis returns, for every database of the Redis at addr that holds
// keys, every key name and every value of every type, by "dbN". Other
// tests write to the same server meanwhile: that only adds data to search.
func dumpRedis(t *testing.T, addr string) map[string]string {
	t.Helper()
	ctx := t.Context()
	c := redisClient(t, addr, 0)
	info, err := c.Do(ctx, c.B().Info().Section("keyspace").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	var dbs []int
	for _, m := range regexp.MustCompile(`(?m)^db(\d+):keys=`).FindAllStringSubmatch(info, -1) {
		n, _ := strconv.Atoi(m[1])
		dbs = append(dbs, n)
	}
	sort.Ints(dbs)
	out := map[string]string{}
	for _, db := range dbs {
		c := redisClient(t, addr, db)
		var b strings.Builder
		var cursor uint64
		for {
			page, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Count(1000).Build()).AsScanEntry()
			if err != nil {
				t.Fatalf("scan Redis database %d: %v", db, err)
			}
			for _, k := range page.Elements {
				b.WriteString(k + "\n")
				b.WriteString(redisValue(t, c, db, k))
				b.WriteString("\n")
			}
			if cursor = page.Cursor; cursor == 0 {
				break
			}
		}
		out[fmt.Sprintf("db%d", db)] = b.String()
	}
	return out
}

// redisValue reads one key whatever its type; a type it cannot read fails
// the test rather than leave a blind spot.
func redisValue(t *testing.T, c rueidis.Client, db int, key string) string {
	t.Helper()
	ctx := t.Context()
	typ, err := c.Do(ctx, c.B().Type().Key(key).Build()).ToString()
	if err != nil {
		t.Fatalf("TYPE %s in database %d: %v", key, db, err)
	}
	var parts []string
	switch typ {
	case "none": // expired since the scan
	case "string":
		v, err := c.Do(ctx, c.B().Get().Key(key).Build()).ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			t.Fatalf("GET %s: %v", key, err)
		}
		parts = append(parts, v)
	case "hash":
		m, err := c.Do(ctx, c.B().Hgetall().Key(key).Build()).AsStrMap()
		if err != nil {
			t.Fatalf("HGETALL %s: %v", key, err)
		}
		for f, v := range m {
			parts = append(parts, f, v)
		}
	case "list":
		parts, err = c.Do(ctx, c.B().Lrange().Key(key).Start(0).Stop(-1).Build()).AsStrSlice()
	case "set":
		parts, err = c.Do(ctx, c.B().Smembers().Key(key).Build()).AsStrSlice()
	case "zset":
		parts, err = c.Do(ctx, c.B().Zrange().Key(key).Min("0").Max("-1").Build()).AsStrSlice()
	case "stream":
		var entries []rueidis.XRangeEntry
		entries, err = c.Do(ctx, c.B().Xrange().Key(key).Start("-").End("+").Build()).AsXRange()
		for _, x := range entries {
			for f, v := range x.FieldValues {
				parts = append(parts, x.ID, f, v)
			}
		}
	default:
		t.Fatalf("Redis key %s in database %d has type %s, which the scan cannot read", key, db, typ)
	}
	if err != nil {
		t.Fatalf("read %s %s in database %d: %v", typ, key, db, err)
	}
	return strings.Join(parts, "\n")
}
