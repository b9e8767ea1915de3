// Package ingest is Veil's HTTP ingest service: POST /v1/events takes usage
// events from producers other than the gateway, validates them and answers
// only after Kafka has acknowledged every accepted event.
//
// The gateway module for Caddy lives in a sub-package; both write to the same
// topic in the same format.
package ingest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/singleflight"

	"github.com/veil-platform/veil/internal/broker"
	"github.com/veil-platform/veil/internal/ingesttoken"
	"github.com/veil-platform/veil/internal/problem"
	"github.com/veil-platform/veil/schemas/usage"
)

// Media types POST /v1/events accepts.
const (
	MediaTypeEvent  = "application/cloudevents+json"
	MediaTypeBatch  = "application/cloudevents-batch+json"
	MediaTypeNDJSON = "application/x-ndjson"
)

// ReasonEventTooLarge refuses a single event larger than MaxEventBytes: Kafka
// would refuse the record, so ingest says so up front.
const ReasonEventTooLarge usage.Reason = "event_too_large"

// Reasons for events outside the bearer token's scope.
const (
	// ReasonSourceNotAllowed: the token may not write the event's source.
	ReasonSourceNotAllowed usage.Reason = "source_not_allowed"
	// ReasonAPINotAllowed: the token may not write for the event's API.
	ReasonAPINotAllowed usage.Reason = "api_not_allowed"
)

// Defaults for Config.
const (
	DefaultMaxBodyBytes   = 5 << 20
	DefaultMaxEvents      = 10_000
	DefaultAckTimeout     = 10 * time.Second
	DefaultRetryAfter     = 5 * time.Second
	MaxEventBytes         = 512 << 10
	maxListedRejections   = 1000
	contentTypeCloudEvent = MediaTypeEvent + "; charset=utf-8"
)

// Producer sends a record to Kafka and calls promise once Kafka acknowledged
// it or it failed. *kgo.Client satisfies it.
type Producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
}

// Config configures the ingest handler.
type Config struct {
	Logger   *slog.Logger
	Metrics  *metrics.Set
	Producer Producer
	// Topic receives accepted events. Default veil.usage.raw.
	Topic string
	// Tokens are the bootstrap bearer tokens (VEIL_INGEST_TOKENS), each at
	// least 16 characters: "secret" may write every source but a
	// gateway's (/gateway/...), "secret=src1|src2" only those sources (an
	// entry ending in * is a prefix). Real producers get scoped tokens
	// issued through the control plane, found through Lookup.
	Tokens []string
	// Lookup finds issued tokens (the ingest_tokens table) and, for tokens
	// scoped to APIs, the API of the subscriptions their events name (the
	// subscriptions table). Nil accepts the bootstrap tokens only. Tokens
	// or Lookup is required.
	Lookup TokenLookup
	// TokenCacheTTL is how long a lookup's answer, found or not, is
	// reused: a revoked token stops working within it, and a new
	// subscription is refused as a subject at most that long. Default 5s.
	TokenCacheTTL time.Duration
	// MaxBodyBytes bounds a request body; larger bodies get 413. Default 5 MiB.
	MaxBodyBytes int64
	// MaxEvents bounds the events in one request; more get 413. Default 10,000.
	MaxEvents int
	// AckTimeout bounds the wait for Kafka's acknowledgement; past it the
	// request gets 503 with Retry-After and no event is reported accepted.
	// Default 10s.
	AckTimeout time.Duration
	// MaxFuture and LateWindow bound event times relative to Now.
	// Defaults 5 minutes and 35 days.
	MaxFuture  time.Duration
	LateWindow time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Validate reports the first problem with the configuration.
func (c Config) Validate() error {
	switch {
	case c.Logger == nil:
		return errors.New("ingest config: logger is required")
	case c.Metrics == nil:
		return errors.New("ingest config: metrics set is required")
	case c.Producer == nil:
		return errors.New("ingest config: producer is required")
	case len(c.Tokens) == 0 && c.Lookup == nil:
		return errors.New("ingest config: at least one bearer token (VEIL_INGEST_TOKENS) or a token lookup (VEIL_POSTGRES_URL) is required")
	case c.MaxBodyBytes < 0, c.MaxEvents < 0, c.AckTimeout < 0, c.MaxFuture < 0, c.LateWindow < 0, c.TokenCacheTTL < 0:
		return errors.New("ingest config: limits must not be negative")
	}
	for i, t := range c.Tokens {
		if _, err := parseStaticToken(i+1, t); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) setDefaults() {
	c.Topic = cmp.Or(c.Topic, broker.TopicUsageRaw)
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, DefaultMaxBodyBytes)
	c.MaxEvents = cmp.Or(c.MaxEvents, DefaultMaxEvents)
	c.AckTimeout = cmp.Or(c.AckTimeout, DefaultAckTimeout)
	c.MaxFuture = cmp.Or(c.MaxFuture, usage.DefaultMaxFuture)
	c.LateWindow = cmp.Or(c.LateWindow, usage.DefaultLateWindow)
	c.TokenCacheTTL = cmp.Or(c.TokenCacheTTL, DefaultTokenCacheTTL)
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Handler serves POST /v1/events.
type Handler struct {
	cfg    Config
	tokens []staticToken
	// tokenCache holds live issued tokens' scopes, unknownTokens the
	// hashes the lookup did not find: apart, so that unknown tokens never
	// displace live ones.
	tokenCache    *ttlCache[[32]byte, ingesttoken.Scope]
	unknownTokens *ttlCache[[32]byte, struct{}]
	lookups       singleflight.Group
	// subscriptions maps subscription ids to their API ids, and
	// unknownSubscriptions holds ids that are no subscription, for tokens
	// scoped to APIs.
	subscriptions        *ttlCache[string, string]
	unknownSubscriptions *ttlCache[string, struct{}]

	accepted        *metrics.Counter
	produceFailures *metrics.Counter
	requestSeconds  *metrics.PrometheusHistogram
	produceSeconds  *metrics.PrometheusHistogram
	eventsPerReq    *metrics.PrometheusHistogram
}

// New returns the ingest handler.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	h := &Handler{
		cfg:             cfg,
		accepted:        cfg.Metrics.NewCounter("veil_ingest_events_accepted_total"),
		produceFailures: cfg.Metrics.NewCounter("veil_ingest_produce_failures_total"),
		requestSeconds:  cfg.Metrics.NewPrometheusHistogram("veil_ingest_request_duration_seconds"),
		produceSeconds:  cfg.Metrics.NewPrometheusHistogram("veil_ingest_produce_duration_seconds"),
		eventsPerReq: cfg.Metrics.NewPrometheusHistogramExt("veil_ingest_request_events",
			[]float64{1, 10, 100, 1000, 5000, 10000}),
	}
	h.tokenCache = newTTLCache[[32]byte, ingesttoken.Scope](cfg.TokenCacheTTL, maxCachedTokens)
	h.unknownTokens = newTTLCache[[32]byte, struct{}](cfg.TokenCacheTTL, maxCachedUnknown)
	h.subscriptions = newTTLCache[string, string](subscriptionCacheTTL, maxCachedSubscriptions)
	h.unknownSubscriptions = newTTLCache[string, struct{}](cfg.TokenCacheTTL, maxCachedSubscriptions)
	for i, t := range cfg.Tokens {
		st, _ := parseStaticToken(i+1, t) // Validate parsed it
		h.tokens = append(h.tokens, st)
	}
	return h, nil
}

// Routes returns the service's routes.
func (h *Handler) Routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.RequestID)
	r.Post("/v1/events", h.postEvents)
	return r
}

// Rejection names one refused event of a request.
type Rejection struct {
	Index  int          `json:"index"`
	ID     string       `json:"id,omitempty"`
	Reason usage.Reason `json:"reason"`
	Field  string       `json:"field,omitempty"`
	Detail string       `json:"detail"`
}

// Accepted is the body of a 202 answer.
type Accepted struct {
	Accepted int `json:"accepted"`
}

func (h *Handler) postEvents(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	status := h.serveEvents(w, r)
	h.cfg.Metrics.GetOrCreateCounter(`veil_ingest_requests_total{code="` + strconv.Itoa(status) + `"}`).Inc()
	h.requestSeconds.UpdateDuration(start)
}

// serveEvents answers the request and returns the status it sent.
func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) int {
	scope, err := h.authorize(r.Context(), r.Header.Get("Authorization"))
	switch {
	case errors.Is(err, errUnauthorized):
		w.Header().Set("WWW-Authenticate", `Bearer realm="veil-ingest"`)
		return writeProblem(w, problem.New(http.StatusUnauthorized, "unauthorized", "Unauthorized",
			"a valid bearer token is required in the Authorization header"))
	case err != nil:
		h.cfg.Logger.WarnContext(r.Context(), "ingest token lookup failed",
			"request_id", middleware.GetReqID(r.Context()), "err", err)
		w.Header().Set("Retry-After", strconv.Itoa(int(DefaultRetryAfter/time.Second)))
		return writeProblem(w, problem.New(http.StatusServiceUnavailable, "token-lookup-unavailable", "Token cannot be checked",
			"the bearer token could not be checked; retry the request"))
	}
	kind, err := mediaKind(r.Header.Get("Content-Type"))
	if err != nil {
		return writeProblem(w, problem.New(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type", err.Error()))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return writeProblem(w, problem.New(http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large",
				fmt.Sprintf("the body exceeds %d bytes; split the events into several requests", h.cfg.MaxBodyBytes)))
		}
		return writeProblem(w, problem.New(http.StatusBadRequest, "unreadable-body", "Unreadable body", err.Error()))
	}
	raws, perr := split(kind, body, h.cfg.MaxEvents)
	if perr != nil {
		return writeProblem(w, *perr)
	}
	h.eventsPerReq.Update(float64(len(raws)))

	now := h.cfg.Now()
	records := make([]*kgo.Record, 0, len(raws))
	passed := make([]checked, 0, len(raws))
	var rejected []Rejection
	for i, raw := range raws {
		rej, rec, c := h.check(i, raw, now, scope)
		if rej != nil {
			rejected = append(rejected, *rej)
			continue
		}
		records = append(records, rec)
		passed = append(passed, c)
	}
	foreign, err := h.refuseForeignSubjects(r.Context(), scope, passed)
	if err != nil {
		h.cfg.Logger.WarnContext(r.Context(), "subscription lookup failed",
			"request_id", middleware.GetReqID(r.Context()), "err", err)
		w.Header().Set("Retry-After", strconv.Itoa(int(DefaultRetryAfter/time.Second)))
		return writeProblem(w, problem.New(http.StatusServiceUnavailable, "token-lookup-unavailable", "Token cannot be checked",
			"the subscriptions this token's events name could not be checked; retry the request"))
	}
	records, rejected = withoutForeign(records, passed, rejected, foreign)
	outOfScope := h.countRejections(rejected)
	if len(records) == 0 && outOfScope == len(rejected) {
		return writeProblem(w, rejectionProblem(http.StatusForbidden, "events-out-of-scope", "Events outside the token's scope",
			fmt.Sprintf("all %d events are outside what this token may write", len(rejected)), 0, rejected))
	}
	if len(records) == 0 {
		return writeProblem(w, rejectionProblem(http.StatusBadRequest, "invalid-events", "Invalid events",
			fmt.Sprintf("all %d events were rejected", len(rejected)), 0, rejected))
	}

	if err := h.produce(r.Context(), records); err != nil {
		h.produceFailures.Inc()
		h.cfg.Logger.WarnContext(r.Context(), "kafka did not acknowledge events",
			"request_id", middleware.GetReqID(r.Context()), "events", len(records), "err", err)
		w.Header().Set("Retry-After", strconv.Itoa(int(DefaultRetryAfter/time.Second)))
		return writeProblem(w, problem.New(http.StatusServiceUnavailable, "broker-unavailable", "Events not accepted",
			"Kafka did not acknowledge the events in time; none of this request's events is accepted. Retry the whole request: events are deduplicated by (source, id).").
			With("accepted", 0))
	}
	h.accepted.Add(len(records))
	if len(rejected) > 0 {
		return writeProblem(w, rejectionProblem(http.StatusMultiStatus, "partial-batch", "Some events were rejected",
			fmt.Sprintf("%d events accepted, %d rejected", len(records), len(rejected)), len(records), rejected))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(Accepted{Accepted: len(records)})
	return http.StatusAccepted
}

// withoutForeign drops the records of the events refused for their
// subjects and adds those refusals to rejected, in event order.
func withoutForeign(records []*kgo.Record, passed []checked, rejected, foreign []Rejection) ([]*kgo.Record, []Rejection) {
	if len(foreign) == 0 {
		return records, rejected
	}
	refused := map[int]bool{}
	for _, rej := range foreign {
		refused[rej.Index] = true
	}
	kept := records[:0]
	for i, rec := range records {
		if !refused[passed[i].index] {
			kept = append(kept, rec)
		}
	}
	rejected = append(rejected, foreign...)
	slices.SortFunc(rejected, func(a, b Rejection) int { return a.Index - b.Index })
	return kept, rejected
}

// countRejections counts the rejections by reason and returns how many
// are outside the token's scope.
func (h *Handler) countRejections(rejected []Rejection) int {
	outOfScope := 0
	for _, rej := range rejected {
		switch rej.Reason {
		case ReasonSourceNotAllowed, ReasonAPINotAllowed, ReasonSubjectNotAllowed:
			outOfScope++
		}
		h.cfg.Metrics.GetOrCreateCounter(`veil_ingest_events_rejected_total{reason="` + string(rej.Reason) + `"}`).Inc()
	}
	return outOfScope
}

// check validates one raw event, and that the token may write its source
// and API, and returns either its rejection or its record and what the
// subject check needs of it.
func (h *Handler) check(i int, raw []byte, now time.Time, scope ingesttoken.Scope) (*Rejection, *kgo.Record, checked) {
	if len(raw) > MaxEventBytes {
		return &Rejection{Index: i, Reason: ReasonEventTooLarge,
			Detail: fmt.Sprintf("the event is %d bytes; at most %d are allowed", len(raw), MaxEventBytes)}, nil, checked{}
	}
	e, err := usage.Decode(raw)
	if err == nil {
		err = e.CheckTime(now, h.cfg.MaxFuture, h.cfg.LateWindow)
	}
	if err != nil {
		rej := &Rejection{Index: i, ID: e.ID, Reason: usage.ReasonMalformedJSON, Detail: err.Error()}
		var ve *usage.Error
		if errors.As(err, &ve) {
			rej.Reason, rej.Field, rej.Detail = ve.Reason, ve.Field, ve.Detail
			if rej.ID == "" {
				rej.ID = ve.ID
			}
		}
		return rej, nil, checked{}
	}
	if !scope.AllowsSource(e.Source) {
		return &Rejection{Index: i, ID: e.ID, Reason: ReasonSourceNotAllowed, Field: "source",
			Detail: fmt.Sprintf("this token may not write events of source %q", e.Source)}, nil, checked{}
	}
	if !scope.AllowsAPI(e.Data.APIID) {
		return &Rejection{Index: i, ID: e.ID, Reason: ReasonAPINotAllowed, Field: "data.api_id",
			Detail: fmt.Sprintf("this token may not write events of API %q", e.Data.APIID)}, nil, checked{}
	}
	return nil, &kgo.Record{
		Topic:   h.cfg.Topic,
		Key:     []byte(e.Subject),
		Value:   raw,
		Headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte(contentTypeCloudEvent)}},
	}, checked{index: i, id: e.ID, subject: e.Subject, apiID: e.Data.APIID}
}

// produce sends the records and waits for Kafka's acknowledgement of all of
// them, at most AckTimeout. The wait is bounded even for records already in
// flight: those may still land after a timeout, which is harmless because
// the client retries the request and the processors deduplicate by
// (source, id).
func (h *Handler) produce(ctx context.Context, records []*kgo.Record) error {
	start := time.Now()
	defer h.produceSeconds.UpdateDuration(start)
	ctx, cancel := context.WithTimeout(ctx, h.cfg.AckTimeout)
	defer cancel()

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	wg.Add(len(records))
	for _, r := range records {
		h.cfg.Producer.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
			wg.Done()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("produce %d records: %w", len(records), ctx.Err())
	}
	if firstErr != nil {
		return fmt.Errorf("produce %d records: %w", len(records), firstErr)
	}
	return nil
}

type bodyKind int

const (
	kindEvent bodyKind = iota
	kindBatch
	kindNDJSON
)

func mediaKind(contentType string) (bodyKind, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil && contentType != "" {
		return 0, fmt.Errorf("Content-Type %q cannot be parsed", contentType)
	}
	switch mt {
	case MediaTypeEvent:
		return kindEvent, nil
	case MediaTypeBatch:
		return kindBatch, nil
	case MediaTypeNDJSON:
		return kindNDJSON, nil
	}
	return 0, fmt.Errorf("Content-Type must be %s, %s or %s", MediaTypeEvent, MediaTypeBatch, MediaTypeNDJSON)
}

// split cuts a body into raw events. It refuses bodies that are not the
// declared shape, that hold no event, or that hold more than maxEvents.
func split(kind bodyKind, body []byte, maxEvents int) ([][]byte, *problem.Details) {
	var raws [][]byte
	switch kind {
	case kindEvent:
		if len(bytes.TrimSpace(body)) > 0 {
			raws = [][]byte{body}
		}
	case kindBatch:
		var batch []json.RawMessage
		if err := json.Unmarshal(body, &batch); err != nil {
			p := problem.New(http.StatusBadRequest, "malformed-body", "Malformed body",
				"a "+MediaTypeBatch+" body must be a JSON array of events: "+err.Error())
			return nil, &p
		}
		if len(batch) > maxEvents {
			return nil, tooManyEvents(len(batch), maxEvents)
		}
		raws = make([][]byte, len(batch))
		for i, b := range batch {
			raws[i] = b
		}
	case kindNDJSON:
		for len(body) > 0 {
			line := body
			if i := bytes.IndexByte(body, '\n'); i >= 0 {
				line, body = body[:i], body[i+1:]
			} else {
				body = nil
			}
			if line = bytes.TrimSpace(line); len(line) > 0 {
				if len(raws) == maxEvents {
					return nil, tooManyEvents(len(raws)+1, maxEvents)
				}
				raws = append(raws, line)
			}
		}
	}
	if len(raws) == 0 {
		p := problem.New(http.StatusBadRequest, "empty-request", "No events", "the request holds no event")
		return nil, &p
	}
	return raws, nil
}

func tooManyEvents(n, max int) *problem.Details {
	p := problem.New(http.StatusRequestEntityTooLarge, "too-many-events", "Too many events",
		fmt.Sprintf("the request holds more than %d events (at least %d); split it", max, n)).With("max_events", max)
	return &p
}

func rejectionProblem(status int, typ, title, detail string, accepted int, rejected []Rejection) problem.Details {
	listed := rejected
	if len(listed) > maxListedRejections {
		listed = listed[:maxListedRejections]
	}
	return problem.New(status, typ, title, detail).
		With("accepted", accepted).
		With("rejected", len(rejected)).
		With("errors", listed)
}

func writeProblem(w http.ResponseWriter, p problem.Details) int {
	problem.Write(w, p)
	return p.Status
}
