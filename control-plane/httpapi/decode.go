package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/veil-platform/veil/internal/validation"
)

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
	errUnsupportedMedia = errors.New("unsupported media type")
	errTooLarge         = errors.New("request body too large")
)

type badJSON struct{ msg string }

func (e *badJSON) Error() string { return "malformed json: " + e.msg }

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
