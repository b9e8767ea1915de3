package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The examples of deploy/pricing pass veil pricing validate, one summary
// line each.
func TestPricingValidateExamples(t *testing.T) {
	files, err := filepath.Glob("../../deploy/pricing/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("deploy/pricing holds %v, %v; want the four examples", files, err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), append([]string{"pricing", "validate"}, files...), &out, &out); err != nil {
		t.Fatalf("veil pricing validate deploy/pricing/*.yaml = %v\n%s", err, out.String())
	}
	if got := strings.Count(out.String(), ": ok: plan "); got != len(files) {
		t.Fatalf("veil pricing validate printed %q; want one ok line per file", out.String())
	}
}

func TestPricingValidateErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "pro.yaml")
	content := "api: weather\nplan: pro\nname: Pro\ntype: subscription\ncurrency: USD\nbase_fee: 1e3\n"
	if err := os.WriteFile(bad, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(t.Context(), []string{"pricing", "validate", bad, filepath.Join(dir, "missing.yaml")}, &out, &out)
	if err == nil {
		t.Fatalf("veil pricing validate of a bad file succeeded:\n%s", out.String())
	}
	for _, want := range []string{bad + ":6: base_fee: must be a plain decimal", filepath.Join(dir, "missing.yaml") + ": "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("veil pricing validate printed %q; want a line %q", out.String(), want)
		}
	}
	if err := run(t.Context(), []string{"pricing", "check"}, &out, &out); err == nil {
		t.Error("veil pricing check succeeded; want a usage error")
	}
}
