// Package pagination pages through lists ordered by (created_at, id) with
// opaque cursors, so that a page boundary stays put while rows are added.
package pagination

import (
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ErrBadCursor reports a cursor this package did not issue.
var ErrBadCursor = errors.New("bad cursor")

// Cursor is the position after the row (At, ID). The zero Cursor is the
// start of the list.
type Cursor struct {
	At time.Time
	ID uuid.UUID
}

// Decode parses a cursor from Encode; "" is the start of the list.
func Decode(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	at, id, ok := strings.Cut(string(b), "|")
	if !ok {
		return Cursor{}, ErrBadCursor
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	return Cursor{At: t, ID: u}, nil
}

// Encode returns the opaque form of c.
func (c Cursor) Encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.At.UTC().Format(time.RFC3339Nano) + "|" + c.ID.String()))
}

// Time is the cursor's time as a nullable SQL argument: nil at the start
// of the list, so that `($1::timestamptz IS NULL OR (created_at, id) > ($1, $2))`
// selects everything.
func (c Cursor) Time() *time.Time {
	if c == (Cursor{}) {
		return nil
	}
	return &c.At
}

// Page trims rows fetched with a LIMIT of limit+1 to limit and returns the
// cursor of the next page, or "" on the last one.
func Page[T any](rows []T, limit int, pos func(T) Cursor) ([]T, string) {
	if len(rows) <= limit {
		return rows, ""
	}
	rows = rows[:limit]
	return rows, pos(rows[limit-1]).Encode()
}

// Limit clamps a requested page size to 1..200, 50 when unset.
func Limit(n int) int {
	switch {
	case n <= 0:
		return 50
	case n > 200:
		return 200
	}
	return n
}
