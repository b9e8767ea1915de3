package middleware

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/redis/rueidis"

	"github.com/veil-platform/veil/internal/problem"
)

// Idempotency headers.
const (
	HeaderIdempotencyKey     = "Idempotency-Key"
	HeaderIdempotentReplayed = "Idempotent-Replayed"
)

// Limits of what Idempotency buffers.
const (
	// MaxIdempotentRequestBytes is the largest request body hashed; larger
	// ones are refused with 413 when they carry an Idempotency-Key.
	MaxIdempotentRequestBytes = 1 << 20
	// MaxIdempotentResponseBytes is the largest response body stored for
	// replay. A larger response is passed through but not stored, so a
	// retry runs the handler again; control-plane POSTs answer far less.
	MaxIdempotentResponseBytes = 1 << 20
)

// replayedHeaders are the response headers stored and replayed with the
// body. Others describe the request at hand (request id, rate limits, CORS)
// and come from the middleware that runs on the replay too.
var replayedHeaders = []string{
	"Content-Type", "Content-Language", "Location", "ETag", "Last-Modified", "Cache-Control", "Link",
}

// IdempotencyConfig configures Idempotency.
type IdempotencyConfig struct {
	// Client is the Redis every replica shares. Required.
	Client rueidis.Client
	// Prefix starts every key written. Default "veil:cp:idem:".
	Prefix string
	// TTL is how long a response stays available for replay. Default 24h:
	// clients retry within minutes, and a day covers a retry after an
	// overnight outage.
	TTL time.Duration
	// LockTTL bounds how long an unfinished request holds its key, so a
	// replica that dies mid-request does not block the key for the whole
	// TTL. Default 1m; keep it above the server's write timeout, or a slow
	// handler loses its lock and a retry runs concurrently.
	LockTTL time.Duration
	// Scope returns whose key this is, typically the caller's subject, so
	// that two callers choosing the same key do not see each other's
	// responses. An empty scope turns idempotency off for the request.
	// Required.
	Scope func(*http.Request) string
	// Timeout bounds each Redis call. Default 2s.
	Timeout time.Duration
	Logger  *slog.Logger
	Metrics *metrics.Set
}

// Idempotency makes POST requests that carry an Idempotency-Key safe to
// retry: the first request runs and its response is stored in Redis, a
// repeat gets the stored response without running the handler again.
type Idempotency struct {
	cfg IdempotencyConfig
	log *slog.Logger

	stored, replayed, notStored, mismatched, inFlight, invalid *metrics.Counter
	errors                                                     *metrics.Counter
}

// NewIdempotency returns an Idempotency; cfg.Client and cfg.Scope are
// required.
func NewIdempotency(cfg IdempotencyConfig) (*Idempotency, error) {
	if cfg.Client == nil {
		return nil, errors.New("new idempotency: Client is required")
	}
	if cfg.Scope == nil {
		return nil, errors.New("new idempotency: Scope is required")
	}
	cfg.Prefix = cmp.Or(cfg.Prefix, "veil:cp:idem:")
	if cfg.TTL <= 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.LockTTL <= 0 {
		cfg.LockTTL = time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	cfg.Metrics = cmp.Or(cfg.Metrics, metrics.NewSet())
	outcome := func(o string) *metrics.Counter {
		return cfg.Metrics.NewCounter(`veil_controlplane_idempotency_requests_total{outcome="` + o + `"}`)
	}
	return &Idempotency{
		cfg:        cfg,
		log:        cfg.Logger,
		stored:     outcome("stored"),
		replayed:   outcome("replayed"),
		notStored:  outcome("not_stored"),
		mismatched: outcome("key_reused"),
		inFlight:   outcome("in_flight"),
		invalid:    outcome("invalid_key"),
		errors:     cfg.Metrics.NewCounter("veil_controlplane_idempotency_errors_total"),
	}, nil
}

// entry is what one key holds in Redis: the lock of the request in flight,
// then its response.
type entry struct {
	// Token tells the lock's owner apart from a later request that took the
	// key after the lock expired; empty once the response is stored.
	Token      string              `json:"token,omitempty"`
	BodySHA256 string              `json:"body_sha256"`
	Status     int                 `json:"status,omitempty"`
	Header     map[string][]string `json:"header,omitempty"`
	Body       []byte              `json:"body,omitempty"`
	// Withheld: the response carried Cache-Control: no-store (it shows a
	// secret once), so only its status and headers were kept.
	Withheld bool `json:"withheld,omitempty"`
}

func (e entry) done() bool { return e.Token == "" }

// acquireScript takes the key for a new request unless it exists.
// Returns nil when taken, else the current value.
// KEYS[1] key; ARGV[1] lock value, ARGV[2] lock TTL in ms.
var acquireScript = rueidis.NewLuaScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
`)

// storeScript replaces the lock with the response if the lock is still
// ours. KEYS[1] key; ARGV[1] our lock value, ARGV[2] response, ARGV[3] TTL
// in ms.
var storeScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

// releaseScript deletes the lock if it is still ours.
// KEYS[1] key; ARGV[1] our lock value.
var releaseScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
`)

// Middleware applies idempotency to POST requests that carry an
// Idempotency-Key (1 to 255 printable ASCII characters, else 400) and have a
// non-empty scope; other requests pass untouched. Mount it after
// authentication, so that Scope knows the caller.
//
// The key in Redis is Prefix + sha256(scope, method, path, key):
//   - first use: the key is locked while the handler runs; its status,
//     body and a few headers are then stored for TTL. Responses with status
//     500 or more are not stored (the lock is released), so the client can
//     retry after a failure.
//   - repeat with the same request body: the stored response is replayed
//     with Idempotent-Replayed: true; the handler does not run. A response
//     marked Cache-Control: no-store (one that shows a secret once, such as
//     a new API key) is never stored: its repeat gets a 409 problem (type
//     idempotency-response-withheld) with the first answer's status and
//     Location, and the handler does not run either.
//   - repeat with another body: 422 problem (type idempotency-key-reused),
//     also while the first request is still running.
//   - repeat while the first is still running: 409 problem (type
//     idempotency-key-in-flight) with Retry-After: 1.
//
// Request bodies up to 1 MiB are buffered to hash them; larger ones get a
// 413 problem. If Redis fails, the request is refused with 503 rather than
// run without protection: running it twice is the very thing the client
// sent the key to prevent.
func (i *Idempotency) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys := r.Header.Values(HeaderIdempotencyKey)
		if r.Method != http.MethodPost || len(keys) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		scope := i.cfg.Scope(r)
		if scope == "" {
			next.ServeHTTP(w, r)
			return
		}
		if len(keys) > 1 || !validIdempotencyKey(keys[0]) {
			i.invalid.Inc()
			writeProblem(w, r, problem.New(http.StatusBadRequest, "invalid-idempotency-key", "Invalid Idempotency Key",
				"Idempotency-Key must be one value of 1 to 255 printable ASCII characters"))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxIdempotentRequestBytes+1))
		if err != nil {
			writeProblem(w, r, problem.New(http.StatusBadRequest, "unreadable-body", "Unreadable Body",
				"the request body could not be read"))
			return
		}
		if len(body) > MaxIdempotentRequestBytes {
			writeProblem(w, r, problem.New(http.StatusRequestEntityTooLarge, "request-too-large", "Content Too Large",
				fmt.Sprintf("requests with an Idempotency-Key may carry at most %d bytes", MaxIdempotentRequestBytes)))
			return
		}
		_ = r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
		sum := sha256.Sum256(body)
		bodyHash := hex.EncodeToString(sum[:])
		key := i.redisKey(scope, r.Method, r.URL.Path, keys[0])

		lock, err := json.Marshal(entry{Token: newRequestID(), BodySHA256: bodyHash})
		if err != nil {
			i.fail(w, r, fmt.Errorf("encode idempotency lock: %w", err))
			return
		}
		prev, taken, err := i.acquire(r.Context(), key, string(lock))
		if err != nil {
			if r.Context().Err() == nil {
				i.fail(w, r, err)
			}
			return
		}
		if !taken {
			i.answerRepeat(w, r, prev, bodyHash)
			return
		}
		i.runAndStore(w, r, next, key, string(lock), bodyHash)
	})
}

// answerRepeat answers a request whose key is already in use.
func (i *Idempotency) answerRepeat(w http.ResponseWriter, r *http.Request, prev, bodyHash string) {
	var e entry
	if err := json.Unmarshal([]byte(prev), &e); err != nil {
		i.fail(w, r, fmt.Errorf("decode idempotency entry: %w", err))
		return
	}
	switch {
	case e.BodySHA256 != bodyHash:
		i.mismatched.Inc()
		writeProblem(w, r, problem.New(http.StatusUnprocessableEntity, "idempotency-key-reused", "Idempotency Key Reused",
			"this Idempotency-Key was used with a different request body; use a new key for a new request"))
	case !e.done():
		i.inFlight.Inc()
		w.Header().Set("Retry-After", "1")
		writeProblem(w, r, problem.New(http.StatusConflict, "idempotency-key-in-flight", "Request In Flight",
			"a request with this Idempotency-Key is still being processed; retry shortly"))
	case e.Withheld:
		i.replayed.Inc()
		h := w.Header()
		if loc := e.Header["Location"]; len(loc) > 0 {
			h["Location"] = loc
		}
		h.Set(HeaderIdempotentReplayed, "true")
		writeProblem(w, r, problem.New(http.StatusConflict, "idempotency-response-withheld", "Response Withheld",
			fmt.Sprintf("a request with this Idempotency-Key already succeeded (status %d); its answer showed a secret once and was not kept, so it cannot be replayed", e.Status)).
			With("original_status", e.Status))
	default:
		i.replayed.Inc()
		h := w.Header()
		for k, v := range e.Header {
			h[k] = v
		}
		h.Set(HeaderIdempotentReplayed, "true")
		w.WriteHeader(e.Status)
		_, _ = w.Write(e.Body)
	}
}

// runAndStore runs next holding the lock, then stores its response or
// releases the lock. Both happen even when the client has gone or the
// handler panicked: the handler's effects are done either way.
func (i *Idempotency) runAndStore(w http.ResponseWriter, r *http.Request, next http.Handler, key, lock, bodyHash string) {
	rec := &responseRecorder{statusWriter: statusWriter{ResponseWriter: w}}
	completed := false
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), i.cfg.Timeout)
		defer cancel()
		status := rec.status
		if !rec.wroteHeader {
			status = http.StatusOK
		}
		// A 429 is "not now" as a 5xx is: stored, it would be replayed
		// for a day without the moment's Retry-After.
		if !completed || status >= 500 || status == http.StatusTooManyRequests || rec.overflow {
			i.notStored.Inc()
			if err := releaseScript.Exec(ctx, i.cfg.Client, []string{key}, []string{lock}).Error(); err != nil {
				i.errors.Inc()
				i.log.ErrorContext(ctx, "release idempotency lock", "request_id", RequestIDFrom(ctx), "error", err)
			}
			return
		}
		e := entry{BodySHA256: bodyHash, Status: status, Header: rec.header, Body: rec.body.Bytes()}
		if noStore(rec.header) {
			e.Body, e.Withheld = nil, true
		}
		val, err := json.Marshal(e)
		if err == nil {
			err = storeScript.Exec(ctx, i.cfg.Client, []string{key},
				[]string{lock, string(val), strconv.FormatInt(i.cfg.TTL.Milliseconds(), 10)}).Error()
		}
		if err != nil {
			// The lock expires after LockTTL; until then repeats get 409,
			// after that a repeat runs the handler again.
			i.errors.Inc()
			i.log.ErrorContext(ctx, "store idempotent response", "request_id", RequestIDFrom(ctx), "error", err)
			return
		}
		i.stored.Inc()
	}()
	next.ServeHTTP(rec, r)
	completed = true
}

func (i *Idempotency) acquire(ctx context.Context, key, lock string) (prev string, taken bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, i.cfg.Timeout)
	defer cancel()
	prev, err = acquireScript.Exec(ctx, i.cfg.Client, []string{key},
		[]string{lock, strconv.FormatInt(i.cfg.LockTTL.Milliseconds(), 10)}).ToString()
	if rueidis.IsRedisNil(err) {
		return "", true, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("acquire idempotency key: %w", err)
	}
	return prev, false, nil
}

func (i *Idempotency) fail(w http.ResponseWriter, r *http.Request, err error) {
	i.errors.Inc()
	i.log.ErrorContext(r.Context(), "idempotency unavailable", "request_id", RequestIDFrom(r.Context()), "error", err)
	w.Header().Set("Retry-After", "1")
	writeProblem(w, r, problem.New(http.StatusServiceUnavailable, "idempotency-unavailable", "Service Unavailable",
		"idempotency keys cannot be checked right now; retry with the same key shortly"))
}

// redisKey hashes the parts, each prefixed by its length so that no two
// different tuples hash alike.
func (i *Idempotency) redisKey(scope, method, path, key string) string {
	h := sha256.New()
	for _, part := range []string{scope, method, path, key} {
		_, _ = h.Write(binary.AppendUvarint(nil, uint64(len(part))))
		_, _ = h.Write([]byte(part))
	}
	return i.cfg.Prefix + hex.EncodeToString(h.Sum(nil))
}

// noStore reports whether captured headers say Cache-Control: no-store.
func noStore(h map[string][]string) bool {
	for _, v := range h["Cache-Control"] {
		for _, d := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(d), "no-store") {
				return true
			}
		}
	}
	return false
}

func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// responseRecorder passes the response through and keeps a copy of its
// status, replayed headers and body.
type responseRecorder struct {
	statusWriter
	header   map[string][]string
	body     bytes.Buffer
	overflow bool
}

func (rr *responseRecorder) WriteHeader(code int) {
	if !rr.wroteHeader && (code >= 200 || code == http.StatusSwitchingProtocols) {
		rr.captureHeader()
	}
	rr.statusWriter.WriteHeader(code)
}

func (rr *responseRecorder) Write(b []byte) (int, error) {
	if !rr.wroteHeader {
		rr.captureHeader()
	}
	n, err := rr.statusWriter.Write(b)
	if !rr.overflow {
		if rr.body.Len()+n > MaxIdempotentResponseBytes {
			rr.overflow = true
			rr.body = bytes.Buffer{}
		} else {
			rr.body.Write(b[:n])
		}
	}
	return n, err
}

func (rr *responseRecorder) Flush() {
	if !rr.wroteHeader {
		rr.captureHeader()
	}
	rr.statusWriter.Flush()
}

func (rr *responseRecorder) captureHeader() {
	h := rr.Header()
	for _, name := range replayedHeaders {
		if v := h.Values(name); len(v) > 0 {
			if rr.header == nil {
				rr.header = make(map[string][]string, len(replayedHeaders))
			}
			rr.header[name] = append([]string(nil), v...)
		}
	}
}
