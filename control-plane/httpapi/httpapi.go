// Package httpapi is the control plane's REST API: routing, authentication
// and authorization, request decoding and validation, and the one mapping
// from domain errors to RFC 9457 problem details.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"
	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/veil-platform/veil/control-plane/accounts"
	"github.com/veil-platform/veil/control-plane/audit"
	"github.com/veil-platform/veil/control-plane/catalog"
	"github.com/veil-platform/veil/control-plane/identity"
	"github.com/veil-platform/veil/control-plane/ingesttokens"
	"github.com/veil-platform/veil/control-plane/keys"
	"github.com/veil-platform/veil/control-plane/middleware"
	"github.com/veil-platform/veil/control-plane/quota"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/control-plane/webhooks"
	"github.com/veil-platform/veil/internal/httpserver"
	"github.com/veil-platform/veil/internal/pagination"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/internal/validation"
	"github.com/veil-platform/veil/metering"
)

// Authenticator verifies the bearer token and puts the principal in the
// request context.
type Authenticator interface {
	Middleware(next http.Handler) http.Handler
}

// Config wires the API.
type Config struct {
	Pool          *pgxpool.Pool
	Catalog       *catalog.Service
	Subscriptions *subscriptions.Service
	// Usage reads usage for the usage endpoints; nil answers them 503.
	Usage UsageReader
	// Quota answers quota status; nil answers it 503.
	Quota QuotaService
	// Drift checks usage drift; nil answers its endpoints 503.
	Drift         DriftChecker
	Webhooks      *webhooks.Service
	Directory     *accounts.Directory
	Authenticator Authenticator
	RateLimiter   *middleware.RateLimiter
	// IPRate limits every caller by address, before authentication;
	// TokenRate limits each authenticated subject. Zero Limit disables one.
	IPRate, TokenRate middleware.Rate
	Idempotency       *middleware.Idempotency
	CORS              middleware.CORSConfig
	TrustedProxies    middleware.TrustedProxies
	OpenAPI           []byte
	Logger            *slog.Logger
	Metrics           *metrics.Set

	// IngestTokens issues and revokes ingest tokens; nil uses one on Pool.
	IngestTokens *ingesttokens.Service
}

type api struct {
	cfg Config
	log *slog.Logger
}

// New returns the control plane's handler.
func New(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	a := &api{cfg: cfg, log: cfg.Logger}
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.Recoverer(cfg.Logger), middleware.AccessLog(cfg.Logger, cfg.Metrics))
	r.Use(middleware.CORS(cfg.CORS), saneQuery)
	if cfg.RateLimiter != nil && cfg.IPRate.Limit > 0 {
		r.Use(cfg.RateLimiter.Middleware("ip", cfg.IPRate, func(r *http.Request) string {
			return middleware.ClientIP(r, cfg.TrustedProxies)
		}))
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, problem.New(http.StatusNotFound, "not-found", "Not Found", "no route for "+r.Method+" "+r.URL.Path))
	})
	r.MethodNotAllowed(httpserver.MethodNotAllowed(r))
	r.Get("/openapi.json", a.openAPI)
	r.Group(func(r chi.Router) {
		r.Use(cfg.Authenticator.Middleware, a.resolveActor)
		if cfg.RateLimiter != nil && cfg.TokenRate.Limit > 0 {
			r.Use(cfg.RateLimiter.Middleware("token", cfg.TokenRate, func(r *http.Request) string {
				p, _ := identity.FromContext(r.Context())
				return p.Org + "/" + p.Subject
			}))
		}
		if cfg.Idempotency != nil {
			r.Use(cfg.Idempotency.Middleware)
		}
		a.routes(r)
	})
	return r
}

// uuidParam is the pattern of ids in paths: anything else is not a
// resource of this API, so /v1/apis/stats is 404 or 405, never a 422 about
// a malformed id, and static siblings (approvals/bulk) are not shadowed.
const uuidParam = `[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`

var paramRE = regexp.MustCompile(`\{(id|delivery)\}`)

// idPath constrains the {id} and {delivery} parameters of a route pattern
// to UUIDs.
func idPath(pattern string) string {
	return paramRE.ReplaceAllString(pattern, "{$1:"+uuidParam+"}")
}

var constraintRE = regexp.MustCompile(`\{([a-z_]+):[^/]*\}`)

// Routes lists every route as "METHOD pattern", patterns written as in the
// OpenAPI document ({id}, without the UUID constraint); the OpenAPI test
// compares it with the document.
func Routes(h http.Handler) ([]string, error) {
	r, ok := h.(chi.Routes)
	if !ok {
		return nil, errors.New("handler is not a chi router")
	}
	var out []string
	err := chi.Walk(r, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		out = append(out, method+" "+constraintRE.ReplaceAllString(route, "{$1}"))
		return nil
	})
	return out, err
}

func (a *api) openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(a.cfg.OpenAPI)
}

// saneQuery refuses query strings that are not valid UTF-8 or hold NUL,
// which no parameter accepts and Postgres cannot compare.
func saneQuery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for name, values := range r.URL.Query() {
			for _, v := range append(values, name) {
				if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
					problem.Write(w, problem.New(http.StatusBadRequest, "bad-query", "Bad Query",
						"query parameters must be UTF-8 text without NUL").With("request_id", middleware.RequestIDFrom(r.Context())))
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

type actorKey struct{}

// resolveActor turns the verified principal into a catalog actor with the
// organization's id, and puts the request's audit metadata in the context.
func (a *api) resolveActor(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := identity.FromContext(r.Context())
		if !ok {
			problem.Write(w, problem.New(http.StatusUnauthorized, "unauthorized", "Unauthorized", "authentication required"))
			return
		}
		acct, err := a.cfg.Directory.Resolve(r.Context(), accounts.Identity{Org: p.Org, Subject: p.Subject, Role: string(p.Role), Name: p.Name, Email: p.Email, EmailVerified: p.EmailVerified})
		if err != nil {
			a.fail(w, r, err)
			return
		}
		actor := identity.Actor{Subject: p.Subject, Role: p.Role, OrgID: acct.OrgID}
		ctx := context.WithValue(r.Context(), actorKey{}, actor)
		ctx = audit.WithMeta(ctx, audit.Meta{
			SourceIP:  middleware.ClientIP(r, a.cfg.TrustedProxies),
			UserAgent: r.UserAgent(),
			RequestID: middleware.RequestIDFrom(r.Context()),
		})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func actorFrom(r *http.Request) identity.Actor {
	act, _ := r.Context().Value(actorKey{}).(identity.Actor)
	return act
}

// adminOnly refuses every role but admin.
func adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if actorFrom(r).Role != identity.RoleAdmin {
			problem.Write(w, problem.New(http.StatusForbidden, "forbidden", "Forbidden", "this route is for platform admins"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

const maxBody = 1 << 20

// decode reads a JSON body strictly: the right media type, at most 1 MiB,
// no unknown fields, one value.
func decode(r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return errUnsupportedMedia
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return &badJSON{msg: "reading the body: " + err.Error()}
	}
	if len(body) > maxBody {
		return errTooLarge
	}
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] != '{' {
		return &badJSON{msg: "the body must be a JSON object"}
	}
	if bytes.Contains(body, []byte(`\u0000`)) && hasNUL(body) {
		// Postgres text cannot hold NUL; refuse it here rather than fail later.
		return &badJSON{msg: "strings must not contain the NUL character"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) {
			return &badJSON{msg: "the request body is empty"}
		}
		return &badJSON{msg: err.Error()}
	}
	if dec.More() {
		return &badJSON{msg: "the body holds more than one JSON value"}
	}
	return nil
}

// decodeOptional is decode for a body that may be left out.
func decodeOptional(r *http.Request, dst any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return decode(r, dst)
}

// hasNUL reports whether a string or key of the JSON body holds NUL.
func hasNUL(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if s, ok := tok.(string); ok && strings.ContainsRune(s, 0) {
			return true
		}
	}
}

var (
	errUsageUnavailable = errors.New("usage is not available right now")
	errUnsupportedMedia = errors.New("unsupported media type")
	errTooLarge         = errors.New("request body too large")
)

type badJSON struct{ msg string }

func (e *badJSON) Error() string { return "malformed json: " + e.msg }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// writeSecret answers a body that shows a secret once: marked no-store,
// so that neither caches nor the idempotency store keep it.
func writeSecret(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, v)
}

// list is the envelope of every paginated answer.
type list[T any] struct {
	Data       []T    `json:"data"`
	NextCursor string `json:"next_cursor,omitempty"`
}

func newList[T any](items []T, next string) list[T] {
	if items == nil {
		items = []T{}
	}
	return list[T]{Data: items, NextCursor: next}
}

// writePage answers 200 with one page of a list, or returns err, the
// list call's error.
func writePage[T any](w http.ResponseWriter, items []T, next string, err error) error {
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newList(items, next))
	return nil
}

func pathID(r *http.Request, name string) (uuid.UUID, error) {
	id, err := uuid.Parse(chi.URLParam(r, name))
	if err != nil {
		return uuid.Nil, &validation.Error{Fields: []validation.Field{{Field: name, Detail: "must be a UUID"}}}
	}
	return id, nil
}

func queryLimit(r *http.Request) (int, error) {
	q := r.URL.Query()
	if !q.Has("limit") {
		return 0, nil
	}
	s := q.Get("limit")
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 200 {
		return 0, &validation.Error{Fields: []validation.Field{{Field: "limit", Detail: "must be an integer from 1 to 200"}}}
	}
	return n, nil
}

// fail maps an error to its problem. Unknown errors are logged and answered
// as a 500 without detail.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	var v *validation.Error
	var bj *badJSON
	var d problem.Details
	switch {
	case errors.As(err, &v):
		d = problem.New(http.StatusUnprocessableEntity, "validation", "Invalid Request", "one or more fields are invalid").With("errors", v.Fields)
	case errors.As(err, &bj):
		d = problem.New(http.StatusBadRequest, "malformed-json", "Malformed JSON", bj.msg)
	case errors.Is(err, errTooLarge):
		d = problem.New(http.StatusRequestEntityTooLarge, "request-too-large", "Request Too Large", "the body is larger than 1 MiB")
	case errors.Is(err, errUnsupportedMedia):
		d = problem.New(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported Media Type", "send application/json")
	case errors.Is(err, pagination.ErrBadCursor):
		d = problem.New(http.StatusBadRequest, "bad-cursor", "Bad Cursor", "the cursor was not issued by this API")
	case errors.Is(err, catalog.ErrAPINotFound), errors.Is(err, catalog.ErrApprovalNotFound),
		errors.Is(err, webhooks.ErrEndpointNotFound), errors.Is(err, webhooks.ErrDeliveryNotFound),
		errors.Is(err, subscriptions.ErrPlanNotFound), errors.Is(err, subscriptions.ErrSubscriptionNotFound),
		errors.Is(err, keys.ErrKeyNotFound), errors.Is(err, ingesttokens.ErrNotFound), errors.Is(err, errNoUsageReconcile):
		d = problem.New(http.StatusNotFound, "not-found", "Not Found", err.Error())
	case errors.Is(err, keys.ErrInvalidTransition), errors.Is(err, subscriptions.ErrSubscriptionTransition),
		errors.Is(err, catalog.ErrInvalidTransition):
		d = problem.New(http.StatusConflict, "invalid-transition", "Invalid State Transition", err.Error())
	case errors.Is(err, keys.ErrKeyLimit):
		d = problem.New(http.StatusConflict, "key-limit", "Key Limit Reached", err.Error()+"; revoke or delete a key first")
	case errors.Is(err, subscriptions.ErrAlreadySubscribed):
		d = problem.New(http.StatusConflict, "already-subscribed", "Already Subscribed", err.Error())
	case errors.Is(err, subscriptions.ErrSubscriptionHeld):
		d = problem.New(http.StatusConflict, "subscription-held", "Subscription Held", err.Error())
	case errors.Is(err, keys.ErrAdminPlaintext):
		d = problem.New(http.StatusForbidden, "plaintext-refused", "Plaintext Refused",
			err.Error()+"; suspend or revoke the key instead, and let its organization issue or rotate it")
	case errors.Is(err, keys.ErrAdminSuspended):
		d = problem.New(http.StatusForbidden, "admin-suspended", "Suspended By An Admin", err.Error())
	case errors.Is(err, subscriptions.ErrPlanUnavailable):
		d = problem.New(http.StatusConflict, "plan-unavailable", "Plan Unavailable", err.Error())
	case errors.Is(err, subscriptions.ErrSubscriptionInactive):
		d = problem.New(http.StatusConflict, "subscription-inactive", "Subscription Not Active", err.Error())
	case errors.Is(err, keys.ErrAlreadyRotated):
		d = problem.New(http.StatusConflict, "already-rotated", "Already Rotated", err.Error())
	case errors.Is(err, keys.ErrNothingToReveal):
		d = problem.New(http.StatusConflict, "nothing-to-reveal", "Nothing To Reveal", "this key holds no sealed successor to reveal; it was revealed already or was issued in a response")
	case errors.Is(err, quota.ErrNoQuota):
		d = problem.New(http.StatusConflict, "no-quota", "No Quota", "the subscription's plan has no request quota to adjust")
	case errors.Is(err, subscriptions.ErrSamePlan):
		d = problem.New(http.StatusConflict, "same-plan", "Same Plan", "the subscription is on that plan's latest version already")
	case errors.Is(err, errQuotaUnavailable):
		w.Header().Set("Retry-After", "30")
		d = problem.New(http.StatusServiceUnavailable, "quota-unavailable", "Quota Unavailable", err.Error()+"; retry later")
	case errors.Is(err, errNoUsageCheck):
		d = problem.New(http.StatusServiceUnavailable, "quota-unavailable", "Quota Unavailable", err.Error())
	case errors.Is(err, subscriptions.ErrSlugTaken):
		d = problem.New(http.StatusConflict, "slug-taken", "Slug Taken", err.Error())
	case errors.Is(err, metering.ErrBadQuery):
		d = problem.New(http.StatusBadRequest, "bad-usage-query", "Bad Usage Query", err.Error())
	case errors.Is(err, errUsageUnavailable):
		w.Header().Set("Retry-After", "30")
		d = problem.New(http.StatusServiceUnavailable, "usage-unavailable", "Usage Unavailable", err.Error())
	case errors.Is(err, identity.ErrForbidden):
		d = problem.New(http.StatusForbidden, "forbidden", "Forbidden", "your role may not do this")
	case errors.Is(err, catalog.ErrSelfApproval):
		d = problem.New(http.StatusForbidden, "self-approval", "Self-Approval Refused", err.Error())
	case errors.Is(err, catalog.ErrNotEditable):
		d = problem.New(http.StatusConflict, "not-editable", "Not Editable", err.Error())
	case errors.Is(err, catalog.ErrSlugTaken):
		d = problem.New(http.StatusConflict, "slug-taken", "Slug Taken", "another API already uses this slug")
	case errors.Is(err, catalog.ErrVersionExists):
		d = problem.New(http.StatusConflict, "version-exists", "Version Exists", "this API already has that version")
	case errors.Is(err, catalog.ErrApprovalClosed):
		d = problem.New(http.StatusConflict, "approval-closed", "Approval Closed", err.Error())
	case errors.Is(err, catalog.ErrAPIInUse):
		d = problem.New(http.StatusConflict, "api-in-use", "API In Use", err.Error())
	case errors.Is(err, catalog.ErrConflict):
		d = problem.New(http.StatusConflict, "conflict", "Conflict", "the resource changed concurrently; retry")
	case errors.Is(err, catalog.ErrGatewayUnavailable):
		w.Header().Set("Retry-After", "5")
		d = problem.New(http.StatusServiceUnavailable, "gateway-unavailable", "Gateway Unavailable", err.Error())
	case errors.Is(err, context.Canceled):
		return
	default:
		a.log.ErrorContext(r.Context(), "request failed", "request_id", middleware.RequestIDFrom(r.Context()),
			"method", r.Method, "path", r.URL.Path, "error", err)
		d = problem.New(http.StatusInternalServerError, "internal", "Internal Server Error", "the request failed; quote the request id when reporting it")
	}
	d.Instance = r.URL.Path
	problem.Write(w, d.With("request_id", middleware.RequestIDFrom(r.Context())))
}

// handler adapts a handler returning an error.
func (a *api) handle(fn func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			a.fail(w, r, err)
		}
	}
}

type jsonRaw []byte

func (j jsonRaw) MarshalJSON() ([]byte, error) { return j, nil }

// idAndLimit reads the path's id and the limit of a list under that
// resource (0: the list's default).
func idAndLimit(r *http.Request) (uuid.UUID, int, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return uuid.Nil, 0, err
	}
	limit, err := queryLimit(r)
	return id, limit, err
}

// queryUUID reads an optional UUID query parameter: absent is uuid.Nil, but
// present and not a UUID (empty included) is a field error.
func queryUUID(r *http.Request, name string, v *validation.Error) uuid.UUID {
	q := r.URL.Query()
	if !q.Has(name) {
		return uuid.Nil
	}
	id, err := uuid.Parse(q.Get(name))
	if err != nil {
		v.Add(name, "must be a UUID")
	}
	return id
}

// queryBool reads an optional boolean query parameter: true or false.
func queryBool(r *http.Request, name string, v *validation.Error) bool {
	q := r.URL.Query()
	if !q.Has(name) {
		return false
	}
	switch q.Get(name) {
	case "true":
		return true
	case "false":
		return false
	}
	v.Add(name, "must be true or false")
	return false
}

// byID is a service call on the resource named by the path's {id}.
type byID[T any] func(ctx context.Context, act identity.Actor, id uuid.UUID) (T, error)

// handler is a route's handler; handle answers its error as a problem.
type handler = func(http.ResponseWriter, *http.Request) error

// read answers 200 with what get returns for the path's id.
func read[T any](get byID[T]) handler { return answer(http.StatusOK, writeJSON, get) }

// secret answers 200 with what call returns for the path's id: a secret
// shown this once, so marked no-store (writeSecret).
func secret[T any](call byID[T]) handler { return answer(http.StatusOK, writeSecret, call) }

// answer answers status with what do returns for the path's id, written
// by out (writeJSON or writeSecret).
func answer[T any](status int, out func(http.ResponseWriter, int, any), do byID[T]) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id")
		if err != nil {
			return err
		}
		v, err := do(r.Context(), actorFrom(r), id)
		if err != nil {
			return err
		}
		out(w, status, v)
		return nil
	}
}

// remove answers 204 once del has removed the path's id.
func remove(del func(ctx context.Context, act identity.Actor, id uuid.UUID) error) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id")
		if err != nil {
			return err
		}
		if err := del(r.Context(), actorFrom(r), id); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

// call answers 200 with what do returns for the caller, for the routes
// without an id.
func call[T any](do func(ctx context.Context, act identity.Actor) (T, error)) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		out, err := do(r.Context(), actorFrom(r))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

// listOf turns a call returning a whole (unpaginated) slice into one
// answering the list envelope.
func listOf[T any](get byID[[]T]) byID[list[T]] {
	return func(ctx context.Context, act identity.Actor, id uuid.UUID) (list[T], error) {
		items, err := get(ctx, act, id)
		return newList(items, ""), err
	}
}

// change is a service call that changes the resource named by the path's
// {id} with a body of type In.
type change[In, T any] func(ctx context.Context, act identity.Actor, id uuid.UUID, in In) (T, error)

// write decodes a body of type In and answers status with what do
// returns for the path's id.
func write[In, T any](status int, do change[In, T]) handler {
	return writeWith(decode, do, func(w http.ResponseWriter, out T) { writeJSON(w, status, out) })
}

// writeOptional is write for a body that may be left out: do then gets
// In's zero value.
func writeOptional[In, T any](status int, do change[In, T]) handler {
	return writeWith(decodeOptional, do, func(w http.ResponseWriter, out T) { writeJSON(w, status, out) })
}

// writeWith reads a body of type In with dec (decode or decodeOptional),
// calls do for the path's id and answers its result with respond.
func writeWith[In, T any](dec func(*http.Request, any) error, do change[In, T], respond func(http.ResponseWriter, T)) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id")
		if err != nil {
			return err
		}
		var in In
		if err := dec(r, &in); err != nil {
			return err
		}
		out, err := do(r.Context(), actorFrom(r), id, in)
		if err != nil {
			return err
		}
		respond(w, out)
		return nil
	}
}

// reasoned answers what do returns for the path's id and the body's
// optional {"reason"}, with the status status gives (nil: 200).
func reasoned[T any](do func(ctx context.Context, act identity.Actor, id uuid.UUID, reason string) (T, error), status func(T) int) handler {
	withReason := func(ctx context.Context, act identity.Actor, id uuid.UUID, b reasonBody) (T, error) {
		return do(ctx, act, id, b.Reason)
	}
	return writeWith(decodeOptional, withReason, func(w http.ResponseWriter, out T) {
		code := http.StatusOK
		if status != nil {
			code = status(out)
		}
		writeJSON(w, code, out)
	})
}

// with fixes the argument a service call takes between the id and the
// reason (an action, a decision, a status), for reasoned.
func with[A, T any](do func(ctx context.Context, act identity.Actor, id uuid.UUID, arg A, reason string) (T, error), arg A) func(ctx context.Context, act identity.Actor, id uuid.UUID, reason string) (T, error) {
	return func(ctx context.Context, act identity.Actor, id uuid.UUID, reason string) (T, error) {
		return do(ctx, act, id, arg, reason)
	}
}

type reasonBody struct {
	Reason string `json:"reason"`
}
