package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/veil-platform/veil/control-plane/httpapi"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/internal/httpserver"
	"github.com/veil-platform/veil/internal/testenv"
	"github.com/veil-platform/veil/schemas"
)

// serviceRoutes are served by internal/httpserver on the control plane's port,
// next to the API's own routes; Routes does not see them. /metrics is on
// a listener of its own, not this port.
var serviceRoutes = []string{"GET /healthz", "GET /readyz"}

// chiParam matches a chi path parameter, with its optional regexp.
var chiParam = regexp.MustCompile(`\{([^}:]+)(:[^}]*)?\}`)

// spec is schemas/openapi.json, parsed.
type spec struct {
	model *v3.Document
	raw   map[string]any
	ops   []*specOp
}

// specOp is one operation of the document.
type specOp struct {
	method string // upper case
	path   string // template, e.g. /v1/apis/{id}
	item   *v3.PathItem
	op     *v3.Operation
	re     *regexp.Regexp
	params int
}

func (o *specOp) String() string { return o.op.OperationId + " (" + o.method + " " + o.path + ")" }

func loadSpec(t *testing.T) *spec {
	t.Helper()
	doc, err := libopenapi.NewDocument(schemas.OpenAPI)
	if err != nil {
		t.Fatalf("parse schemas/openapi.json: %v", err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("build schemas/openapi.json: %v", err)
	}
	s := &spec{model: &m.Model}
	if err := json.Unmarshal(schemas.OpenAPI, &s.raw); err != nil {
		t.Fatalf("decode schemas/openapi.json: %v", err)
	}
	for path, item := range m.Model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			o := &specOp{method: strings.ToUpper(method), path: path, item: item, op: op}
			var expr strings.Builder
			for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
				expr.WriteString("/")
				if strings.HasPrefix(seg, "{") {
					expr.WriteString("[^/]+")
					o.params++
				} else {
					expr.WriteString(regexp.QuoteMeta(seg))
				}
			}
			o.re = regexp.MustCompile("^" + expr.String() + "$")
			s.ops = append(s.ops, o)
		}
	}
	return s
}

// find returns the operation serving method and path; a literal segment
// wins over a parameter, as in the router (approvals/stats, not
// approvals/{id}).
func (s *spec) find(method, path string) *specOp {
	var best *specOp
	for _, o := range s.ops {
		if o.method == method && o.re.MatchString(path) && (best == nil || o.params < best.params) {
			best = o
		}
	}
	return best
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	e := newTestEnv(t)
	routes, err := httpapi.Routes(e.Handler)
	if err != nil {
		t.Fatal(err)
	}
	s := loadSpec(t)
	documented := map[string]*specOp{}
	for _, o := range s.ops {
		documented[o.method+" "+o.path] = o
	}
	routed := map[string]bool{}
	for _, r := range append(routes, serviceRoutes...) {
		method, pattern, _ := strings.Cut(r, " ")
		if strings.Contains(pattern, "*") {
			t.Errorf("route %s has a wildcard, which an OpenAPI path cannot describe", r)
			continue
		}
		key := method + " " + chiParam.ReplaceAllString(pattern, "{$1}")
		routed[key] = true
		if documented[key] == nil {
			t.Errorf("route %s is not in schemas/openapi.json", r)
		}
	}
	for key, o := range documented {
		if !routed[key] {
			t.Errorf("operation %s is in schemas/openapi.json but no route serves it", o)
		}
	}
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc, err := libopenapi.NewDocument(schemas.OpenAPI)
	if err != nil {
		t.Fatalf("parse schemas/openapi.json: %v", err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Errorf("openapi = %q; want 3.1.0", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("build a validator of schemas/openapi.json: %v", errors.Join(errs...))
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("schemas/openapi.json is not valid OpenAPI 3.1: %s", violation(e))
		}
	}

	s := loadSpec(t)
	checkRefs(t, s.raw, s.raw, "#")

	// The conventions every operation follows.
	rawPaths := s.raw["paths"].(map[string]any)
	ids := map[string]*specOp{}
	for _, o := range s.ops {
		op := o.op
		switch {
		case op.OperationId == "":
			t.Errorf("operation %s %s has no operationId", o.method, o.path)
		case ids[op.OperationId] != nil:
			t.Errorf("operationId %s names both %s and %s", op.OperationId, ids[op.OperationId], o)
		}
		ids[op.OperationId] = o
		if op.Summary == "" || len(op.Tags) == 0 {
			t.Errorf("operation %s needs a summary and a tag", o)
		}
		if !strings.Contains(op.Description, "**Who may call:**") {
			t.Errorf("operation %s does not say who may call it", o)
		}
		declared := map[string]bool{}
		for _, p := range append(append([]*v3.Parameter{}, o.item.Parameters...), op.Parameters...) {
			if p.In == "path" {
				if p.Required == nil || !*p.Required {
					t.Errorf("operation %s: path parameter %s must be required", o, p.Name)
				}
				declared[p.Name] = true
			}
			if p.In == "header" {
				declared["header "+p.Name] = true
			}
		}
		for _, m := range chiParam.FindAllStringSubmatch(o.path, -1) {
			if !declared[m[1]] {
				t.Errorf("operation %s does not declare path parameter %s", o, m[1])
			}
		}
		codes := map[string]bool{}
		for code := range op.Responses.Codes.FromOldest() {
			codes[code] = true
		}
		if !codes["200"] && !codes["201"] && !codes["202"] && !codes["204"] && !codes["207"] {
			t.Errorf("operation %s documents no success", o)
		}
		// Operations without their own security use the document's bearer
		// token: they refuse with 401 and, as POSTs, take an Idempotency-Key.
		if _, public := rawPaths[o.path].(map[string]any)[strings.ToLower(o.method)].(map[string]any)["security"]; !public {
			if !codes["401"] {
				t.Errorf("operation %s needs a token but documents no 401", o)
			}
			if o.method == http.MethodPost && !declared["header Idempotency-Key"] {
				t.Errorf("operation %s does not declare the Idempotency-Key header", o)
			}
		}
	}
}

// checkRefs fails for every $ref under v that does not resolve in root.
func checkRefs(t *testing.T, root, v any, at string) {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["$ref"].(string); ok {
			if _, err := resolvePointer(root, ref); err != nil {
				t.Errorf("$ref %q at %s: %v", ref, at, err)
			}
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			checkRefs(t, root, x[k], at+"/"+k)
		}
	case []any:
		for i, y := range x {
			checkRefs(t, root, y, at+"/"+strconv.Itoa(i))
		}
	}
}

func resolvePointer(root any, ref string) (any, error) {
	ptr, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, errors.New("only references inside the document are allowed")
	}
	cur := root
	for _, tok := range strings.Split(ptr, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok || m[tok] == nil {
			return nil, fmt.Errorf("no %q", tok)
		}
		cur = m[tok]
	}
	return cur, nil
}

func violation(e *verrors.ValidationError) string {
	var b strings.Builder
	b.WriteString(e.Message)
	if e.Reason != "" && e.Reason != e.Message {
		b.WriteString(": " + e.Reason)
	}
	for _, f := range e.SchemaValidationErrors {
		fmt.Fprintf(&b, "\n\t\t%s at %s (%s)", f.Reason, f.FieldPath, f.KeywordLocation)
	}
	if e.SpecLine > 0 {
		fmt.Fprintf(&b, " [openapi.json line %d]", e.SpecLine)
	}
	return b.String()
}

// contract sends requests to a control plane and checks each request and
// response against schemas/openapi.json. It validates in strict mode, so a
// member the document does not declare fails too, and records which
// operations were exercised.
type contract struct {
	t      *testing.T
	base   string
	spec   *spec
	strict validator.Validator
	loose  validator.Validator
	hit    map[*specOp]bool
}

func newContract(t *testing.T, base string) *contract {
	t.Helper()
	doc, err := libopenapi.NewDocument(schemas.OpenAPI)
	if err != nil {
		t.Fatalf("parse schemas/openapi.json: %v", err)
	}
	strict, errs := validator.NewValidator(doc, config.WithFormatAssertions(), config.WithStrictMode(),
		// Free-form JSON: audit snapshots, webhook event data and keys'
		// metadata; and a quote's usage, a map by meter slug whose values
		// the document's additionalProperties checks, which strict mode
		// would refuse as undeclared members.
		config.WithStrictIgnorePaths("$.body.data[*].before", "$.body.data[*].after",
			"$.body.payload.data", "$.body.data[*].payload.data", "$.body.metadata", "$.body.data[*].metadata", "$.body.usage",
			// An invoice's cites: what it was computed from, as stored.
			"$.body.cites", "$.body.data[*].cites",
			// Maps by currency and by topic (provider analytics, the admin
			// overview), checked by their additionalProperties.
			"$.body.revenue", "$.body.pipeline.consumer_lag.topics",
			// A Stripe event's object, as Stripe renders it.
			"$.body.data.object", "$.body.data.previous_attributes"))
	if len(errs) > 0 {
		t.Fatalf("build a validator of schemas/openapi.json: %v", errors.Join(errs...))
	}
	loose, errs := validator.NewValidator(doc, config.WithFormatAssertions())
	if len(errs) > 0 {
		t.Fatalf("build a validator of schemas/openapi.json: %v", errors.Join(errs...))
	}
	return &contract{t: t, base: base, spec: loadSpec(t), strict: strict, loose: loose, hit: map[*specOp]bool{}}
}

// reply is an answer that matched the document.
type reply struct {
	t      *testing.T
	what   string
	Header http.Header
	Body   []byte
}

// decode decodes the body into out.
func (r reply) decode(out any) {
	r.t.Helper()
	if err := json.Unmarshal(r.Body, out); err != nil {
		r.t.Fatalf("%s: decode %s: %v", r.what, r.Body, err)
	}
}

// problem returns the short type of a problem answer ("slug-taken").
func (r reply) problem() string {
	r.t.Helper()
	var p struct{ Type string }
	r.decode(&p)
	return strings.TrimPrefix(p.Type, "https://veil.dev/problems/")
}

// call sends a request that follows the document and fails unless the
// status is want and the request and the response match the document.
// body is nil (no body), []byte (sent as is) or a value sent as JSON;
// header holds name, value pairs.
func (c *contract) call(want int, method, path, tok string, body any, header ...string) reply {
	c.t.Helper()
	return c.exchange(true, want, method, path, tok, body, header...)
}

// pages checks that the list at path pages for tok: asked with query (one
// item of two) it answers a next_cursor, which reads the next page, and a
// cursor it did not issue is a 400.
func (c *contract) pages(path, query, tok string) {
	c.t.Helper()
	var page struct {
		NextCursor string `json:"next_cursor"`
	}
	c.call(http.StatusOK, "GET", path+"?"+query, tok, nil).decode(&page)
	if page.NextCursor == "" {
		c.t.Fatalf("GET %s?%s of 2 has no next_cursor", path, query)
	}
	c.call(http.StatusOK, "GET", path+"?cursor="+page.NextCursor, tok, nil)
	c.call(http.StatusBadRequest, "GET", path+"?cursor=nope", tok, nil)
}

// refused sends a request that breaks the document on purpose (no token,
// a malformed body, a bad parameter) and fails unless the status is want
// and the response matches the document.
func (c *contract) refused(want int, method, path, tok string, body any, header ...string) reply {
	c.t.Helper()
	return c.exchange(false, want, method, path, tok, body, header...)
}

func (c *contract) exchange(validRequest bool, want int, method, path, tok string, body any, header ...string) reply {
	c.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			c.t.Fatal(err)
		}
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+path, bytes.NewReader(raw))
	if err != nil {
		c.t.Fatal(err)
	}
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	// The validator reads the body of its own copy of the request.
	check := req.Clone(c.t.Context())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}

	op := c.spec.find(method, req.URL.Path)
	what := method + " " + path
	if op == nil {
		c.t.Fatalf("%s = %d: no operation in schemas/openapi.json", what, resp.StatusCode)
	}
	c.hit[op] = true
	what = fmt.Sprintf("%s: %s", op.op.OperationId, what)
	if resp.StatusCode != want {
		c.t.Fatalf("%s = %d %s; want %d", what, resp.StatusCode, got, want)
	}

	v := c.strict
	if op.path == "/openapi.json" {
		v = c.loose // the document itself is free-form JSON to its own schema
	}
	check.Body = io.NopCloser(bytes.NewReader(raw))
	resp.Body = io.NopCloser(bytes.NewReader(got))
	var verrs []*verrors.ValidationError
	if validRequest {
		_, verrs = v.ValidateHttpRequestResponse(check, resp)
	} else {
		_, verrs = v.ValidateHttpResponse(check, resp)
	}
	for _, e := range verrs {
		c.t.Errorf("%s = %d does not match schemas/openapi.json: %s\n\tbody: %.600s", what, resp.StatusCode, violation(e), got)
	}
	return reply{t: c.t, what: what, Header: resp.Header, Body: got}
}

// unexercised lists the documented operations no request reached.
func (c *contract) unexercised() []string {
	var out []string
	for _, o := range c.spec.ops {
		if !c.hit[o] {
			out = append(out, o.String())
		}
	}
	return out
}

// serveWrapped runs h behind the service wrapper, as `veil control-plane` does,
// and returns its base URL.
func serveWrapped(t *testing.T, h http.Handler, ready httpserver.ReadyFunc) string {
	t.Helper()
	srv, err := httpserver.Listen(httpserver.Config{Name: "control-plane", Addr: "127.0.0.1:0", Handler: h, Ready: ready, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + srv.Addr().String()
}

// TestOpenAPIMatchesResponses drives every operation through the service
// wrapper, successes and refusals, and checks each request and response
// against the document.
func TestOpenAPIMatchesResponses(t *testing.T) {
	e := newTestEnv(t)
	c := newContract(t, serveWrapped(t, e.Handler, func(ctx context.Context) error { return e.Pool.Ping(ctx) }))
	ctx := t.Context()

	prov := e.token("acme", "alice", identity.RoleProvider)
	cons := e.token("acme", "carol", identity.RoleConsumer)
	other := e.token("globex", "dave", identity.RoleProvider)
	admin := e.token("veil-ops", "root", identity.RoleAdmin)
	acmeAdmin := e.token("acme", "erin", identity.RoleAdmin)
	missing := uuid.NewString()

	// The service routes and the document itself.
	doc := c.call(http.StatusOK, "GET", "/openapi.json", "", nil)
	if !bytes.Equal(doc.Body, schemas.OpenAPI) {
		t.Errorf("GET /openapi.json is not schemas/openapi.json")
	}
	c.call(http.StatusOK, "GET", "/healthz", "", nil)
	c.call(http.StatusOK, "GET", "/readyz", "", nil)
	down := newContract(t, serveWrapped(t, e.Handler, func(context.Context) error { return errors.New("postgres: connection refused") }))
	down.call(http.StatusServiceUnavailable, "GET", "/readyz", "", nil)

	// Identity.
	var me struct {
		OrganizationID string `json:"organization_id"`
	}
	c.call(http.StatusOK, "GET", "/v1/me", prov, nil).decode(&me)
	if r := c.refused(http.StatusUnauthorized, "GET", "/v1/me", "", nil); r.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("401 without WWW-Authenticate")
	}
	c.refused(http.StatusUnauthorized, "POST", "/v1/apis", "not-a-jwt", weather("nope"))

	// Webhook endpoints first, so that every later change of acme is
	// recorded as a delivery.
	var types struct{ Data []string }
	c.call(http.StatusOK, "GET", "/v1/webhooks/event-types", cons, nil).decode(&types)
	var hook struct{ ID, Secret string }
	r := c.call(http.StatusCreated, "POST", "/v1/webhooks", prov, map[string]any{
		"url": "http://127.0.0.1:9/hooks", "description": "everything", "event_types": []string{"*"},
	})
	r.decode(&hook)
	if r.Header.Get("Location") != "/v1/webhooks/"+hook.ID || !strings.HasPrefix(hook.Secret, "whsec_") {
		t.Errorf("createWebhookEndpoint = Location %q, secret %q; want /v1/webhooks/%s and a whsec_ secret", r.Header.Get("Location"), hook.Secret, hook.ID)
	}
	var hook2 struct{ ID string }
	c.call(http.StatusCreated, "POST", "/v1/webhooks", cons, map[string]any{
		"url": "https://hooks.example.com/veil", "event_types": types.Data[:2], "enabled": false,
	}).decode(&hook2)
	c.refused(http.StatusUnprocessableEntity, "POST", "/v1/webhooks", prov, map[string]any{"url": "ftp://x", "event_types": []string{}})
	c.pages("/v1/webhooks", "limit=1", prov)
	c.call(http.StatusOK, "GET", "/v1/webhooks/"+hook.ID, prov, nil)
	c.call(http.StatusNotFound, "GET", "/v1/webhooks/"+hook.ID, other, nil)
	c.call(http.StatusOK, "PATCH", "/v1/webhooks/"+hook2.ID, cons, map[string]any{"description": "two types", "enabled": true, "url": nil})
	c.refused(http.StatusUnprocessableEntity, "PATCH", "/v1/webhooks/"+hook2.ID, cons, map[string]any{"event_types": []string{"api.nothing"}})
	c.call(http.StatusNotFound, "PATCH", "/v1/webhooks/"+hook2.ID, other, map[string]any{"enabled": false})
	c.call(http.StatusOK, "POST", "/v1/webhooks/"+hook2.ID+"/rotate-secret", cons, nil)
	c.call(http.StatusNotFound, "POST", "/v1/webhooks/"+missing+"/rotate-secret", cons, nil)

	// Registering APIs.
	full := map[string]any{
		"name": "Weather", "slug": "weather", "description": "Forecasts by city.", "upstream_url": "http://127.0.0.1:9/v1",
		"version": "1.0", "routes": []map[string]any{{"methods": []string{"GET"}, "path": "/forecast/{city}"}},
		"health_check_path": "/health", "docs_url": "https://docs.example.com/weather", "visibility": "public",
	}
	var api struct{ ID, State string }
	r = c.call(http.StatusCreated, "POST", "/v1/apis", prov, full)
	r.decode(&api)
	if r.Header.Get("Location") != "/v1/apis/"+api.ID {
		t.Errorf("createAPI Location = %q; want /v1/apis/%s", r.Header.Get("Location"), api.ID)
	}
	var maps struct{ ID string }
	first := c.call(http.StatusCreated, "POST", "/v1/apis", prov, weather("maps"), "Idempotency-Key", "create-maps")
	first.decode(&maps)
	again := c.call(http.StatusCreated, "POST", "/v1/apis", prov, weather("maps"), "Idempotency-Key", "create-maps")
	if again.Header.Get(middleware.HeaderIdempotentReplayed) != "true" || !bytes.Equal(first.Body, again.Body) {
		t.Errorf("createAPI replay = %q %s; want the first answer, replayed", again.Header.Get(middleware.HeaderIdempotentReplayed), again.Body)
	}
	problems := []struct {
		want  int
		typ   string
		reply reply
	}{
		{422, "idempotency-key-reused", c.call(422, "POST", "/v1/apis", prov, weather("other"), "Idempotency-Key", "create-maps")},
		{400, "invalid-idempotency-key", c.refused(400, "POST", "/v1/apis", prov, weather("other"), "Idempotency-Key", strings.Repeat("k", 256))},
		{413, "request-too-large", c.refused(413, "POST", "/v1/apis", prov, bytes.Repeat([]byte(" "), middleware.MaxIdempotentRequestBytes+1), "Idempotency-Key", "too-large")},
		{409, "slug-taken", c.call(409, "POST", "/v1/apis", prov, weather("weather"))},
		{403, "forbidden", c.call(403, "POST", "/v1/apis", cons, weather("by-consumer"))},
		{422, "validation", c.refused(422, "POST", "/v1/apis", prov, map[string]any{"name": "", "slug": "Bad Slug", "upstream_url": "ftp://x"})},
		{400, "malformed-json", c.refused(400, "POST", "/v1/apis", prov, map[string]any{"name": "x", "unknown": 1})},
		{415, "unsupported-media-type", c.refused(415, "POST", "/v1/apis", prov, weather("typed"), "Content-Type", "text/plain")},
	}
	for _, p := range problems {
		if got := p.reply.problem(); got != p.typ {
			t.Errorf("%s = %s; want %d %s", p.reply.what, got, p.want, p.typ)
		}
	}

	// Reading and changing them.
	c.pages("/v1/apis", "state=draft&q=a&limit=1", prov)
	c.call(http.StatusOK, "GET", "/v1/apis", other, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/apis?limit=0", prov, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/audit?limit=", prov, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/subscriptions?status=", prov, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/admin/approvals?status=", admin, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/apis?state=asleep", prov, nil)
	c.call(http.StatusOK, "GET", "/v1/apis/"+api.ID, cons, nil)
	c.call(http.StatusOK, "GET", "/v1/apis/"+api.ID, admin, nil)
	c.call(http.StatusNotFound, "GET", "/v1/apis/"+api.ID, other, nil)
	c.refused(http.StatusNotFound, "GET", "/v1/apis/not-a-uuid", prov, nil)
	c.call(http.StatusOK, "PATCH", "/v1/apis/"+api.ID, prov, map[string]any{"description": "Forecasts by city, hourly.", "docs_url": nil})
	c.call(http.StatusForbidden, "PATCH", "/v1/apis/"+api.ID, cons, map[string]any{"name": "Mine"})
	c.refused(http.StatusRequestEntityTooLarge, "PATCH", "/v1/apis/"+api.ID, prov, bytes.Repeat([]byte(" "), 1<<20+1))
	c.refused(http.StatusBadRequest, "PATCH", "/v1/apis/"+api.ID, prov, []byte("null"))
	c.call(http.StatusNotFound, "PATCH", "/v1/apis/"+api.ID, other, map[string]any{"name": "Mine"})
	c.call(http.StatusOK, "GET", "/v1/apis/"+api.ID+"/versions", prov, nil)
	c.call(http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/versions", prov, map[string]any{
		"version": "1.1", "upstream_url": "http://127.0.0.1:9/v1.1", "changelog": "Hourly forecasts.",
		"routes": []map[string]any{{"methods": []string{"GET", "HEAD"}, "path": "/forecast/{city}/hourly"}},
	})
	c.call(http.StatusConflict, "POST", "/v1/apis/"+api.ID+"/versions", prov, map[string]any{"version": "1.1", "upstream_url": "http://127.0.0.1:9/v1.1"})
	c.refused(http.StatusUnprocessableEntity, "POST", "/v1/apis/"+api.ID+"/versions", prov, map[string]any{"version": "", "upstream_url": "x"})
	c.call(http.StatusOK, "GET", "/v1/apis/"+api.ID+"/transitions", prov, nil)
	c.call(http.StatusNotFound, "GET", "/v1/apis/"+missing+"/transitions", prov, nil)
	// The first rotation reveals a secret; the second keeps it for the
	// overlap.
	c.call(http.StatusOK, "POST", "/v1/apis/"+api.ID+"/signing-secret/rotate", prov, nil)
	c.call(http.StatusOK, "POST", "/v1/apis/"+api.ID+"/signing-secret/rotate", prov, nil)
	c.call(http.StatusForbidden, "POST", "/v1/apis/"+api.ID+"/signing-secret/rotate", cons, nil)
	c.call(http.StatusNotFound, "POST", "/v1/apis/"+missing+"/signing-secret/rotate", prov, nil)
	c.call(http.StatusConflict, "POST", "/v1/apis/"+api.ID+"/deprecate", prov, map[string]any{"reason": "too early"})
	c.call(http.StatusForbidden, "POST", "/v1/apis/"+api.ID+"/retire", cons, nil)

	// Review: submit, comment, escalate, request changes.
	var appr struct{ ID string }
	c.call(http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/submit", prov, map[string]any{"priority": "high", "note": "ready"}).decode(&appr)
	c.call(http.StatusConflict, "POST", "/v1/apis/"+api.ID+"/submit", prov, nil)
	c.refused(http.StatusUnprocessableEntity, "POST", "/v1/apis/"+maps.ID+"/submit", prov, map[string]any{"priority": "asap"})
	if got := c.call(http.StatusConflict, "PATCH", "/v1/apis/"+api.ID, prov, map[string]any{"slug": "weather-2"}).problem(); got != "not-editable" {
		t.Errorf("updateAPI of a pending API = %s; want not-editable", got)
	}
	c.call(http.StatusConflict, "DELETE", "/v1/apis/"+api.ID, prov, nil)
	c.call(http.StatusOK, "GET", "/v1/approvals/"+appr.ID, cons, nil)
	c.call(http.StatusNotFound, "GET", "/v1/approvals/"+appr.ID, other, nil)
	c.call(http.StatusCreated, "POST", "/v1/approvals/"+appr.ID+"/comments", prov, map[string]any{"comment": "Docs are up."})
	c.call(http.StatusForbidden, "POST", "/v1/approvals/"+appr.ID+"/comments", cons, map[string]any{"comment": "Me too."})
	c.call(http.StatusNotFound, "POST", "/v1/approvals/"+appr.ID+"/comments", other, map[string]any{"comment": "Me too."})
	c.refused(http.StatusUnprocessableEntity, "POST", "/v1/approvals/"+appr.ID+"/comments", prov, map[string]any{"comment": ""})

	c.call(http.StatusOK, "GET", "/v1/admin/approvals", admin, nil)
	c.call(http.StatusOK, "GET", "/v1/admin/approvals?status=pending&priority=high&overdue=false&organization_id="+me.OrganizationID+"&api_id="+api.ID, admin, nil)
	c.call(http.StatusForbidden, "GET", "/v1/admin/approvals", prov, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/admin/approvals?status=sleeping", admin, nil)
	c.call(http.StatusOK, "GET", "/v1/admin/approvals/stats", admin, nil)
	c.call(http.StatusForbidden, "GET", "/v1/admin/approvals/stats", cons, nil)
	c.call(http.StatusOK, "GET", "/v1/admin/approvals/"+appr.ID, admin, nil)
	c.call(http.StatusNotFound, "GET", "/v1/admin/approvals/"+missing, admin, nil)
	c.call(http.StatusCreated, "POST", "/v1/admin/approvals/"+appr.ID+"/comments", admin, map[string]any{"comment": "Looking."})
	c.call(http.StatusOK, "POST", "/v1/admin/approvals/"+appr.ID+"/escalate", admin, nil)
	if got := c.call(http.StatusForbidden, "POST", "/v1/admin/approvals/"+appr.ID+"/approve", acmeAdmin, nil).problem(); got != "self-approval" {
		t.Errorf("approveApproval by the API's own organization = %s; want self-approval", got)
	}
	c.call(http.StatusOK, "POST", "/v1/admin/approvals/"+appr.ID+"/request-changes", admin, map[string]any{"reason": "Add a health path."})
	if got := c.call(http.StatusConflict, "POST", "/v1/admin/approvals/"+appr.ID+"/approve", admin, map[string]any{"reason": "late"}).problem(); got != "approval-closed" {
		t.Errorf("approveApproval of a decided request = %s; want approval-closed", got)
	}

	// Rejected, revised, submitted again and approved.
	c.call(http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/submit", prov, nil).decode(&appr)
	c.refused(http.StatusUnprocessableEntity, "POST", "/v1/admin/approvals/"+appr.ID+"/reject", admin, map[string]any{"reason": " "})
	c.call(http.StatusOK, "POST", "/v1/admin/approvals/"+appr.ID+"/reject", admin, map[string]any{"reason": "Upstream is down."})
	c.call(http.StatusOK, "POST", "/v1/apis/"+api.ID+"/revise", prov, map[string]any{"reason": "Upstream is back."})
	c.call(http.StatusCreated, "POST", "/v1/apis/"+api.ID+"/submit", prov, map[string]any{"priority": "urgent"}).decode(&appr)
	c.call(http.StatusForbidden, "POST", "/v1/admin/approvals/"+appr.ID+"/approve", prov, nil)
	c.call(http.StatusOK, "POST", "/v1/admin/approvals/"+appr.ID+"/approve", admin, map[string]any{"reason": "Looks good."})
	var approvals struct {
		NextCursor string `json:"next_cursor"`
	}
	c.call(http.StatusOK, "GET", "/v1/admin/approvals?limit=1", admin, nil).decode(&approvals)
	c.call(http.StatusOK, "GET", "/v1/admin/approvals?cursor="+approvals.NextCursor, admin, nil)
	c.call(http.StatusOK, "GET", "/v1/admin/approvals/stats", admin, nil)

	// Bulk: one approved, one self-approval, one unknown.
	var mapsAppr, ownAppr, own struct{ ID string }
	c.call(http.StatusCreated, "POST", "/v1/apis/"+maps.ID+"/submit", prov, nil).decode(&mapsAppr)
	c.call(http.StatusCreated, "POST", "/v1/apis", acmeAdmin, weather("internal")).decode(&own)
	c.call(http.StatusCreated, "POST", "/v1/apis/"+own.ID+"/submit", acmeAdmin, map[string]any{"priority": "low"}).decode(&ownAppr)
	var bulk struct {
		Results []struct {
			Status  int
			Problem struct{ Type string }
		}
	}
	c.call(http.StatusMultiStatus, "POST", "/v1/admin/approvals/bulk", acmeAdmin, map[string]any{
		"ids": []string{mapsAppr.ID, ownAppr.ID, missing}, "action": "approve",
	}).decode(&bulk)
	if len(bulk.Results) != 3 || bulk.Results[0].Status != 403 || bulk.Results[1].Status != 403 || bulk.Results[2].Status != 404 {
		t.Errorf("decideApprovalsInBulk by acme's admin = %+v; want 403 self-approval twice, then 404", bulk.Results)
	}
	c.call(http.StatusMultiStatus, "POST", "/v1/admin/approvals/bulk", admin, map[string]any{
		"ids": []string{mapsAppr.ID, ownAppr.ID}, "action": "escalate", "reason": "Queue is long.",
	})
	c.refused(http.StatusUnprocessableEntity, "POST", "/v1/admin/approvals/bulk", admin, map[string]any{"ids": []string{mapsAppr.ID}, "action": "ignore"})
	c.refused(http.StatusUnprocessableEntity, "POST", "/v1/admin/approvals/bulk", admin, map[string]any{"ids": []string{}, "action": "approve"}, "X-Request-Id", "bulk-empty")
	c.call(http.StatusForbidden, "POST", "/v1/admin/approvals/bulk", prov, map[string]any{"ids": []string{mapsAppr.ID}, "action": "approve"})

	// Lifecycle after approval. Jobs do not run here, so the API stays
	// approved; the states only a job reaches (failed, active) are set in
	// the database.
	c.call(http.StatusOK, "POST", "/v1/admin/apis/"+api.ID+"/suspend", admin, map[string]any{"reason": "Abuse report."})
	c.call(http.StatusForbidden, "POST", "/v1/admin/apis/"+api.ID+"/resume", prov, nil)
	c.call(http.StatusAccepted, "POST", "/v1/admin/apis/"+api.ID+"/resume", admin, nil)
	c.call(http.StatusConflict, "POST", "/v1/admin/apis/"+api.ID+"/retry", admin, nil)
	forceState(t, e, api.ID, "failed")
	c.call(http.StatusAccepted, "POST", "/v1/admin/apis/"+api.ID+"/retry", admin, map[string]any{"reason": "Upstream fixed."})
	forceState(t, e, api.ID, "active")
	c.call(http.StatusOK, "POST", "/v1/apis/"+api.ID+"/deprecate", prov, map[string]any{"reason": "v2 is out."})
	c.call(http.StatusOK, "GET", "/v1/apis?state=deprecated", cons, nil)
	c.call(http.StatusOK, "POST", "/v1/apis/"+api.ID+"/retire", prov, nil)
	c.call(http.StatusNotFound, "POST", "/v1/admin/apis/"+missing+"/suspend", admin, nil)
	if r := c.call(http.StatusServiceUnavailable, "POST", "/v1/admin/reconcile/apis", admin, nil); r.problem() != "gateway-unavailable" {
		t.Errorf("reconcileAPIs without a gateway = %s; want gateway-unavailable", r.problem())
	}
	c.call(http.StatusForbidden, "POST", "/v1/admin/reconcile/apis", prov, nil)

	// Deliveries of the catch-all endpoint. Attempts are made by the
	// delivery job, which does not run here: two are recorded directly.
	var deliveries struct {
		Data       []struct{ ID string }
		NextCursor string `json:"next_cursor"`
	}
	c.call(http.StatusOK, "GET", "/v1/webhooks/"+hook.ID+"/deliveries?limit=2", prov, nil).decode(&deliveries)
	if len(deliveries.Data) != 2 || deliveries.NextCursor == "" {
		t.Fatalf("listWebhookDeliveries?limit=2 = %d deliveries, next %q; want 2 and a cursor", len(deliveries.Data), deliveries.NextCursor)
	}
	c.call(http.StatusOK, "GET", "/v1/webhooks/"+hook.ID+"/deliveries?cursor="+deliveries.NextCursor, prov, nil)
	delivery := deliveries.Data[0].ID
	if _, err := e.Pool.Exec(ctx, `INSERT INTO webhook_attempts (delivery_id, status_code, error, duration_ms)
		VALUES ($1, 503, 'unexpected status 503', 41), ($1, NULL, 'connection refused', 2)`, delivery); err != nil {
		t.Fatal(err)
	}
	c.call(http.StatusOK, "GET", "/v1/webhooks/"+hook.ID+"/deliveries/"+delivery, prov, nil)
	c.call(http.StatusNotFound, "GET", "/v1/webhooks/"+hook2.ID+"/deliveries/"+delivery, prov, nil)
	c.refused(http.StatusNotFound, "GET", "/v1/webhooks/"+hook.ID+"/deliveries/latest", prov, nil)
	c.call(http.StatusAccepted, "POST", "/v1/webhooks/"+hook.ID+"/deliveries/"+delivery+"/redeliver", prov, nil)
	c.call(http.StatusNotFound, "POST", "/v1/webhooks/"+hook.ID+"/deliveries/"+delivery+"/redeliver", other, nil)
	c.call(http.StatusNotFound, "GET", "/v1/webhooks/"+hook.ID+"/deliveries", other, nil)

	// The audit log.
	var audit struct {
		NextCursor string `json:"next_cursor"`
	}
	c.call(http.StatusOK, "GET", "/v1/audit?limit=2", prov, nil).decode(&audit)
	c.call(http.StatusOK, "GET", "/v1/audit?limit=2&cursor="+audit.NextCursor, prov, nil)
	c.call(http.StatusOK, "GET", "/v1/audit?target_type=api&target_id="+api.ID+"&action=api.create", cons, nil)
	c.call(http.StatusOK, "GET", "/v1/audit?organization_id="+me.OrganizationID, admin, nil)
	c.call(http.StatusOK, "GET", "/v1/audit?target_type=webhook_endpoint", admin, nil)
	c.refused(http.StatusBadRequest, "GET", "/v1/audit?cursor=latest", prov, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/audit?organization_id=acme", admin, nil)

	exerciseSubscriptions(t, e, c, prov, cons, other, admin)
	exercisePricing(t, e, c, prov, cons, other, admin)
	exerciseBilling(t, e, c, prov, cons, other, admin)
	exercisePayments(t, e, c, prov, other, admin)
	exerciseBudgets(t, e, c, prov, cons, other, admin)
	exercisePayouts(t, e, c, prov, cons, other, admin)
	exerciseProviderAnalytics(t, e, c, prov, cons, other, admin)
	exerciseConsumerAnalytics(c, cons)

	// Ingest tokens.
	var ingestToken struct{ ID string }
	c.call(http.StatusCreated, "POST", "/v1/admin/ingest-tokens", admin,
		map[string]any{"name": "billing", "sources": []string{"/billing/*"}, "api_ids": []string{api.ID}}).decode(&ingestToken)
	c.refused(http.StatusUnprocessableEntity, "POST", "/v1/admin/ingest-tokens", admin, map[string]any{"name": "none", "sources": []string{}})
	c.call(http.StatusForbidden, "POST", "/v1/admin/ingest-tokens", prov, map[string]any{"name": "x", "sources": []string{"/x"}})
	c.call(http.StatusOK, "GET", "/v1/admin/ingest-tokens", admin, nil)
	c.call(http.StatusOK, "DELETE", "/v1/admin/ingest-tokens/"+ingestToken.ID, admin, nil)
	c.call(http.StatusNotFound, "DELETE", "/v1/admin/ingest-tokens/"+uuid.NewString(), admin, nil)

	// Plan files: a broken file is a 422 listing its errors; an empty
	// directory reloads nothing.
	c.call(http.StatusForbidden, "POST", "/v1/admin/pricing/reload", prov, nil)
	removePlan := e.writePlanFile("broken.yaml", "api: weather\nplan: [\n")
	if got := c.call(http.StatusUnprocessableEntity, "POST", "/v1/admin/pricing/reload", admin, nil).problem(); got != "invalid-plan-files" {
		t.Errorf("reloadPlanFiles with a broken file = %s; want invalid-plan-files", got)
	}
	removePlan()
	c.call(http.StatusOK, "POST", "/v1/admin/pricing/reload", admin, nil)

	// Deleting.
	c.call(http.StatusNotFound, "DELETE", "/v1/apis/"+api.ID, other, nil)
	c.call(http.StatusForbidden, "DELETE", "/v1/apis/"+api.ID, cons, nil)
	c.call(http.StatusNoContent, "DELETE", "/v1/apis/"+api.ID, prov, nil)
	c.call(http.StatusNotFound, "GET", "/v1/apis/"+api.ID, prov, nil)
	c.call(http.StatusNoContent, "DELETE", "/v1/webhooks/"+hook2.ID, cons, nil)
	c.call(http.StatusNotFound, "DELETE", "/v1/webhooks/"+hook2.ID, cons, nil)

	if left := c.unexercised(); len(left) > 0 {
		t.Errorf("operations this test does not exercise: %s", strings.Join(left, ", "))
	}
}

// forceState puts an API in a state only a job reaches.
func forceState(t *testing.T, e *testEnv, id, state string) {
	t.Helper()
	if _, err := e.Pool.Exec(t.Context(), `UPDATE apis SET state = $2 WHERE id = $1`, id, state); err != nil {
		t.Fatal(err)
	}
}

// TestOpenAPIMatchesRateLimits checks the rate-limit headers and the 429
// answer against the document.
func TestOpenAPIMatchesRateLimits(t *testing.T) {
	limiter, err := middleware.NewRateLimiter(middleware.RateLimitConfig{Client: testenv.Redis(t), Prefix: "veil:test:rl:" + testenv.Suffix() + ":"})
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnvWith(t, func(cfg *httpapi.Config) {
		cfg.RateLimiter = limiter
		cfg.TokenRate = middleware.Rate{Limit: 2, Period: time.Hour, Burst: 2}
	})
	c := newContract(t, e.Server.URL)
	tok := e.token("acme", "alice", identity.RoleProvider)
	for range 2 {
		if r := c.call(http.StatusOK, "GET", "/v1/me", tok, nil); r.Header.Get("RateLimit-Remaining") == "" {
			t.Errorf("getMe under a rate limit has no RateLimit-Remaining")
		}
	}
	if got := c.call(http.StatusTooManyRequests, "POST", "/v1/webhooks", tok, map[string]any{"url": "https://hooks.example.com", "event_types": []string{"*"}}).problem(); got != "rate-limited" {
		t.Errorf("third request = %s; want rate-limited", got)
	}
}

// exerciseSubscriptions drives plans, subscriptions, keys and usage through
// the contract: acme's provider (prov) offers plans of an active API,
// initech's consumer subscribes and holds keys, globex's provider (other)
// subscribes too and is a stranger to initech's subscription.
func exerciseSubscriptions(t *testing.T, e *testEnv, c *contract, prov, cons, other, admin string) {
	t.Helper()
	ctx := t.Context()
	buyer := e.token("initech", "bob", identity.RoleConsumer)
	missing := uuid.NewString()

	// An API takes subscriptions once active, which only the gateway
	// registration job makes it.
	var fc struct{ ID string }
	c.call(http.StatusCreated, "POST", "/v1/apis", prov, weather("forecasts")).decode(&fc)
	forceState(t, e, fc.ID, "active")
	plans := "/v1/apis/" + fc.ID + "/plans"

	// Plans.
	var basic, trial struct {
		ID      string
		Current struct{ Version int } `json:"current_version"`
	}
	c.call(http.StatusCreated, "POST", plans, prov, map[string]any{
		"name": "Basic", "slug": "basic", "description": "Hourly forecasts.", "status": "active",
		"terms": map[string]any{"type": "subscription", "currency": "USD", "interval": "month", "base_fee": "9.99", "trial_days": 0,
			"quota_requests": 1000, "quota_hard": true, "rate_per_second": 10, "rate_per_minute": nil, "included_units": "100.5"},
	}).decode(&basic)
	c.call(http.StatusCreated, "POST", plans, prov, map[string]any{
		"name": "Trial", "slug": "trial", "status": "draft", "terms": map[string]any{"currency": "EUR", "trial_days": 14, "base_fee": 0},
	}, "Idempotency-Key", "plan-trial").decode(&trial)
	for _, p := range []struct {
		reply reply
		typ   string
	}{
		{c.call(http.StatusConflict, "POST", plans, prov, map[string]any{"name": "Again", "slug": "basic", "terms": map[string]any{"currency": "USD"}}), "slug-taken"},
		{c.call(http.StatusForbidden, "POST", plans, cons, map[string]any{"name": "Mine", "slug": "mine", "terms": map[string]any{"currency": "USD"}}), "forbidden"},
		{c.call(http.StatusForbidden, "POST", plans, other, map[string]any{"name": "Mine", "slug": "mine", "terms": map[string]any{"currency": "USD"}}), "forbidden"},
		{c.call(http.StatusNotFound, "POST", "/v1/apis/"+missing+"/plans", prov, map[string]any{"name": "X", "slug": "x", "terms": map[string]any{"currency": "USD"}}), "not-found"},
		{c.refused(http.StatusUnprocessableEntity, "POST", plans, prov, map[string]any{"name": "X", "slug": "Bad Slug", "terms": map[string]any{"currency": "usd"}}), "validation"},
		{c.refused(http.StatusBadRequest, "POST", plans, prov, map[string]any{"name": "X", "slug": "x", "terms": map[string]any{"currency": "USD", "tiers": 3}}), "malformed-json"},
	} {
		if got := p.reply.problem(); got != p.typ {
			t.Errorf("%s = %s; want %s", p.reply.what, got, p.typ)
		}
	}
	var planList struct{ Data []struct{ ID string } }
	c.call(http.StatusOK, "GET", plans, prov, nil).decode(&planList)
	if len(planList.Data) != 2 {
		t.Errorf("listPlans as the API's provider = %d plans; want the active and the draft one", len(planList.Data))
	}
	c.call(http.StatusOK, "GET", plans, other, nil).decode(&planList)
	if len(planList.Data) != 1 || planList.Data[0].ID != basic.ID {
		t.Errorf("listPlans as another organization = %+v; want the active plan only", planList.Data)
	}
	c.call(http.StatusNotFound, "GET", "/v1/apis/"+missing+"/plans", prov, nil)
	c.call(http.StatusOK, "GET", "/v1/plans/"+basic.ID, other, nil)
	c.call(http.StatusOK, "GET", "/v1/plans/"+trial.ID, admin, nil)
	c.call(http.StatusNotFound, "GET", "/v1/plans/"+trial.ID, other, nil)
	c.call(http.StatusOK, "PATCH", "/v1/plans/"+basic.ID, prov, map[string]any{"description": "Hourly and daily forecasts.", "name": nil})
	c.call(http.StatusOK, "PATCH", "/v1/plans/"+trial.ID, prov, map[string]any{"name": "Trial (14 days)", "status": "draft"})
	c.call(http.StatusForbidden, "PATCH", "/v1/plans/"+basic.ID, other, map[string]any{"name": "Mine"})
	c.call(http.StatusNotFound, "PATCH", "/v1/plans/"+missing, prov, map[string]any{"name": "Mine"})
	c.refused(http.StatusUnprocessableEntity, "PATCH", "/v1/plans/"+basic.ID, prov, map[string]any{"name": ""})
	c.call(http.StatusCreated, "POST", "/v1/plans/"+basic.ID+"/versions", prov, map[string]any{
		"terms": map[string]any{"type": "subscription", "currency": "USD", "base_fee": "12.50", "quota_requests": 2000, "quota_hard": true, "rate_per_minute": 600},
	}).decode(&basic)
	if basic.Current.Version != 2 {
		t.Errorf("createPlanVersion = version %d; want 2", basic.Current.Version)
	}
	c.call(http.StatusForbidden, "POST", "/v1/plans/"+basic.ID+"/versions", other, map[string]any{"terms": map[string]any{"currency": "USD"}})
	c.call(http.StatusNotFound, "POST", "/v1/plans/"+missing+"/versions", prov, map[string]any{"terms": map[string]any{"currency": "USD"}})
	c.refused(http.StatusUnprocessableEntity, "POST", "/v1/plans/"+basic.ID+"/versions", prov, map[string]any{"terms": map[string]any{"currency": "USD", "trial_days": 400}})

	// Subscribing.
	var sub, otherSub struct {
		ID, Status  string
		PlanVersion int `json:"plan_version"`
	}
	r := c.call(http.StatusCreated, "POST", "/v1/subscriptions", buyer, map[string]any{"plan_id": basic.ID})
	r.decode(&sub)
	if r.Header.Get("Location") != "/v1/subscriptions/"+sub.ID || sub.Status != "active" || sub.PlanVersion != 2 {
		t.Errorf("subscribe = Location %q, %+v; want an active subscription on version 2", r.Header.Get("Location"), sub)
	}
	c.call(http.StatusCreated, "POST", "/v1/subscriptions", other, map[string]any{"plan_id": basic.ID}).decode(&otherSub)
	for _, p := range []struct {
		reply reply
		typ   string
	}{
		{c.call(http.StatusConflict, "POST", "/v1/subscriptions", buyer, map[string]any{"plan_id": basic.ID}), "already-subscribed"},
		{c.call(http.StatusConflict, "POST", "/v1/subscriptions", cons, map[string]any{"plan_id": trial.ID}), "plan-unavailable"},
		{c.call(http.StatusNotFound, "POST", "/v1/subscriptions", buyer, map[string]any{"plan_id": trial.ID}), "not-found"},
		{c.call(http.StatusNotFound, "POST", "/v1/subscriptions", buyer, map[string]any{"plan_id": missing}), "not-found"},
		{c.refused(http.StatusUnprocessableEntity, "POST", "/v1/subscriptions", buyer, map[string]any{}), "validation"},
		{c.refused(http.StatusBadRequest, "POST", "/v1/subscriptions", buyer, map[string]any{"plan_id": "basic"}), "malformed-json"},
	} {
		if got := p.reply.problem(); got != p.typ {
			t.Errorf("%s = %s; want %s", p.reply.what, got, p.typ)
		}
	}
	var subs struct {
		Data       []struct{ ID string }
		NextCursor string `json:"next_cursor"`
	}
	c.call(http.StatusOK, "GET", "/v1/subscriptions", buyer, nil).decode(&subs)
	if len(subs.Data) != 1 || subs.Data[0].ID != sub.ID {
		t.Errorf("listSubscriptions as the subscriber = %+v; want its own subscription only", subs.Data)
	}
	c.call(http.StatusOK, "GET", "/v1/subscriptions?api_id="+fc.ID+"&status=active&limit=1", prov, nil).decode(&subs)
	if len(subs.Data) != 1 || subs.NextCursor == "" {
		t.Fatalf("listSubscriptions?limit=1 as the API's provider = %d, next %q; want one of two and a cursor", len(subs.Data), subs.NextCursor)
	}
	c.call(http.StatusOK, "GET", "/v1/subscriptions?api_id="+fc.ID+"&cursor="+subs.NextCursor, prov, nil)
	c.call(http.StatusOK, "GET", "/v1/subscriptions?status=canceled", admin, nil)
	c.call(http.StatusBadRequest, "GET", "/v1/subscriptions?cursor=nope", buyer, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/subscriptions?status=paused", buyer, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", "/v1/subscriptions?api_id=forecasts", buyer, nil)
	subPath := "/v1/subscriptions/" + sub.ID
	c.call(http.StatusOK, "GET", subPath, buyer, nil)
	c.call(http.StatusOK, "GET", subPath, prov, nil)
	c.call(http.StatusOK, "GET", subPath, admin, nil)
	c.call(http.StatusNotFound, "GET", subPath, other, nil)
	c.call(http.StatusNotFound, "GET", "/v1/subscriptions/"+missing, buyer, nil)

	// Keys: the plaintext is in the answer that issues a key, and no other.
	var key struct {
		ID, State, Key string
	}
	// One expiry for the request and its repeat: two readings of the clock
	// a second apart would make the repeat another body.
	expires := time.Now().Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)
	r = c.call(http.StatusCreated, "POST", subPath+"/keys", buyer, map[string]any{
		"name": "ci", "expires_at": expires,
		"methods": []string{"GET", "HEAD"}, "routes": []string{"/forecast/{city}", "/v1/*"}, "rate_per_second": 5, "rate_per_minute": 100,
		"metadata": map[string]any{"team": "data", "tags": []string{"nightly"}}, "auto_rotate": false, "rotate_every_days": 30,
		"auto_renew": true, "renew_days": 30,
	}, "Idempotency-Key", "key-ci")
	r.decode(&key)
	if !strings.HasPrefix(key.Key, "veil_live_") || key.State != "pending" || r.Header.Get("Location") != "/v1/keys/"+key.ID ||
		r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("createKey = %s, Location %q, Cache-Control %q; want a pending key with its plaintext, no-store", r.Body, r.Header.Get("Location"), r.Header.Get("Cache-Control"))
	}
	if p := c.call(http.StatusConflict, "POST", subPath+"/keys", buyer, map[string]any{
		"name": "ci", "expires_at": expires,
		"methods": []string{"GET", "HEAD"}, "routes": []string{"/forecast/{city}", "/v1/*"}, "rate_per_second": 5, "rate_per_minute": 100,
		"metadata": map[string]any{"team": "data", "tags": []string{"nightly"}}, "auto_rotate": false, "rotate_every_days": 30,
		"auto_renew": true, "renew_days": 30,
	}, "Idempotency-Key", "key-ci"); !strings.Contains(p.problem(), "withheld") || bytes.Contains(p.Body, []byte(key.Key)) {
		t.Errorf("createKey repeated with its Idempotency-Key = %s; want idempotency-response-withheld without the key", p.Body)
	}
	var bare struct{ ID string }
	c.call(http.StatusCreated, "POST", subPath+"/keys", buyer, map[string]any{}).decode(&bare)
	c.call(http.StatusForbidden, "POST", subPath+"/keys", prov, map[string]any{})
	if got := c.call(http.StatusForbidden, "POST", subPath+"/keys", admin, map[string]any{}).problem(); got != "plaintext-refused" {
		t.Errorf("createKey by an admin of another organization = %s; want plaintext-refused", got)
	}
	c.call(http.StatusNotFound, "POST", subPath+"/keys", other, map[string]any{})
	c.call(http.StatusNotFound, "POST", "/v1/subscriptions/"+missing+"/keys", buyer, map[string]any{})
	if r := c.call(http.StatusUnprocessableEntity, "POST", subPath+"/keys", buyer, map[string]any{
		"routes": []string{"/forecast/{city"}, "expires_at": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339),
	}); r.problem() != "validation" {
		t.Errorf("createKey with a bad route and a past expiry = %s; want validation", r.Body)
	}
	c.refused(http.StatusUnprocessableEntity, "POST", subPath+"/keys", buyer, map[string]any{"methods": []string{"FETCH"}})
	for _, tok := range []string{buyer, prov} {
		if r := c.call(http.StatusOK, "GET", subPath+"/keys", tok, nil); bytes.Contains(r.Body, []byte(key.Key)) {
			t.Errorf("listKeys shows a plaintext key: %s", r.Body)
		}
	}
	c.call(http.StatusNotFound, "GET", subPath+"/keys", other, nil)
	c.call(http.StatusNotFound, "GET", "/v1/subscriptions/"+missing+"/keys", buyer, nil)

	// The gateway's sync job makes a key active; it does not run here.
	if err := e.Subs.Keys().SyncKey(ctx, uuid.MustParse(key.ID)); err != nil {
		t.Fatal(err)
	}
	keyPath := "/v1/keys/" + key.ID
	if r := c.call(http.StatusOK, "GET", keyPath, buyer, nil); bytes.Contains(r.Body, []byte(key.Key)) {
		t.Errorf("getKey shows the plaintext key: %s", r.Body)
	}
	c.call(http.StatusOK, "GET", keyPath, prov, nil)
	c.call(http.StatusNotFound, "GET", keyPath, other, nil)
	c.call(http.StatusNotFound, "GET", "/v1/keys/"+missing, buyer, nil)
	c.call(http.StatusOK, "PATCH", keyPath, buyer, map[string]any{
		"name": "ci-2", "expires_at": nil, "auto_renew": false, "renew_days": nil, "rate_per_second": nil, "metadata": map[string]any{"team": "platform"},
	})
	c.call(http.StatusForbidden, "PATCH", keyPath, prov, map[string]any{"name": "theirs"})
	c.call(http.StatusNotFound, "PATCH", keyPath, other, map[string]any{"name": "theirs"})
	c.refused(http.StatusUnprocessableEntity, "PATCH", keyPath, buyer, map[string]any{"rate_per_second": 0})
	c.call(http.StatusUnprocessableEntity, "PATCH", keyPath, buyer, map[string]any{"auto_renew": true})
	c.refused(http.StatusBadRequest, "PATCH", keyPath, buyer, map[string]any{"key": "veil_live_x"})

	// Suspending, resuming, rotating, revoking.
	if r := c.call(http.StatusConflict, "POST", keyPath+"/resume", buyer, nil); r.problem() != "invalid-transition" || !strings.Contains(string(r.Body), "active → active") {
		t.Errorf("resumeKey of an active key = %s; want invalid-transition naming active → active", r.Body)
	}
	c.call(http.StatusOK, "POST", keyPath+"/suspend", buyer, map[string]any{"reason": "Rotating credentials."})
	c.call(http.StatusConflict, "POST", keyPath+"/suspend", buyer, nil)
	c.call(http.StatusForbidden, "POST", keyPath+"/resume", prov, nil)
	c.call(http.StatusNotFound, "POST", keyPath+"/suspend", other, nil)
	c.call(http.StatusNotFound, "POST", "/v1/keys/"+missing+"/resume", buyer, nil)
	c.call(http.StatusOK, "POST", keyPath+"/resume", buyer, nil)
	c.call(http.StatusOK, "POST", keyPath+"/suspend", admin, map[string]any{"reason": "Abuse report."})
	if got := c.call(http.StatusForbidden, "POST", keyPath+"/resume", buyer, nil).problem(); got != "admin-suspended" {
		t.Errorf("resumeKey by the consumer of an admin's suspension = %s; want admin-suspended", got)
	}
	c.call(http.StatusOK, "POST", keyPath+"/resume", admin, nil)
	c.refused(http.StatusUnprocessableEntity, "POST", keyPath+"/rotate", buyer, map[string]any{"grace_seconds": -1})
	c.call(http.StatusForbidden, "POST", keyPath+"/rotate", prov, nil)
	if got := c.call(http.StatusForbidden, "POST", keyPath+"/rotate", admin, nil).problem(); got != "plaintext-refused" {
		t.Errorf("rotateKey by an admin of another organization = %s; want plaintext-refused", got)
	}
	var successor struct {
		ID, Key     string
		RotatedFrom string `json:"rotated_from"`
	}
	r = c.call(http.StatusCreated, "POST", keyPath+"/rotate", buyer, map[string]any{"grace_seconds": 3600})
	r.decode(&successor)
	if successor.RotatedFrom != key.ID || !strings.HasPrefix(successor.Key, "veil_live_") || successor.Key == key.Key ||
		r.Header.Get("Location") != "/v1/keys/"+successor.ID || r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("rotateKey = %s, Location %q; want the successor of %s with a new plaintext, no-store", r.Body, r.Header.Get("Location"), key.ID)
	}
	if got := c.call(http.StatusConflict, "POST", keyPath+"/rotate", buyer, nil).problem(); got != "already-rotated" {
		t.Errorf("rotateKey of a rotated key = %s; want already-rotated", got)
	}
	if got := c.call(http.StatusConflict, "POST", "/v1/keys/"+successor.ID+"/rotate", buyer, map[string]any{"grace_seconds": nil}).problem(); got != "invalid-transition" {
		t.Errorf("rotateKey of a pending key = %s; want invalid-transition", got)
	}
	c.call(http.StatusNotFound, "POST", "/v1/keys/"+missing+"/rotate", buyer, nil)
	c.call(http.StatusForbidden, "POST", "/v1/keys/"+bare.ID+"/revoke", prov, nil)
	c.call(http.StatusNotFound, "POST", "/v1/keys/"+bare.ID+"/revoke", other, nil)
	c.call(http.StatusOK, "POST", "/v1/keys/"+bare.ID+"/revoke", buyer, map[string]any{"reason": "Unused."})
	c.call(http.StatusConflict, "POST", "/v1/keys/"+bare.ID+"/revoke", buyer, nil)
	c.call(http.StatusNotFound, "POST", "/v1/keys/"+missing+"/revoke", buyer, nil)
	if got := c.call(http.StatusConflict, "PATCH", "/v1/keys/"+bare.ID, buyer, map[string]any{"name": "back"}).problem(); got != "invalid-transition" {
		t.Errorf("updateKey of a revoked key = %s; want invalid-transition", got)
	}

	// Automatic rotation seals the successor until its one reveal.
	if got := c.call(http.StatusConflict, "POST", keyPath+"/reveal", buyer, nil).problem(); got != "nothing-to-reveal" {
		t.Errorf("revealKey of a key issued in an answer = %s; want nothing-to-reveal", got)
	}
	var rotating struct{ ID string }
	c.call(http.StatusCreated, "POST", subPath+"/keys", buyer, map[string]any{"name": "rotating", "auto_rotate": true, "rotate_every_days": 1}).decode(&rotating)
	sealed := sealedSuccessor(t, e, rotating.ID)
	var revealable struct{ Revealable bool }
	c.call(http.StatusOK, "GET", "/v1/keys/"+sealed, buyer, nil).decode(&revealable)
	if !revealable.Revealable {
		t.Errorf("the successor of an automatic rotation is not revealable")
	}
	c.call(http.StatusForbidden, "POST", "/v1/keys/"+sealed+"/reveal", prov, nil)
	c.call(http.StatusForbidden, "POST", "/v1/keys/"+sealed+"/reveal", admin, nil)
	c.call(http.StatusNotFound, "POST", "/v1/keys/"+sealed+"/reveal", other, nil)
	c.call(http.StatusNotFound, "POST", "/v1/keys/"+missing+"/reveal", buyer, nil)
	r = c.call(http.StatusOK, "POST", "/v1/keys/"+sealed+"/reveal", buyer, nil)
	var revealed struct{ Key string }
	r.decode(&revealed)
	if !strings.HasPrefix(revealed.Key, "veil_live_") || r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("revealKey = %s, Cache-Control %q; want the plaintext, no-store", r.Body, r.Header.Get("Cache-Control"))
	}
	c.call(http.StatusConflict, "POST", "/v1/keys/"+sealed+"/reveal", buyer, nil)

	// The audit trail.
	var events struct {
		Data       []struct{ Action string }
		NextCursor string `json:"next_cursor"`
	}
	c.call(http.StatusOK, "GET", keyPath+"/events?limit=2", buyer, nil).decode(&events)
	if len(events.Data) != 2 || events.NextCursor == "" {
		t.Fatalf("listKeyEvents?limit=2 = %d entries, next %q; want 2 and a cursor", len(events.Data), events.NextCursor)
	}
	c.call(http.StatusOK, "GET", keyPath+"/events?cursor="+events.NextCursor, buyer, nil).decode(&events)
	if last := events.Data[len(events.Data)-1].Action; last != "key.create" {
		t.Errorf("the oldest entry of the key's audit trail = %s; want key.create", last)
	}
	// The API's provider sees its consumer's key trail without where the
	// consumer called from.
	for tok, shown := range map[string]bool{buyer: true, admin: true, prov: false} {
		var trail struct {
			Data []map[string]any `json:"data"`
		}
		c.call(http.StatusOK, "GET", keyPath+"/events", tok, nil).decode(&trail)
		for _, entry := range trail.Data {
			_, ip := entry["source_ip"]
			_, ua := entry["user_agent"]
			if ip != shown || ua != shown {
				t.Errorf("listKeyEvents entry %v: source_ip %t, user_agent %t; want both %t", entry["action"], ip, ua, shown)
			}
		}
	}
	c.call(http.StatusNotFound, "GET", keyPath+"/events", other, nil)
	c.call(http.StatusNotFound, "GET", "/v1/keys/"+missing+"/events", buyer, nil)
	c.refused(http.StatusBadRequest, "GET", keyPath+"/events?cursor=latest", buyer, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", keyPath+"/events?limit=0", buyer, nil)

	// Usage, from the ClickHouse roll-ups.
	hour := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	insertUsage(t, e,
		usageRow{sub.ID, key.ID, fc.ID, hour.Add(5 * time.Minute), 200, 12, "1"},
		usageRow{sub.ID, key.ID, fc.ID, hour.Add(65 * time.Minute), 429, 1, "0"},
		usageRow{sub.ID, successor.ID, fc.ID, hour.Add(70 * time.Minute), 200, 20, "0.5"},
	)
	span := "from=" + hour.Format(time.RFC3339) + "&to=" + hour.Add(2*time.Hour).Format(time.RFC3339)
	var rep usageReport
	c.call(http.StatusOK, "GET", subPath+"/usage?"+span+"&granularity=hour", buyer, nil).decode(&rep)
	if len(rep.Buckets) != 2 || rep.Total.Requests != 3 || rep.Total.Units != "1.5" {
		t.Errorf("getSubscriptionUsage = %d buckets, %d requests, %s units; want 2, 3, 1.5", len(rep.Buckets), rep.Total.Requests, rep.Total.Units)
	}
	c.call(http.StatusOK, "GET", subPath+"/usage", prov, nil)
	c.call(http.StatusOK, "GET", keyPath+"/usage?"+span+"&granularity=minute", buyer, nil).decode(&rep)
	if rep.KeyID != key.ID || rep.Total.Requests != 2 {
		t.Errorf("getKeyUsage = key %q, %d requests; want %s's 2", rep.KeyID, rep.Total.Requests, key.ID)
	}
	c.call(http.StatusOK, "GET", keyPath+"/usage?granularity=day", admin, nil)
	for _, r := range []reply{
		c.call(http.StatusBadRequest, "GET", subPath+"/usage?from="+hour.Format(time.RFC3339)+"&to="+hour.Format(time.RFC3339), buyer, nil),
		c.call(http.StatusBadRequest, "GET", keyPath+"/usage?granularity=minute&from="+hour.Add(-48*time.Hour).Format(time.RFC3339), buyer, nil),
	} {
		if got := r.problem(); got != "bad-usage-query" {
			t.Errorf("%s = %s; want bad-usage-query", r.what, got)
		}
	}
	c.refused(http.StatusUnprocessableEntity, "GET", subPath+"/usage?granularity=week", buyer, nil)
	c.refused(http.StatusUnprocessableEntity, "GET", keyPath+"/usage?from=yesterday", buyer, nil)
	c.call(http.StatusNotFound, "GET", subPath+"/usage", other, nil)
	c.call(http.StatusNotFound, "GET", keyPath+"/usage", other, nil)
	c.call(http.StatusNotFound, "GET", "/v1/subscriptions/"+missing+"/usage", buyer, nil)
	c.call(http.StatusNotFound, "GET", "/v1/keys/"+missing+"/usage", buyer, nil)

	// Quota: its status, the provider's credit and reset, a plan change.
	var qs struct {
		Limit     *int64 `json:"limit"`
		Remaining *int64 `json:"remaining"`
		Used      int64  `json:"used"`
	}
	c.call(http.StatusOK, "GET", subPath+"/quota", buyer, nil).decode(&qs)
	if qs.Limit == nil || *qs.Limit <= 0 || qs.Used != 0 || qs.Remaining == nil || *qs.Remaining != *qs.Limit {
		t.Fatalf("getSubscriptionQuota = %+v; want a limit, nothing used, all of it remaining", qs)
	}
	c.call(http.StatusOK, "GET", subPath+"/quota", prov, nil)
	c.call(http.StatusNotFound, "GET", subPath+"/quota", other, nil)
	c.call(http.StatusNotFound, "GET", "/v1/subscriptions/"+missing+"/quota", buyer, nil)
	var credit struct{ Limit int64 }
	c.call(http.StatusCreated, "POST", subPath+"/quota/credits", prov, map[string]any{"requests": 250, "reason": "Goodwill after an outage."}).decode(&credit)
	if credit.Limit != *qs.Limit+250 {
		t.Errorf("creditQuota of 250 on %d = limit %d; want %d", *qs.Limit, credit.Limit, *qs.Limit+250)
	}
	c.call(http.StatusForbidden, "POST", subPath+"/quota/credits", buyer, map[string]any{"requests": 1, "reason": "mine"})
	if got := c.refused(http.StatusUnprocessableEntity, "POST", subPath+"/quota/credits", prov, map[string]any{"requests": 0, "reason": ""}).problem(); got != "validation" {
		t.Errorf("creditQuota of 0 without a reason = %s; want validation", got)
	}
	c.call(http.StatusCreated, "POST", subPath+"/quota/reset", admin, map[string]any{"reason": "Support ticket 7."})
	c.call(http.StatusNotFound, "POST", subPath+"/quota/reset", other, map[string]any{"reason": "x"})
	var pro struct{ ID string }
	c.call(http.StatusCreated, "POST", plans, prov, map[string]any{
		"name": "Pro", "slug": "pro", "status": "active", "terms": map[string]any{"currency": "USD", "quota_requests": 5000, "quota_hard": false},
	}).decode(&pro)
	var moved struct {
		PlanID string `json:"plan_id"`
	}
	c.call(http.StatusOK, "POST", subPath+"/plan", buyer, map[string]any{"plan_id": pro.ID}).decode(&moved)
	if moved.PlanID != pro.ID {
		t.Errorf("changeSubscriptionPlan = plan %s; want %s", moved.PlanID, pro.ID)
	}
	if got := c.call(http.StatusConflict, "POST", subPath+"/plan", buyer, map[string]any{"plan_id": pro.ID}).problem(); got != "same-plan" {
		t.Errorf("changeSubscriptionPlan to the same plan = %s; want same-plan", got)
	}
	// Back and forth: the third change of the period is the last.
	c.call(http.StatusOK, "POST", subPath+"/plan", buyer, map[string]any{"plan_id": basic.ID})
	c.call(http.StatusOK, "POST", subPath+"/plan", buyer, map[string]any{"plan_id": pro.ID})
	if got := c.call(http.StatusConflict, "POST", subPath+"/plan", buyer, map[string]any{"plan_id": basic.ID}).problem(); got != "plan-change-limit" {
		t.Errorf("a fourth changeSubscriptionPlan in the period = %s; want plan-change-limit", got)
	}
	c.call(http.StatusForbidden, "POST", subPath+"/plan", prov, map[string]any{"plan_id": basic.ID})
	c.call(http.StatusNotFound, "POST", subPath+"/plan", buyer, map[string]any{"plan_id": missing})
	c.call(http.StatusUnprocessableEntity, "POST", subPath+"/plan", buyer, map[string]any{"plan_id": "00000000-0000-0000-0000-000000000000"})

	// Promotions: the provider's codes, redeemed by the subscriber, and
	// applied to a quote.
	var promo struct{ ID string }
	r = c.call(http.StatusCreated, "POST", "/v1/promotions", prov, map[string]any{
		"code": "LAUNCH", "description": "Launch week.", "kind": "percent_off", "value": "10", "duration": "repeating", "duration_periods": 3,
		"max_redemptions": 100, "max_per_customer": 1, "priority": 5, "stackable": true, "valid_until": time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
	})
	r.decode(&promo)
	if r.Header.Get("Location") != "/v1/promotions/"+promo.ID {
		t.Errorf("createPromotion Location = %q; want /v1/promotions/%s", r.Header.Get("Location"), promo.ID)
	}
	c.call(http.StatusCreated, "POST", "/v1/promotions", prov, map[string]any{
		"code": "FREECALLS", "kind": "free_units", "value": "1000", "meter": "calls", "plan_ids": []string{basic.ID}, "enabled": false,
	})
	if got := c.call(http.StatusConflict, "POST", "/v1/promotions", prov, map[string]any{"code": "launch", "kind": "percent_off", "value": "5"}).problem(); got != "code-taken" {
		t.Errorf("createPromotion with a taken code = %s; want code-taken", got)
	}
	c.call(http.StatusForbidden, "POST", "/v1/promotions", cons, map[string]any{"code": "MINE", "kind": "percent_off", "value": "5"})
	c.refused(http.StatusUnprocessableEntity, "POST", "/v1/promotions", prov, map[string]any{"code": "x", "kind": "percent_off", "value": "200"})
	c.call(http.StatusUnprocessableEntity, "POST", "/v1/promotions", other, map[string]any{"code": "THEIRS", "kind": "percent_off", "value": "5", "plan_ids": []string{basic.ID}})
	c.pages("/v1/promotions", "limit=1", prov)
	c.call(http.StatusOK, "GET", "/v1/promotions/"+promo.ID, prov, nil)
	c.call(http.StatusNotFound, "GET", "/v1/promotions/"+promo.ID, other, nil)
	c.call(http.StatusOK, "PATCH", "/v1/promotions/"+promo.ID, prov, map[string]any{"description": "Launch fortnight.", "valid_until": nil, "max_redemptions": 200})
	c.call(http.StatusNotFound, "PATCH", "/v1/promotions/"+promo.ID, other, map[string]any{"enabled": false})
	c.call(http.StatusForbidden, "PATCH", "/v1/promotions/"+promo.ID, cons, map[string]any{"enabled": false})
	promos := subPath + "/promotions"
	c.call(http.StatusCreated, "POST", promos, buyer, map[string]any{"code": "launch"})
	if got := c.call(http.StatusConflict, "POST", promos, buyer, map[string]any{"code": "LAUNCH"}).problem(); got != "already-redeemed" {
		t.Errorf("redeemPromotion twice = %s; want already-redeemed", got)
	}
	c.call(http.StatusUnprocessableEntity, "POST", promos, buyer, map[string]any{"code": "NOPE"})
	c.call(http.StatusForbidden, "POST", promos, prov, map[string]any{"code": "LAUNCH"})
	c.call(http.StatusNotFound, "POST", promos, other, map[string]any{"code": "LAUNCH"})
	var redeemed struct {
		Data []struct {
			Code   string
			Active bool
		}
	}
	c.call(http.StatusOK, "GET", promos, prov, nil).decode(&redeemed)
	if len(redeemed.Data) != 1 || redeemed.Data[0].Code != "LAUNCH" || !redeemed.Data[0].Active {
		t.Errorf("listSubscriptionPromotions = %+v; want LAUNCH, active", redeemed.Data)
	}
	c.call(http.StatusNotFound, "GET", promos, other, nil)
	var quoted struct{ Discount, Total string }
	c.call(http.StatusOK, "POST", "/v1/plans/"+basic.ID+"/quote", buyer, map[string]any{"promotion_codes": []string{"LAUNCH"}}).decode(&quoted)
	if quoted.Discount != "1.25" || quoted.Total != "11.25" {
		t.Errorf("quotePlan with LAUNCH = discount %s, total %s; want 1.25 off 12.50", quoted.Discount, quoted.Total)
	}
	c.call(http.StatusUnprocessableEntity, "POST", "/v1/plans/"+basic.ID+"/quote", buyer, map[string]any{"promotion_codes": []string{"FREECALLS"}})
	// The subscriber ends the redemption; the provider may not.
	c.call(http.StatusForbidden, "DELETE", promos+"/"+promo.ID, prov, nil)
	c.call(http.StatusNotFound, "DELETE", promos+"/"+promo.ID, other, nil)
	var ended struct {
		Active  bool
		EndedAt *time.Time `json:"ended_at"`
	}
	c.call(http.StatusOK, "DELETE", promos+"/"+promo.ID, buyer, nil).decode(&ended)
	if ended.Active || ended.EndedAt == nil {
		t.Errorf("endPromotion = active %t, ended_at %v; want ended", ended.Active, ended.EndedAt)
	}
	c.call(http.StatusNotFound, "DELETE", promos+"/"+basic.ID, buyer, nil)

	// The usage drift check.
	c.call(http.StatusForbidden, "GET", "/v1/admin/reconcile/usage", prov, nil)
	c.call(http.StatusNotFound, "GET", "/v1/admin/reconcile/usage", admin, nil)
	var drift struct{ Checked int }
	c.call(http.StatusOK, "POST", "/v1/admin/reconcile/usage", admin, nil).decode(&drift)
	if drift.Checked < 1 {
		t.Errorf("reconcileUsage checked %d subscriptions; want at least 1", drift.Checked)
	}
	c.call(http.StatusOK, "GET", "/v1/admin/reconcile/usage", admin, nil)
	c.call(http.StatusForbidden, "POST", "/v1/admin/reconcile/usage", cons, nil)

	// Admins suspend and resume subscriptions and reconcile the gateway's
	// key records.
	admSub := "/v1/admin/subscriptions/" + sub.ID
	c.call(http.StatusForbidden, "POST", admSub+"/suspend", prov, nil)
	c.call(http.StatusOK, "POST", admSub+"/suspend", admin, map[string]any{"reason": "Payment dispute."})
	if got := c.call(http.StatusConflict, "POST", admSub+"/suspend", admin, nil).problem(); got != "invalid-transition" {
		t.Errorf("suspendSubscription of a suspended one = %s; want invalid-transition", got)
	}
	if got := c.call(http.StatusConflict, "POST", subPath+"/keys", buyer, map[string]any{}).problem(); got != "subscription-inactive" {
		t.Errorf("createKey on a suspended subscription = %s; want subscription-inactive", got)
	}
	c.call(http.StatusNotFound, "POST", "/v1/admin/subscriptions/"+missing+"/suspend", admin, nil)
	c.call(http.StatusForbidden, "POST", admSub+"/resume", buyer, nil)
	c.call(http.StatusOK, "POST", admSub+"/resume", admin, nil)
	c.call(http.StatusConflict, "POST", admSub+"/resume", admin, map[string]any{"reason": "again"})
	c.call(http.StatusNotFound, "POST", "/v1/admin/subscriptions/"+missing+"/resume", admin, nil)
	var heal struct {
		KeysChecked int `json:"keys_checked"`
	}
	c.call(http.StatusOK, "POST", "/v1/admin/reconcile/keys", admin, nil).decode(&heal)
	if heal.KeysChecked < 5 {
		t.Errorf("reconcileKeys checked %d keys; want every key (at least 5)", heal.KeysChecked)
	}
	c.call(http.StatusForbidden, "POST", "/v1/admin/reconcile/keys", prov, nil)

	// Deleting a key, canceling subscriptions.
	c.call(http.StatusForbidden, "DELETE", "/v1/keys/"+bare.ID, prov, nil)
	c.call(http.StatusNotFound, "DELETE", "/v1/keys/"+bare.ID, other, nil)
	c.call(http.StatusNoContent, "DELETE", "/v1/keys/"+bare.ID, buyer, nil)
	c.call(http.StatusNotFound, "DELETE", "/v1/keys/"+bare.ID, buyer, nil)
	c.call(http.StatusOK, "POST", "/v1/subscriptions/"+otherSub.ID+"/cancel", other, map[string]any{"at_period_end": true})
	c.call(http.StatusForbidden, "POST", subPath+"/cancel", prov, nil)
	c.call(http.StatusNotFound, "POST", subPath+"/cancel", other, nil)
	c.call(http.StatusNotFound, "POST", "/v1/subscriptions/"+missing+"/cancel", buyer, nil)
	// Canceled while suspended: no new subscription until an admin
	// releases it.
	c.call(http.StatusOK, "POST", admSub+"/suspend", admin, nil)
	c.call(http.StatusOK, "POST", subPath+"/cancel", buyer, nil)
	if got := c.call(http.StatusConflict, "POST", subPath+"/cancel", buyer, map[string]any{}).problem(); got != "invalid-transition" {
		t.Errorf("cancelSubscription of a canceled one = %s; want invalid-transition", got)
	}
	if got := c.call(http.StatusConflict, "POST", "/v1/subscriptions", buyer, map[string]any{"plan_id": basic.ID}).problem(); got != "subscription-held" {
		t.Errorf("createSubscription after cancelling a suspended one = %s; want subscription-held", got)
	}
	c.call(http.StatusForbidden, "POST", admSub+"/release", buyer, nil)
	c.call(http.StatusNotFound, "POST", "/v1/admin/subscriptions/"+missing+"/release", admin, nil)
	c.call(http.StatusOK, "POST", admSub+"/release", admin, map[string]any{"reason": "Dispute settled."})
	if got := c.call(http.StatusConflict, "POST", admSub+"/release", admin, nil).problem(); got != "invalid-transition" {
		t.Errorf("releaseSubscriptionHold twice = %s; want invalid-transition", got)
	}
	var after struct{ State string }
	c.call(http.StatusOK, "GET", keyPath, buyer, nil).decode(&after)
	if after.State != "revoked" {
		t.Errorf("a key of a canceled subscription is %s; want revoked", after.State)
	}
}
