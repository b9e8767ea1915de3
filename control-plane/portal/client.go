package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/veil-platform/veil/control-plane/identity"
)

// client calls the REST API's handler in process on behalf of the page's
// signed-in user: the request goes through the API's whole middleware
// chain (rate limits, authorization, validation) with the session's
// principal in place of a bearer token.
type client struct{ h http.Handler }

// Problem is an RFC 9457 answer of the API.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail"`
	Errors []FieldError `json:"errors"`
}

// FieldError is one invalid field of a request.
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail) }

// asProblem finds the API's problem in err.
func asProblem(err error) (*Problem, bool) {
	var p *Problem
	ok := errors.As(err, &p)
	return p, ok
}

// page is one page of a list the API answers.
type page[T any] struct {
	Data       []T    `json:"data"`
	NextCursor string `json:"next_cursor"`
}

// maxAnswer bounds what the portal reads of one API answer.
const maxAnswer = 8 << 20

// do sends method path (with query q and JSON body in, if not nil) as the
// user of r and decodes a 2xx answer into out (if not nil); any other
// answer is a *Problem.
func (c client) do(r *http.Request, method, path string, q url.Values, in, out any) error {
	return c.send(r, method, path, q, "", in, out)
}

// send is do with an Idempotency-Key (if not empty): a form submitted
// twice (a double click, a reload) does what it does once.
func (c client) send(r *http.Request, method, path string, q url.Values, idem string, in, out any) error {
	s, ok := SessionFrom(r.Context())
	if !ok {
		return &Problem{Status: http.StatusUnauthorized, Title: "Unauthorized", Detail: "Sign in first."}
	}
	var body io.Reader = http.NoBody
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	u := path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	// The API is a router of its own: it must not take the page's route
	// context for a parent's (chi would route the page's path).
	ctx := context.WithValue(r.Context(), chi.RouteCtxKey, (*chi.Context)(nil))
	ctx = identity.WithTrustedPrincipal(ctx, s.Principal)
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	// The caller's address as the API's limits and audit log see it: the
	// API believes X-Forwarded-For only from its trusted proxies, as for
	// any request.
	req.RemoteAddr = r.RemoteAddr
	for _, h := range []string{"X-Forwarded-For", "User-Agent"} {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	if id := r.Header.Get("X-Request-Id"); id != "" {
		req.Header.Set("X-Request-Id", id)
	}
	rec := &recorder{header: http.Header{}}
	c.h.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.status < 200 || rec.status > 299 {
		p := &Problem{}
		if err := json.Unmarshal(rec.body.Bytes(), p); err != nil || p.Status == 0 {
			p = &Problem{Status: rec.status, Title: http.StatusText(rec.status)}
		}
		return p
	}
	if out == nil || rec.status == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
		return fmt.Errorf("decode %s %s: %w", method, path, err)
	}
	return nil
}

func (c client) get(r *http.Request, path string, q url.Values, out any) error {
	return c.do(r, http.MethodGet, path, q, nil, out)
}

// post sends in as the body of a POST to path; idem is the form's
// idempotency key (formKey), or empty.
func (c client) post(r *http.Request, path, idem string, in, out any) error {
	return c.send(r, http.MethodPost, path, nil, idem, in, out)
}

// patch sends in as the body of a PATCH to path.
func (c client) patch(r *http.Request, path string, in, out any) error {
	return c.send(r, http.MethodPatch, path, nil, "", in, out)
}

// put sends in as the body of a PUT to path.
func (c client) put(r *http.Request, path string, in, out any) error {
	return c.send(r, http.MethodPut, path, nil, "", in, out)
}

// delete sends a DELETE to path.
func (c client) delete(r *http.Request, path string) error {
	return c.send(r, http.MethodDelete, path, nil, "", nil, nil)
}

// recorder is the response the API writes for an in-process call.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.body.Len()+len(b) > maxAnswer {
		return 0, errors.New("portal: API answer too large")
	}
	return r.body.Write(b)
}
