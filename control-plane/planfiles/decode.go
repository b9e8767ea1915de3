package planfiles

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/shopspring/decimal"
	"gopkg.in/yaml.v3"

	"github.com/veil-platform/veil/metering"
)

// maxErrors bounds the errors reported for one file: past that many, the
// rest are noise.
const maxErrors = 50

// Parse decodes and validates one plan file; file names it in errors. A
// plan is returned only when there is no error. Parse needs no database:
// what only the database knows (the API exists, the plan is not managed
// elsewhere) is checked by the loader.
func Parse(file string, content []byte) (*Plan, Errors) {
	d := &decoder{file: file, plan: &Plan{File: file, lines: map[string]int{}}}
	root, err := d.document(content)
	if err != nil {
		return nil, Errors{*err}
	}
	d.decodePlan(root)
	if len(d.errs) == 0 {
		d.validate()
	}
	if len(d.errs) > 0 {
		d.errs.sort()
		if len(d.errs) > maxErrors {
			d.errs = append(d.errs[:maxErrors], Error{File: file, Message: "more errors follow; fix these first"})
		}
		return nil, d.errs
	}
	return d.plan, nil
}

type decoder struct {
	file string
	plan *Plan
	errs Errors
}

var yamlLineRe = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document reads the file's one YAML document.
func (d *decoder) document(content []byte) (*yaml.Node, *Error) {
	dec := yaml.NewDecoder(bytes.NewReader(content))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: d.file, Line: 1, Message: "the file is empty"}
		}
		e := Error{File: d.file, Line: 1, Message: strings.TrimPrefix(err.Error(), "yaml: ")}
		if m := yamlLineRe.FindStringSubmatch(err.Error()); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Message = m[2]
		}
		return nil, &e
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, &Error{File: d.file, Line: next.Line, Message: "one plan per file: a second YAML document follows"}
	}
	if len(doc.Content) != 1 {
		return nil, &Error{File: d.file, Line: 1, Message: "the file is empty"}
	}
	return doc.Content[0], nil
}

func (d *decoder) fail(n *yaml.Node, field, format string, a ...any) {
	d.errs = append(d.errs, Error{File: d.file, Line: n.Line, Field: field, Message: fmt.Sprintf(format, a...)})
}

// failAt reports an error found after decoding, at the line field was
// decoded from.
func (d *decoder) failAt(field, format string, a ...any) {
	d.errs = append(d.errs, Error{File: d.file, Line: d.plan.Line(field), Field: field, Message: fmt.Sprintf(format, a...)})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapping decodes a mapping node: each key to its field's function;
// unknown and repeated keys are errors, and so are aliases, which a plan
// has no need of.
func (d *decoder) mapping(n *yaml.Node, path string, fields map[string]func(v *yaml.Node, path string)) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping of keys to values")
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := join(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "keys must be plain names")
			continue
		}
		if seen[k.Value] {
			d.fail(k, field, "is given twice")
			continue
		}
		seen[k.Value] = true
		fn, ok := fields[k.Value]
		if !ok {
			d.fail(k, field, "unknown key")
			continue
		}
		if v.Kind == yaml.AliasNode {
			d.fail(v, field, "aliases are not allowed")
			continue
		}
		d.plan.lines[field] = k.Line
		fn(v, field)
	}
}

// sequence calls fn for each item of a sequence node, at most max of them.
func (d *decoder) sequence(n *yaml.Node, path string, max int, fn func(item *yaml.Node, path string)) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "must be a list")
		return
	}
	if len(n.Content) > max {
		d.fail(n, path, "at most %d entries", max)
		return
	}
	for i, item := range n.Content {
		field := fmt.Sprintf("%s[%d]", path, i)
		if item.Kind == yaml.AliasNode {
			d.fail(item, field, "aliases are not allowed")
			continue
		}
		d.plan.lines[field] = item.Line
		fn(item, field)
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func (d *decoder) scalar(n *yaml.Node, path string) bool {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "must be a single value")
		return false
	}
	return true
}

// str decodes a string; null is "".
func (d *decoder) str(dst *string) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		if !d.scalar(n, path) || isNull(n) {
			return
		}
		if n.Tag == "!!bool" {
			d.fail(n, path, "must be a string, not %s (quote it)", n.Value)
			return
		}
		*dst = n.Value
	}
}

// plainDecimalRe is the only decimal syntax a plan file takes: digits with
// an optional fraction. Exponents (1e3), YAML 1.1 underscores (1_000),
// hexadecimal and .5 are refused: a price must read as what it is.
var plainDecimalRe = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

// decimalOf reads a number or a string from the node's text, never
// through a float.
func (d *decoder) decimalOf(n *yaml.Node, path string) (decimal.Decimal, bool) {
	if !d.scalar(n, path) {
		return decimal.Zero, false
	}
	switch n.Tag {
	case "!!int", "!!float", "!!str":
	default:
		d.fail(n, path, "must be a decimal number such as 12.5")
		return decimal.Zero, false
	}
	s := strings.TrimSpace(n.Value)
	if len(s) > 40 || !plainDecimalRe.MatchString(s) {
		d.fail(n, path, "must be a plain decimal such as 0.000001 (no exponent, at most 40 characters), not %q", truncate(n.Value))
		return decimal.Zero, false
	}
	v, err := decimal.NewFromString(s)
	if err != nil {
		d.fail(n, path, "must be a plain decimal: %v", err)
		return decimal.Zero, false
	}
	return v, true
}

func (d *decoder) dec(dst *decimal.Decimal) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		if isNull(n) {
			return
		}
		if v, ok := d.decimalOf(n, path); ok {
			*dst = v
		}
	}
}

// optDec decodes a decimal that may be absent or null (nil).
func (d *decoder) optDec(dst **decimal.Decimal) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		if isNull(n) {
			return
		}
		if v, ok := d.decimalOf(n, path); ok {
			*dst = &v
		}
	}
}

var plainIntRe = regexp.MustCompile(`^-?[0-9]{1,18}$`)

func (d *decoder) intOf(n *yaml.Node, path string) (int64, bool) {
	if !d.scalar(n, path) {
		return 0, false
	}
	s := strings.TrimSpace(n.Value)
	if (n.Tag != "!!int" && n.Tag != "!!str") || !plainIntRe.MatchString(s) {
		d.fail(n, path, "must be a whole number, not %q", truncate(n.Value))
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		d.fail(n, path, "must be a whole number: %v", err)
		return 0, false
	}
	return v, true
}

// optInt decodes a whole number that may be absent or null (nil), within
// [lo, hi].
func (d *decoder) optInt(dst **int64, lo, hi int64, unit string) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		if isNull(n) {
			return
		}
		v, ok := d.intOf(n, path)
		if !ok {
			return
		}
		if v < lo || v > hi {
			d.fail(n, path, "must be %d to %d%s, or null for none", lo, hi, unit)
			return
		}
		*dst = &v
	}
}

func (d *decoder) boolean(dst *bool) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		if !d.scalar(n, path) || isNull(n) {
			return
		}
		if n.Tag != "!!bool" || (n.Value != "true" && n.Value != "false") {
			d.fail(n, path, "must be true or false")
			return
		}
		*dst = n.Value == "true"
	}
}

func (d *decoder) strList(dst *[]string) func(*yaml.Node, string) {
	return func(n *yaml.Node, path string) {
		list := []string{}
		d.sequence(n, path, metering.MaxFilterEntries, func(item *yaml.Node, field string) {
			var s string
			d.str(&s)(item, field)
			list = append(list, s)
		})
		*dst = list
	}
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
