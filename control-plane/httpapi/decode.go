package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
	if err := checkTokens(body); err != nil {
		return err
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

// maxNumber is the longest number, or decimal string, a body may hold:
// the widest column (numeric(20, 6)) needs 21 characters and an exponent
// form a few more.
const maxNumber = 40

// checkTokens refuses, before any value is decoded, what no request may
// hold: NUL in a string or key, which Postgres text cannot store, and a
// number or decimal-looking string longer than maxNumber. decimal.Decimal
// parses its digits with big.Int.SetString, whose cost grows with the
// square of their count: a 1 MiB literal costs seconds of CPU, before any
// role or bound is checked. A malformed body is left to Decode to describe.
func checkTokens(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		switch t := tok.(type) {
		case json.Number:
			if len(t) > maxNumber {
				return &badJSON{msg: fmt.Sprintf("numbers must be at most %d characters long", maxNumber)}
			}
		case string:
			if strings.ContainsRune(t, 0) {
				return &badJSON{msg: "strings must not contain the NUL character"}
			}
			if len(t) > maxNumber && numeric(t) {
				return &badJSON{msg: fmt.Sprintf("decimal strings must be at most %d characters long", maxNumber)}
			}
		}
	}
}

// numeric reports whether s holds only what a decimal's text may: digits,
// a point, signs and an exponent mark.
func numeric(s string) bool {
	return strings.Trim(s, "0123456789.+-eE") == ""
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
