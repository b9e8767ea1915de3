package metering_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// codeSpan is a `…` span of Markdown.
var codeSpan = regexp.MustCompile("`([^`]+)`")

// TestArchitectureNamesPricingRules: docs/architecture.md's "Where each
// rule lives" names the owner of each pricing rule, and every path it
// names exists, so the map follows the code when a file moves.
func TestArchitectureNamesPricingRules(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatalf("read docs/architecture.md: %v", err)
	}
	text := string(doc)
	start := strings.Index(text, "## Where each rule lives")
	if start < 0 {
		t.Fatal(`docs/architecture.md has no section "Where each rule lives"`)
	}
	table := text[start:]
	if end := strings.Index(table[len("## "):], "\n#"); end >= 0 {
		table = table[:len("## ")+end]
	}
	named := map[string]bool{}
	for _, m := range codeSpan.FindAllStringSubmatch(table, -1) {
		named[m[1]] = true
	}
	for _, owner := range []string{
		"metering/meter.go", "metering/rating.go", "metering/currency.go", "metering/quote.go",
		"metering/promotion.go", "internal/enforcement/meter.go", "control-plane/planfiles",
		"control-plane/pricing/charges.go",
	} {
		if !named[owner] {
			t.Errorf("Where each rule lives does not name %s", owner)
		}
	}
	for path := range named {
		if !strings.Contains(path, "/") || strings.ContainsAny(path, "<*: ") {
			continue // a name, a pattern or a Redis key, not a path
		}
		if _, err := os.Stat("../" + path); err != nil {
			t.Errorf("Where each rule lives names %s, which does not exist: %v", path, err)
		}
	}
}
