package planfiles

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/shopspring/decimal"

	"github.com/veil-platform/veil/control-plane/pricing"
	"github.com/veil-platform/veil/control-plane/subscriptions"
	"github.com/veil-platform/veil/metering"
)

// Plan is one plan file, decoded.
type Plan struct {
	// File names the file in errors: its path relative to the directory.
	File string
	// API is the slug of the API the plan belongs to (apis.slug).
	API string
	// Slug is the plan's slug within its API.
	Slug        string
	Name        string
	Description string
	// Status is draft, active (the default) or archived.
	Status string
	// Type is usage_based, subscription, freemium or hybrid.
	Type     string
	Currency string
	// Interval is month (the default) or year.
	Interval  string
	BaseFee   decimal.Decimal
	TrialDays int
	Limits    Limits
	// Meters are the definitions of the API's meters the plan charges.
	Meters []metering.Meter
	// Charges are the plan's charges, as the REST API takes them: one
	// owner, control-plane/pricing, validates both.
	Charges []pricing.Charge

	// lines maps each field path decoded to its line in the file.
	lines map[string]int
}

// Limits are a plan's request quota and rate limits; nil is none.
type Limits struct {
	QuotaRequests *int64
	// QuotaHard blocks calls over the quota; false (the default, as over
	// REST) lets them through as overage.
	QuotaHard     bool
	RatePerSecond *int
	RatePerMinute *int
}

// terms are the plan's terms as the REST API takes them.
func (p *Plan) terms() subscriptions.Terms {
	return subscriptions.Terms{
		Type: p.Type, Currency: p.Currency, Interval: p.Interval, BaseFee: p.BaseFee, TrialDays: p.TrialDays,
		QuotaRequests: p.Limits.QuotaRequests, QuotaHard: p.Limits.QuotaHard,
		RatePerSecond: p.Limits.RatePerSecond, RatePerMinute: p.Limits.RatePerMinute,
		Charges: p.Charges,
	}
}

// Line is the line of field in the file: the line of its key, or of the
// closest enclosing field decoded; 1 when nothing is known.
func (p *Plan) Line(field string) int {
	for f := field; f != ""; f = parent(f) {
		if l, ok := p.lines[f]; ok {
			return l
		}
	}
	return 1
}

// parent strips the last segment of a field path: charges[1].tiers[2] →
// charges[1].tiers → charges[1] → charges → "".
func parent(f string) string {
	if strings.HasSuffix(f, "]") {
		if i := strings.LastIndexByte(f, '['); i > 0 {
			return f[:i]
		}
	}
	if i := strings.LastIndexByte(f, '.'); i >= 0 {
		return f[:i]
	}
	return ""
}

// Error is one thing wrong with a plan file, named by file, line and field.
type Error struct {
	File string `json:"file"`
	// Line is 1-based; 0 when the error is about the file as a whole.
	Line int `json:"line"`
	// Field is the path of the field at fault (charges[1].tiers[2].up_to),
	// empty when the error is about the file as a whole.
	Field   string `json:"field"`
	Message string `json:"message"`
}

// String is the error as veil pricing validate prints it:
// file:line: field: message.
func (e Error) String() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Message)
	return b.String()
}

// ErrInvalid wraps the errors of a reload that applied nothing because a
// file is wrong; Errors lists them.
var ErrInvalid = errors.New("invalid plan files")

// Errors are the errors of one or more files, in file and line order.
type Errors []Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.String()
	}
	return ErrInvalid.Error() + ": " + strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (es Errors) Unwrap() error { return ErrInvalid }

func (es Errors) sort() {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].File != es[j].File {
			return es[i].File < es[j].File
		}
		return es[i].Line < es[j].Line
	})
}
