// Package stripetest is a small stateful fake of Stripe's API for tests
// that stripe-mock cannot serve: stripe-mock validates requests but keeps
// nothing, ignores Idempotency-Key and never declines. The fake keeps its
// customers and PaymentIntents, honours Idempotency-Key as Stripe does
// (the same key replays the first answer; the same key with other
// parameters is a 400 idempotency_error), decides a PaymentIntent's
// outcome by its payment method as Stripe's test cards do, counts what
// it created, and can drop a connection after acting, as a crash or a
// network cut would.
package stripetest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Payment methods with a known outcome, named as Stripe's test cards.
const (
	PMSucceeds          = "pm_card_visa"
	PMDeclined          = "pm_card_chargeDeclined"
	PMInsufficientFunds = "pm_card_chargeDeclinedInsufficientFunds"
	PMRequiresAction    = "pm_card_authenticationRequired"
	PMProcessing        = "pm_usBankAccount_processing"
)

// Key is the API key the fake accepts.
const Key = "sk_test_fake"

// Server is the fake.
type Server struct {
	URL string

	mu        sync.Mutex
	seq       int
	customers map[string]map[string]any
	intents   map[string]map[string]any
	refunds   []map[string]any
	// refundStatus is the status new refunds get ("" is succeeded).
	refundStatus string
	replays      map[string]recorded
	creates      map[string]int
	drop         map[string]bool
	failNext     map[string]int
	noKey        int
}

type recorded struct {
	fingerprint string
	status      int
	body        []byte
}

// New starts a fake for the test's duration.
func New(t testing.TB) *Server {
	s := &Server{
		customers: map[string]map[string]any{}, intents: map[string]map[string]any{},
		replays: map[string]recorded{}, creates: map[string]int{},
		drop: map[string]bool{}, failNext: map[string]int{},
	}
	hs := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(hs.Close)
	s.URL = hs.URL
	return s
}

// Creates is how many objects of a kind ("payment_intents", "customers",
// "refunds", "setup_intents") POSTs created, replays not counted.
func (s *Server) Creates(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creates[kind]
}

// ForgetKeys drops every idempotency key, as Stripe does 24 hours after
// a key's first use: the same key then makes a new object.
func (s *Server) ForgetKeys() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replays = map[string]recorded{}
}

// PostsWithoutKey counts POSTs that came without an Idempotency-Key.
func (s *Server) PostsWithoutKey() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.noKey
}

// DropAnswers makes every POST to /v1/<kind>, until DropAnswers(kind,
// false), act and record its answer as usual, then close the connection
// without answering: the client sees a network error although the object
// exists. Every POST, replays included, because Go's transport itself
// repeats a request that carries an Idempotency-Key once on a fresh
// connection.
func (s *Server) DropAnswers(kind string, drop bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop[kind] = drop
}

func (s *Server) hangUp(w http.ResponseWriter, kind string) bool {
	if !s.drop[kind] {
		return false
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// FailNext answers the next request to /v1/<kind> with status (429, 500…)
// without acting.
func (s *Server) FailNext(kind string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext[kind] = status
}

// SetPaymentIntentStatus moves a PaymentIntent, as Stripe would on its
// own (a bank transfer clearing, a 3-D Secure challenge passed).
func (s *Server) SetPaymentIntentStatus(id, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pi, ok := s.intents[id]; ok {
		pi["status"] = status
	}
}

// AddCustomer stores a customer whose default payment method is pm.
func (s *Server) AddCustomer(pm string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newID("cus")
	s.customers[id] = map[string]any{
		"id": id, "object": "customer",
		"invoice_settings": map[string]any{"default_payment_method": nilIfEmpty(pm)},
	}
	return id
}

// SetRefundStatus makes refunds created from now on start in status
// ("pending", as a bank's refunds do), or moves the refund id to it.
func (s *Server) SetRefundStatus(id, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == "" {
		s.refundStatus = status
		return
	}
	for _, rf := range s.refunds {
		if rf["id"] == id {
			rf["status"] = status
		}
	}
}

// PaymentIntent returns what a PaymentIntent's events carry: its amount
// in Stripe's minor units, its currency and its customer.
func (s *Server) PaymentIntent(id string) (amount int64, currency, customer string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pi := s.intents[id]
	if pi == nil {
		return 0, "", "", false
	}
	amount, _ = pi["amount"].(int64)
	currency, _ = pi["currency"].(string)
	customer, _ = pi["customer"].(string)
	return amount, currency, customer, true
}

// AddDashboardRefund refunds amount of a PaymentIntent as a person in
// Stripe's dashboard would: without Veil's metadata.
func (s *Server) AddDashboardRefund(pi string, amount int64) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	rf := map[string]any{"id": s.newID("re"), "object": "refund", "amount": amount, "currency": s.intents[pi]["currency"],
		"payment_intent": pi, "status": "succeeded", "metadata": map[string]any{}}
	s.refunds = append(s.refunds, rf)
	return rf
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "+Key) {
		writeError(w, http.StatusUnauthorized, "invalid_request_error", "", "Invalid API Key provided")
		return
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/v1/"), "/"), "/")
	kind := parts[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.failNext[kind]; st != 0 {
		delete(s.failNext, kind)
		writeError(w, st, map[bool]string{true: "rate_limit", false: "api_error"}[st == 429], "", "try again")
		return
	}
	if r.Method == http.MethodGet && kind == "payment_intents" && len(parts) == 2 && parts[1] == "search" {
		s.search(w, r.URL.Query().Get("query"))
		return
	}
	if r.Method == http.MethodGet {
		s.get(w, kind, parts, r.URL.Query().Get("payment_intent"))
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "bad form")
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		s.noKey++
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "the fake wants an Idempotency-Key on every POST")
		return
	}
	fp := r.Method + " " + r.URL.Path + "?" + r.PostForm.Encode()
	if rec, ok := s.replays[key]; ok {
		if rec.fingerprint != fp {
			writeError(w, http.StatusBadRequest, "idempotency_error", "",
				"Keys for idempotent requests can only be used with the same parameters they were first used with.")
			return
		}
		if s.hangUp(w, kind) {
			return
		}
		w.Header().Set("Idempotent-Replayed", "true")
		write(w, rec.status, rec.body)
		return
	}
	status, body := s.post(kind, parts, r)
	s.replays[key] = recorded{fingerprint: fp, status: status, body: body}
	if s.hangUp(w, kind) {
		return
	}
	write(w, status, body)
}

func (s *Server) get(w http.ResponseWriter, kind string, parts []string, pi string) {
	var obj map[string]any
	if kind == "refunds" && len(parts) == 1 {
		data := []map[string]any{}
		for _, rf := range s.refunds {
			if rf["payment_intent"] == pi {
				data = append(data, rf)
			}
		}
		obj = map[string]any{"object": "list", "url": "/v1/refunds", "has_more": false, "data": data}
	}
	if len(parts) == 2 {
		switch kind {
		case "payment_intents":
			obj = s.intents[parts[1]]
		case "customers":
			obj = s.customers[parts[1]]
		}
	}
	if obj == nil {
		writeError(w, http.StatusNotFound, "invalid_request_error", "resource_missing", "No such object")
		return
	}
	b, _ := json.Marshal(obj)
	write(w, http.StatusOK, b)
}

// post acts on a POST and returns the answer to record.
func (s *Server) post(kind string, parts []string, r *http.Request) (int, []byte) {
	f := r.PostForm
	var obj map[string]any
	switch {
	case kind == "customers" && len(parts) == 1:
		obj = map[string]any{"id": s.newID("cus"), "object": "customer", "name": f.Get("name"), "email": f.Get("email"),
			"invoice_settings": map[string]any{"default_payment_method": nil}}
		s.customers[obj["id"].(string)] = obj
	case kind == "customers" && len(parts) == 2 && s.customers[parts[1]] != nil:
		obj = s.customers[parts[1]]
		obj["name"], obj["email"] = f.Get("name"), f.Get("email")
	case kind == "setup_intents" && len(parts) == 1:
		id := s.newID("seti")
		obj = map[string]any{"id": id, "object": "setup_intent", "customer": f.Get("customer"),
			"usage": f.Get("usage"), "status": "requires_payment_method", "client_secret": id + "_secret_fake" + strconv.Itoa(s.seq)}
	case kind == "payment_intents" && len(parts) == 1:
		return s.createIntent(f.Get("amount"), f.Get("currency"), f.Get("customer"), f.Get("payment_method"),
			map[string]any{"veil_invoice_id": f.Get("metadata[veil_invoice_id]"), "veil_idempotency_key": f.Get("metadata[veil_idempotency_key]")})
	case kind == "payment_intents" && len(parts) == 3 && parts[2] == "cancel" && s.intents[parts[1]] != nil:
		obj = s.intents[parts[1]]
		if obj["status"] == "succeeded" || obj["status"] == "canceled" {
			return errorBody(http.StatusBadRequest, "invalid_request_error", "payment_intent_unexpected_state", "cannot cancel", nil)
		}
		obj["status"] = "canceled"
	case kind == "refunds" && len(parts) == 1:
		pi := s.intents[f.Get("payment_intent")]
		if pi == nil || pi["status"] != "succeeded" {
			return errorBody(http.StatusBadRequest, "invalid_request_error", "charge_not_refundable", "not refundable", nil)
		}
		amount := pi["amount"].(int64)
		if a := f.Get("amount"); a != "" {
			amount, _ = strconv.ParseInt(a, 10, 64)
		}
		st := s.refundStatus
		if st == "" {
			st = "succeeded"
		}
		obj = map[string]any{"id": s.newID("re"), "object": "refund", "amount": amount, "currency": pi["currency"],
			"payment_intent": pi["id"], "status": st,
			"metadata": map[string]any{"veil_refund_id": f.Get("metadata[veil_refund_id]"), "veil_reason": f.Get("metadata[veil_reason]")}}
		s.refunds = append(s.refunds, obj)
	default:
		return errorBody(http.StatusNotFound, "invalid_request_error", "resource_missing", "unknown path "+r.URL.Path, nil)
	}
	if len(parts) == 1 {
		s.creates[kind]++
	}
	b, _ := json.Marshal(obj)
	return http.StatusOK, b
}

// createIntent confirms at once, as Veil always asks, with the outcome of
// the payment method.
func (s *Server) createIntent(amountS, currency, customer, pm string, meta map[string]any) (int, []byte) {
	amount, err := strconv.ParseInt(amountS, 10, 64)
	if err != nil || amount <= 0 {
		return errorBody(http.StatusBadRequest, "invalid_request_error", "parameter_invalid_integer", "Invalid integer: amount", nil)
	}
	if amount < 50 && (currency == "eur" || currency == "usd") {
		return errorBody(http.StatusBadRequest, "invalid_request_error", "amount_too_small",
			"Amount must be at least 0.50", nil)
	}
	id := s.newID("pi")
	pi := map[string]any{"id": id, "object": "payment_intent", "amount": amount, "currency": currency,
		"customer": customer, "payment_method": pm, "client_secret": id + "_secret_fake" + strconv.Itoa(s.seq),
		"metadata": meta, "status": "succeeded", "last_payment_error": nil}
	s.intents[id] = pi
	s.creates["payment_intents"]++
	decline := map[string]string{PMDeclined: "generic_decline", PMInsufficientFunds: "insufficient_funds"}[pm]
	switch {
	case decline != "":
		pi["status"] = "requires_payment_method"
		lpe := map[string]any{"type": "card_error", "code": "card_declined", "decline_code": decline, "message": "Your card was declined."}
		pi["last_payment_error"] = lpe
		return errorBody(http.StatusPaymentRequired, "card_error", "card_declined", "Your card was declined.",
			map[string]any{"decline_code": decline, "payment_intent": pi})
	case pm == PMRequiresAction:
		pi["status"] = "requires_action"
	case pm == PMProcessing:
		pi["status"] = "processing"
	}
	b, _ := json.Marshal(pi)
	return http.StatusOK, b
}

// search answers a PaymentIntent search of metadata['k']:'v' terms
// joined by AND, the only kind Veil makes.
func (s *Server) search(w http.ResponseWriter, query string) {
	data := []map[string]any{}
	for _, pi := range s.intents {
		if matches(pi, query) {
			data = append(data, pi)
		}
	}
	b, _ := json.Marshal(map[string]any{"object": "search_result", "url": "/v1/payment_intents/search",
		"has_more": false, "next_page": nil, "data": data})
	write(w, http.StatusOK, b)
}

func matches(pi map[string]any, query string) bool {
	meta, _ := pi["metadata"].(map[string]any)
	for _, term := range strings.Split(query, " AND ") {
		k, v, ok := strings.Cut(strings.TrimSpace(term), "']:'")
		if !ok || !strings.HasPrefix(k, "metadata['") || meta[strings.TrimPrefix(k, "metadata['")] != strings.TrimSuffix(v, "'") {
			return false
		}
	}
	return true
}

func (s *Server) newID(prefix string) string {
	s.seq++
	sum := sha256.Sum256([]byte(fmt.Sprint(prefix, s.seq)))
	return prefix + "_" + hex.EncodeToString(sum[:8])
}

func errorBody(status int, typ, code, msg string, extra map[string]any) (int, []byte) {
	e := map[string]any{"type": typ, "message": msg}
	if code != "" {
		e["code"] = code
	}
	for k, v := range extra {
		e[k] = v
	}
	b, _ := json.Marshal(map[string]any{"error": e})
	return status, b
}

func writeError(w http.ResponseWriter, status int, typ, code, msg string) {
	st, b := errorBody(status, typ, code, msg, nil)
	write(w, st, b)
}

func write(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
