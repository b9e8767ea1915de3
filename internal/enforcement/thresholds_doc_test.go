package enforcement_test

import (
	"encoding/json"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/veil-platform/veil/internal/enforcement"
	"github.com/veil-platform/veil/schemas"
)

// The thresholds are written in Go (enforcement.Thresholds, which the Lua
// scripts are built from) and, because neither can import Go, in the
// OpenAPI document (and so the generated client) and in a Postgres CHECK.
// These tests fail when one of them changes without the others
// (docs/architecture.md, "Where each rule lives").

// TestThresholdsMatchOpenAPI: the enum of QuotaStatus.thresholds_crossed
// in schemas/openapi.json is enforcement.Thresholds. After changing it, run
// go generate ./client (client's TestGeneratedFromCurrentSpec checks that).
func TestThresholdsMatchOpenAPI(t *testing.T) {
	t.Parallel()
	var doc struct {
		Components struct {
			Schemas struct {
				QuotaStatus struct {
					Properties struct {
						ThresholdsCrossed struct {
							Items struct {
								Enum []int `json:"enum"`
							} `json:"items"`
						} `json:"thresholds_crossed"`
					} `json:"properties"`
				} `json:"QuotaStatus"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(schemas.OpenAPI, &doc); err != nil {
		t.Fatalf("decode schemas/openapi.json: %v", err)
	}
	got := doc.Components.Schemas.QuotaStatus.Properties.ThresholdsCrossed.Items.Enum
	if !slices.Equal(got, enforcement.Thresholds) {
		t.Errorf("schemas/openapi.json QuotaStatus.thresholds_crossed enum = %v; want enforcement.Thresholds, %v", got, enforcement.Thresholds)
	}
}

// thresholdCheck matches the list of a CHECK (threshold IN (...)).
var thresholdCheck = regexp.MustCompile(`(?i)CHECK\s*\(\s*threshold\s+IN\s*\(([^)]*)\)`)

// TestThresholdsMatchMigrations: the CHECK on quota_notices.threshold
// allows exactly enforcement.Thresholds. Migrations are read in order and
// the last CHECK of an Up section wins, so a new migration that replaces
// the constraint is what counts (old migrations are never edited).
func TestThresholdsMatchMigrations(t *testing.T) {
	t.Parallel()
	files, err := fs.Glob(schemas.Postgres, "postgres/*.sql")
	if err != nil {
		t.Fatalf("list schemas/postgres: %v", err)
	}
	slices.Sort(files)
	var got []int
	var from string
	for _, name := range files {
		b, err := fs.ReadFile(schemas.Postgres, name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		up, _, _ := strings.Cut(string(b), "-- +goose Down")
		for _, m := range thresholdCheck.FindAllStringSubmatch(up, -1) {
			got, from = nil, name
			for _, f := range strings.Split(m[1], ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil {
					t.Fatalf("%s: threshold CHECK list %q: %v", name, m[1], err)
				}
				got = append(got, n)
			}
		}
	}
	if from == "" {
		t.Fatal("no CHECK (threshold IN (...)) in schemas/postgres; want the one on quota_notices")
	}
	slices.Sort(got)
	if !slices.Equal(got, enforcement.Thresholds) {
		t.Errorf("CHECK (threshold IN ...) of %s = %v; want enforcement.Thresholds, %v: add a migration that replaces the constraint", from, got, enforcement.Thresholds)
	}
}
