package schemas_test

import (
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/veil-platform/veil/schemas"
)

// migrationRow matches the first cell of a row of the README's table of
// Postgres migrations: | `00010_pricing` | …
var migrationRow = regexp.MustCompile("(?m)^\\| `([0-9]{5}_[a-z0-9_]+)` \\|")

// TestReadmeListsEveryMigration: the README's table of Postgres tables
// (Schemas and migrations) names every embedded migration once, in the
// order goose applies them, so a reader finds what each one added.
func TestReadmeListsEveryMigration(t *testing.T) {
	t.Parallel()
	files, err := fs.Glob(schemas.Postgres, "postgres/*.sql")
	if err != nil {
		t.Fatalf("list migrations: %v", err)
	}
	var want []string
	for _, f := range files {
		want = append(want, strings.TrimSuffix(path.Base(f), ".sql"))
	}
	slices.Sort(want)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatalf("read README: %v", err)
	}
	var got []string
	for _, m := range migrationRow.FindAllStringSubmatch(string(readme), -1) {
		got = append(got, m[1])
	}
	if !slices.Equal(got, want) {
		t.Errorf("README's migration table = %v; want %v (every file of schemas/postgres, in order)", got, want)
	}
}
