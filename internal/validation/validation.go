// Package validation collects field-level input errors, which the HTTP
// layer answers as 422 problems listing each field, and bounds the free
// text (Reason) that is stored rather than refused.
package validation

import (
	"fmt"
	"strings"
)

// Error lists input fields that are wrong.
type Error struct {
	Fields []Field
}

// Field is one wrong field, named as the client sent it (e.g. routes[0].path).
type Field struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Detail
	}
	return "invalid input: " + strings.Join(parts, "; ")
}

// Add records one wrong field.
func (e *Error) Add(field, format string, args ...any) {
	e.Fields = append(e.Fields, Field{Field: field, Detail: fmt.Sprintf(format, args...)})
}

// Err returns e when it holds a field, else nil.
func (e *Error) Err() error {
	if e == nil || len(e.Fields) == 0 {
		return nil
	}
	return e
}

// One returns an error about a single field.
func One(field, detail string) *Error {
	return &Error{Fields: []Field{{Field: field, Detail: detail}}}
}
