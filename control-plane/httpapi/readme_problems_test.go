package httpapi_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// problemType matches the type of a problem a source file writes:
// problem.New(http.StatusConflict, "code-taken", …).
var problemType = regexp.MustCompile(`problem\.New\(\s*http\.Status\w+,\s*"([a-z0-9-]+)"`)

// TestReadmeListsEveryProblemType: every problem type the control plane's
// REST API and its middleware write is in the README's table of problem
// types (HTTP conventions), which is where a client looks one up.
func TestReadmeListsEveryProblemType(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatalf("read README: %v", err)
	}
	table := problemTable(t, string(readme))
	var missing []string
	for _, typ := range writtenProblemTypes(t, ".", "../middleware") {
		if !strings.Contains(table, "`"+typ+"`") {
			missing = append(missing, typ)
		}
	}
	if len(missing) > 0 {
		t.Errorf("README's problem table (HTTP conventions) lacks %v; add each to the row of its status", missing)
	}
}

// problemTable returns the rows of the README's status | problem types
// table.
func problemTable(t *testing.T, readme string) string {
	t.Helper()
	const head = "| status | problem types |"
	i := strings.Index(readme, head)
	if i < 0 {
		t.Fatalf("README has no table headed %q", head)
	}
	var rows []string
	for _, line := range strings.Split(readme[i:], "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			break
		}
		rows = append(rows, line)
	}
	return strings.Join(rows, "\n")
}

// writtenProblemTypes returns the problem types the non-test Go files of
// dirs write, sorted and without repeats.
func writtenProblemTypes(t *testing.T, dirs ...string) []string {
	t.Helper()
	var types []string
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatalf("list %s: %v", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatalf("read %s: %v", f, err)
			}
			for _, m := range problemType.FindAllStringSubmatch(string(src), -1) {
				types = append(types, m[1])
			}
		}
	}
	if len(types) == 0 {
		t.Fatal("found no problem.New calls; the pattern no longer matches the code")
	}
	slices.Sort(types)
	return slices.Compact(types)
}
