package caddyveil

import (
	"io"
	"net/http"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/schemas/usage"
)

// countingReader counts the request body bytes the upstream read.
type countingReader struct {
	io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

// maxUnits is usage.MaxUnits, the most units one event may carry.
var maxUnits = decimal.NewFromInt(usage.MaxUnits)

// countingWriter records the status and counts the body bytes, and takes
// the units header off the response.
type countingWriter struct {
	http.ResponseWriter
	unitsHeader string
	status      int
	n           int64
	units       *decimal.Decimal
	// clamped: the header said more than usage.MaxUnits, units holds the cap.
	clamped bool
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 && code >= 200 {
		c.status = code
		if c.unitsHeader != "" {
			if v := c.Header().Get(c.unitsHeader); v != "" {
				if d, err := decimal.NewFromString(v); err == nil && !d.IsNegative() && d.Exponent() >= -6 {
					if d.GreaterThan(maxUnits) {
						d, c.clamped = maxUnits, true
					}
					c.units = &d
				}
				c.Header().Del(c.unitsHeader)
			}
		}
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer (flushes,
// deadlines, hijacking).
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
