package analytics

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/metering"
)

// Default bounds of exports running at once: each holds a ClickHouse
// connection for as long as its client reads.
const (
	DefaultMaxExports       = 4
	DefaultMaxExportsPerOrg = 2
)

// ErrTooManyExports says that the caller's organization, or the control
// plane, runs as many exports as it may; retry when one ends.
var ErrTooManyExports = errors.New("too many usage exports running")

// exportGate counts the exports running, overall and per organization.
type exportGate struct {
	mu          sync.Mutex
	total       int
	byOrg       map[uuid.UUID]int
	max, perOrg int
}

// StartExport reserves one of the export slots for org, or refuses with
// ErrTooManyExports. The caller must call release once the export ends.
func (s *Service) StartExport(org uuid.UUID) (release func(), err error) {
	g := &s.exports
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.total >= g.max || g.byOrg[org] >= g.perOrg {
		return nil, fmt.Errorf("start export: %w (at most %d per organization, %d in all)", ErrTooManyExports, g.perOrg, g.max)
	}
	g.total++
	g.byOrg[org]++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.total--
			if g.byOrg[org]--; g.byOrg[org] <= 0 {
				delete(g.byOrg, org)
			}
		})
	}, nil
}

// Format is an export's encoding.
type Format string

// The export formats.
const (
	// NDJSON: one JSON object per line, each ending in a newline.
	NDJSON Format = "ndjson"
	// CSV: RFC 4180 (CRLF line ends, quotes where needed), a header row
	// first, text fields that a spreadsheet would run as a formula
	// neutralized (see neutralize).
	CSV Format = "csv"
)

// ContentType is f's media type.
func (f Format) ContentType() string {
	if f == CSV {
		return "text/csv; charset=utf-8"
	}
	return "application/x-ndjson"
}

// exportColumns are the columns of an export, in order.
var exportColumns = []string{"time", "id", "source", "subject", "api_id", "key_id", "method", "route", "path",
	"status", "latency_ms", "request_bytes", "response_bytes", "units"}

// DefaultFlushRows is how many rows an export writes between flushes.
const DefaultFlushRows = 1000

// Sink is where an export goes: w, and flush to push what w holds to the
// client (http.ResponseController's Flush).
type Sink struct {
	W     io.Writer
	Flush func() error
	// Rows between flushes; DefaultFlushRows when 0.
	Rows int
}

// Export writes q's rows to sink in format f as ClickHouse streams them,
// flushing after the first row and every sink.Rows rows, so that memory
// holds one block of rows, never the whole answer. Nothing is written
// before the first row arrives or the read ends, so a failure to start
// the read leaves the response untouched for a problem document; it
// returns how many rows it wrote and, when the read or a write failed
// after that, the error (the caller must then cut the response short).
func (s *Service) Export(ctx context.Context, q metering.ExportQuery, f Format, sink Sink) (int, error) {
	if s.ch == nil {
		return 0, ErrUnavailable
	}
	if sink.Rows <= 0 {
		sink.Rows = DefaultFlushRows
	}
	// However fast the client reads, the export ends by the deadline; the
	// driver passes it to ClickHouse as max_execution_time.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ExportTimeout)
	defer cancel()
	enc := newEncoder(f, sink.W)
	n, started := 0, false
	start := func() error {
		started = true
		return enc.header()
	}
	err := metering.NewReader(s.cfg.ExportClickHouse).Export(ctx, q, func(x metering.ExportRow) error {
		if !started {
			if err := start(); err != nil {
				return err
			}
		}
		if err := enc.row(x); err != nil {
			return err
		}
		n++
		if n == 1 || n%sink.Rows == 0 {
			return flush(enc, sink)
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	if !started {
		if err := start(); err != nil {
			return n, err
		}
	}
	return n, flush(enc, sink)
}

func flush(enc encoder, sink Sink) error {
	if err := enc.flush(); err != nil {
		return fmt.Errorf("write export: %w", err)
	}
	if sink.Flush != nil {
		if err := sink.Flush(); err != nil {
			return fmt.Errorf("flush export: %w", err)
		}
	}
	return nil
}

// encoder writes rows in one format.
type encoder interface {
	header() error
	row(metering.ExportRow) error
	flush() error
}

func newEncoder(f Format, w io.Writer) encoder {
	if f == CSV {
		c := csv.NewWriter(w)
		c.UseCRLF = true
		return &csvEncoder{w: c}
	}
	return &ndjsonEncoder{enc: json.NewEncoder(w)}
}

type ndjsonEncoder struct{ enc *json.Encoder }

func (e *ndjsonEncoder) header() error { return nil }

// row writes x on one line: json.Encoder ends each value with a newline
// and escapes any inside strings.
func (e *ndjsonEncoder) row(x metering.ExportRow) error {
	if err := e.enc.Encode(x); err != nil {
		return fmt.Errorf("write export row: %w", err)
	}
	return nil
}

func (e *ndjsonEncoder) flush() error { return nil }

type csvEncoder struct {
	w   *csv.Writer
	rec []string
}

func (e *csvEncoder) header() error { return e.w.Write(exportColumns) }

func (e *csvEncoder) row(x metering.ExportRow) error {
	e.rec = append(e.rec[:0], x.Time.UTC().Format(time.RFC3339),
		neutralize(x.ID), neutralize(x.Source), neutralize(x.Subject), neutralize(x.APIID), neutralize(x.KeyID),
		neutralize(x.Method), neutralize(x.Route), neutralize(x.Path),
		strconv.FormatUint(uint64(x.Status), 10), strconv.FormatUint(uint64(x.LatencyMS), 10),
		strconv.FormatUint(x.RequestBytes, 10), strconv.FormatUint(x.ResponseBytes, 10), x.Units.String())
	if err := e.w.Write(e.rec); err != nil {
		return fmt.Errorf("write export row: %w", err)
	}
	return nil
}

func (e *csvEncoder) flush() error {
	e.w.Flush()
	return e.w.Error()
}

// neutralize keeps a spreadsheet from reading a text field as a formula
// (CSV injection): a field that starts with = + - @, a tab or a carriage
// return gets a leading apostrophe, which spreadsheets show as text and
// do not run. Numbers are written by the exporter itself, never
// neutralized; a path or route that starts so is written with the
// apostrophe, which a reader strips if it needs the raw value.
func neutralize(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}
