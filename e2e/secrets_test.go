package e2e

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/client"
	"github.com/veil-platform/veil/internal/testenv"
)

// checkIssued checks the one answer that carries a key's plaintext.
func checkIssued(t *testing.T, k client.KeyWithPlaintext) {
	t.Helper()
	if !keyShape.MatchString(k.Key) {
		t.Fatalf("issued key = %q; want veil_test_ and 39 base62 characters", k.Key)
	}
	if want := k.Prefix + "…" + k.Key[len(k.Key)-4:]; k.Masked != want || !strings.HasPrefix(k.Key, k.Prefix) {
		t.Errorf("masked = %q, prefix %q; want %q", k.Masked, k.Prefix, want)
	}
}

var keyShape = regexp.MustCompile(`^veil_test_[0-9A-Za-z]{39}$`)

// waitKey polls a key until its state is want.
func waitKey(t *testing.T, c *controlPlane, tok string, id uuid.UUID, want string) {
	t.Helper()
	testenv.Deadline(t, 20*time.Second, func() error {
		resp, err := c.GetKeyWithResponse(t.Context(), id, nil, client.Bearer(tok))
		expect(t, http.StatusOK, resp, err)
		if k := resp.JSON200; string(k.State) != want {
			return fmt.Errorf("key %s state %s; want %s", id, k.State, want)
		}
		return nil
	})
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

// paymentSecrets are what payments must keep out of every store and log,
// by name: the Stripe API key and webhook secret, the client secrets the
// setup route answered, the numbers of the test cards used (as typed, in
// groups, and in each encoding secretForms knows).
func paymentSecrets(clientSecrets []string) map[string]string {
	out := map[string]string{}
	add := func(name, s string) {
		for form, needle := range secretForms(s) {
			out[name+" ("+form+")"] = needle
		}
	}
	add("Stripe secret key", payStripeKey)
	add("Stripe webhook secret", payWebhookSecret)
	for i, s := range clientSecrets {
		add(fmt.Sprintf("client secret %d", i+1), s)
	}
	for pm, pan := range testCards {
		add("card number of "+pm, pan)
		for _, sep := range []string{" ", "-"} {
			out["card number of "+pm+" grouped by '"+sep+"'"] = pan[:4] + sep + pan[4:8] + sep + pan[8:12] + sep + pan[12:]
		}
	}
	return out
}

// paymentSecretShapes find secrets of the kinds the scan knows but values
// it was not given: another key, a PaymentIntent's client secret (which
// Stripe's PaymentIntent answers carry), a card's security code.
var paymentSecretShapes = map[string]*regexp.Regexp{
	"a Stripe secret key":    regexp.MustCompile(`\b[sr]k_(test|live)_[0-9A-Za-z]{10,}`),
	"a webhook secret":       regexp.MustCompile(`\bwhsec_[0-9A-Za-z]{10,}`),
	"a client secret":        regexp.MustCompile(`\b(pi|seti)_[0-9A-Za-z]+_secret_[0-9A-Za-z]+`),
	"a card security code":   regexp.MustCompile(`(?i)\bcvc["'\]]?\s*[:=]`),
	"a card number of 13-19": regexp.MustCompile(`\b(4[0-9]{12}(?:[0-9]{3}){0,2}|5[1-5][0-9]{14}|3[47][0-9]{13})\b`),
}

// findPaymentSecrets returns where each secret or secret shape occurs in
// the dumps and logs, one line per find; a card-number shape counts only
// when it passes the Luhn check, as card numbers do.
func findPaymentSecrets(secrets map[string]string, places map[string]map[string]string) []string {
	var found []string
	for kind, dump := range places {
		for where, text := range dump {
			for name, needle := range secrets {
				if strings.Contains(text, needle) {
					found = append(found, fmt.Sprintf("%s is in %s %s", name, kind, where))
				}
			}
			for name, re := range paymentSecretShapes {
				for _, m := range re.FindAllString(text, -1) {
					if name == "a card number of 13-19" && !luhn(m) {
						continue
					}
					found = append(found, fmt.Sprintf("%s (%.12s…) is in %s %s", name, m, kind, where))
				}
			}
		}
	}
	sort.Strings(found)
	return found
}

// luhn reports whether a run of digits passes the Luhn check.
func luhn(digits string) bool {
	sum := 0
	for i := range len(digits) {
		d := int(digits[len(digits)-1-i] - '0')
		if i%2 == 1 {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return sum%10 == 0
}

// scanForPaymentSecrets fails the test for every payment secret in the
// Postgres and Redis dumps and the logs, after checking that they hold
// what a payment leaves, so that a scan finding nothing is not blind.
func scanForPaymentSecrets(t *testing.T, secrets map[string]string, pg, rd, logs map[string]string) {
	t.Helper()
	if !strings.Contains(pg["public.payment_attempts"], `"provider_payment_id":"pi_`) ||
		!strings.Contains(pg["public.provider_events"], `"event_id":"evt_`) ||
		!strings.Contains(pg["public.payment_customers"], `"default_pm_id":"pm_card_visa"`) {
		t.Fatalf("the Postgres dump lacks the payments' attempts, events or payment methods: the scan would be blind")
	}
	if !anyContains(rd, "veil:cp:idem:") {
		t.Fatalf("the Redis dump holds no idempotency entry: the scan would miss the stored answers")
	}
	if !strings.Contains(logs["control plane"], "/v1/billing/stripe/webhook") || !strings.Contains(logs["control plane"], `"component":"stripe"`) {
		t.Fatalf("the control plane's logs lack the webhook's access log or stripe-go's lines: the log capture is broken")
	}
	for _, f := range findPaymentSecrets(secrets, map[string]map[string]string{"Postgres table": pg, "Redis": rd, "the logs of the": logs}) {
		t.Error(f)
	}
}

// The scan finds each kind of secret planted in any place, and nothing in
// what payments legitimately keep.
func TestPaymentSecretScanFindsPlants(t *testing.T) {
	secrets := paymentSecrets([]string{"seti_1Pgag7B7WZ01zgkW_secret_QXg2AQLdBxJwtY51"})
	clean := `{"provider_payment_id":"pi_RpisBekJGWYi0r3","default_pm_id":"pm_card_visa","pm_last4":"4242","event_id":"evt_1",` +
		`"created":1733587200123,"at":"2026-12-07T15:21:12.123456789Z","id":1733587200123456789}`
	if f := findPaymentSecrets(secrets, map[string]map[string]string{"Postgres table": {"public.x": clean}}); len(f) > 0 {
		t.Fatalf("the scan finds %v in rows without a secret", f)
	}
	for _, plant := range []string{
		payStripeKey, "sk_live_0123456789abcdefXYZ", payWebhookSecret, "whsec_0123456789abcdef",
		"seti_1Pgag7B7WZ01zgkW_secret_QXg2AQLdBxJwtY51", `"client_secret":"pi_3Abc_secret_Def456"`,
		"4242424242424242", "4242 4242 4242 4242", "4000000000000002", "5555555555554444", `card[cvc]=123`, `"cvc": "123"`,
		base64.StdEncoding.EncodeToString([]byte(`{"key":"` + payStripeKey + `"}`)), hex.EncodeToString([]byte(payWebhookSecret)),
	} {
		for _, place := range []string{"Postgres table", "Redis", "the logs of the"} {
			got := findPaymentSecrets(secrets, map[string]map[string]string{place: {"planted": clean + " " + plant + " " + clean}})
			if len(got) == 0 {
				t.Errorf("a plant %q in %s is not found", plant, place)
			}
		}
	}
}
