package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/webhooks/internal/db"
	"github.com/veil-platform/veil/internal/testenv"
)

// env is one test's database, job client and service.
type env struct {
	t        *testing.T
	pool     *pgxpool.Pool
	jobs     *river.Client[pgx.Tx]
	svc      *Service
	metrics  *metrics.Set
	org      uuid.UUID
	otherOrg uuid.UUID
}

// setup migrates a fresh database and builds the service with short
// retries and private networks allowed; mod changes the config. The job
// client is not started: tests that want deliveries to run call start, the
// others drive the worker by hand.
func setup(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	pool := testenv.Postgres(t)
	workers := river.NewWorkers()
	jobs := testenv.River(t, pool, workers)
	set := metrics.NewSet()
	cfg := Config{
		Pool: pool, Jobs: jobs, Logger: testenv.Logger(t), Metrics: set,
		MaxAttempts: 5, RetryBase: 10 * time.Millisecond, AllowPrivateNetworks: true,
	}
	if mod != nil {
		mod(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	river.AddWorker(workers, svc.Worker())
	e := &env{t: t, pool: pool, jobs: jobs, svc: svc, metrics: set}
	e.org = testenv.Org(t, pool, "acme")
	e.otherOrg = testenv.Org(t, pool, "globex")
	return e
}

// start runs the job client until the test ends.
func (e *env) start() {
	e.t.Helper()
	testenv.StartRiver(e.t, e.jobs)
}

// member is a member of org, the actor of the changes tests make.
func member(org uuid.UUID) identity.Actor {
	return identity.Actor{Subject: "member-1", Role: identity.RoleProvider, OrgID: org}
}

// deliverUnchecked writes an endpoint of otherOrg at url straight into
// its table, past the checks saving one makes (as if it was saved before
// they refused it), publishes one event to it and works the delivery as
// its last attempt; it returns the delivery as it then stands.
func (e *env) deliverUnchecked(url string) Delivery {
	e.t.Helper()
	ctx := e.t.Context()
	var id uuid.UUID
	if err := e.pool.QueryRow(ctx, `INSERT INTO webhook_endpoints (organization_id, url, event_types, secret)
		VALUES ($1, $2, '{*}', $3) RETURNING id`, e.otherOrg, url, newSecret()).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	e.publish(e.otherOrg, EventAPIUpdated)
	d := e.deliveries(id)[0]
	if err := e.work(d.ID, 1, 1); err != nil {
		e.t.Fatalf("Work(last attempt) = %v; want nil", err)
	}
	got, err := e.svc.GetDelivery(ctx, e.otherOrg, d.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return got
}

// createEndpoint registers an endpoint of org for types at url.
func (e *env) createEndpoint(org uuid.UUID, url string, types ...string) (Endpoint, string) {
	e.t.Helper()
	ep, secret, err := e.svc.CreateEndpoint(e.t.Context(), member(org), EndpointInput{URL: url, EventTypes: types})
	if err != nil {
		e.t.Fatalf("CreateEndpoint(%s, %v) = %v", url, types, err)
	}
	return ep, secret
}

// publish publishes events of org in one committed transaction.
func (e *env) publish(org uuid.UUID, types ...string) {
	e.t.Helper()
	err := pgx.BeginFunc(e.t.Context(), e.pool, func(tx pgx.Tx) error {
		for _, typ := range types {
			if err := e.svc.Publish(e.t.Context(), tx, org, typ, map[string]any{"api": map[string]string{"id": "api-1"}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("publish %v: %v", types, err)
	}
}

// deliveries returns every delivery of an endpoint, oldest first.
func (e *env) deliveries(endpointID uuid.UUID) []Delivery {
	e.t.Helper()
	rows, err := e.pool.Query(e.t.Context(), `SELECT id, endpoint_id, message_id, event_type, payload, status, attempts,
			last_status_code, last_error, created_at, delivered_at
		FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY created_at, id`, endpointID)
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Delivery, error) {
		d, err := pgx.RowToStructByPos[db.WebhookDelivery](row)
		return deliveryFrom(d), err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// waitStatus waits until the delivery has the status and returns it with
// its attempts.
func (e *env) waitStatus(org, id uuid.UUID, want DeliveryStatus) Delivery {
	e.t.Helper()
	var d Delivery
	testenv.Deadline(e.t, 15*time.Second, func() error {
		var err error
		d, err = e.svc.GetDelivery(e.t.Context(), org, id)
		if err != nil {
			return err
		}
		if d.Status != want {
			return fmt.Errorf("delivery %s status %s after %d attempts (last error %q); want %s", id, d.Status, d.Attempts, d.LastError, want)
		}
		return nil
	})
	return d
}

// work runs the worker once on a delivery, as River would on attempt of max.
func (e *env) work(id uuid.UUID, attempt, max int) error {
	e.t.Helper()
	job := &river.Job[DeliveryArgs]{
		JobRow: &rivertype.JobRow{Attempt: attempt, MaxAttempts: max, Kind: DeliveryArgs{}.Kind()},
		Args:   DeliveryArgs{DeliveryID: id},
	}
	return e.svc.Worker().Work(e.t.Context(), job)
}

// received is one request a receiver accepted.
type received struct {
	ID, Timestamp string
	Type          string
	Body          []byte
}

// receiver is an endpoint that checks every request with verify and
// answers by script: the statuses in script first, then ok (default 204).
type receiver struct {
	srv *httptest.Server

	mu     sync.Mutex
	secret string
	script []int
	ok     int
	got    []received
	bad    []string
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{ok: http.StatusNoContent}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	typ, err := checkRequest(req, body)
	if err == nil {
		err = verify(r.secret, req.Header, body, time.Now(), 5*time.Minute)
	}
	if err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.got = append(r.got, received{ID: req.Header.Get("webhook-id"), Timestamp: req.Header.Get("webhook-timestamp"), Type: typ, Body: body})
	status := r.ok
	if len(r.script) > 0 {
		status, r.script = r.script[0], r.script[1:]
	}
	w.WriteHeader(status)
}

// answer sets the statuses to answer: script first, then ok.
func (r *receiver) answer(ok int, script ...int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ok, r.script = ok, script
}

func (r *receiver) setSecret(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secret = s
}

func (r *receiver) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func (r *receiver) rejected() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

// checkRequest checks what a delivery looks like apart from its signature
// and returns its event type.
func checkRequest(req *http.Request, body []byte) (string, error) {
	if req.Method != http.MethodPost {
		return "", fmt.Errorf("method %s; want POST", req.Method)
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/json" {
		return "", fmt.Errorf("Content-Type %q; want application/json", ct)
	}
	if ua := req.Header.Get("User-Agent"); ua != "Veil-Webhooks/1" {
		return "", fmt.Errorf("User-Agent %q; want Veil-Webhooks/1", ua)
	}
	var ev struct {
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		return "", fmt.Errorf("body %s: %v", body, err)
	}
	if _, err := time.Parse(time.RFC3339, ev.Timestamp); err != nil {
		return "", fmt.Errorf("body timestamp %q: %v", ev.Timestamp, err)
	}
	if !strings.HasPrefix(string(ev.Data), "{") {
		return "", fmt.Errorf("body data %s; want an object", ev.Data)
	}
	return ev.Type, nil
}

// verify checks a delivery as a receiver following the Standard Webhooks
// spec would, written apart from Sign: webhook-id and webhook-timestamp
// present, the timestamp within tolerance of now, and one "v1," entry of
// webhook-signature equal to base64(HMAC-SHA256(key, id "." ts "." body)),
// key being the base64 after "whsec_".
func verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Errorf("missing webhook headers: id %q, timestamp %q, signature %q", id, ts, sigs)
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not unix seconds", ts)
	}
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook-timestamp %s is %s from now; tolerance %s", ts, d, tolerance)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(key) == 0 {
		return fmt.Errorf("secret %q is not whsec_<base64>", secret)
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, ts)
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Split(sigs, " ") {
		version, b64, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("no v1 signature in %q matches", sigs)
}
