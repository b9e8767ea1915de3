package ingesttoken_test

import (
	"strings"
	"testing"

	"github.com/veil-platform/veil/internal/ingesttoken"
)

func TestScopeAllowsSource(t *testing.T) {
	tests := []struct {
		sources []string
		source  string
		want    bool
	}{
		{[]string{"/billing/eu"}, "/billing/eu", true},
		{[]string{"/billing/eu"}, "/billing/eu/", false},
		{[]string{"/billing/eu"}, "/billing/us", false},
		{[]string{"/billing/*"}, "/billing/us", true},
		{[]string{"/billing/*"}, "/billingx", false},
		{[]string{"*"}, "https://crm.example.com", true},
		{[]string{"*"}, "/gateway/eu-1", false},
		{[]string{"/*"}, "/gateway/eu-1", false},
		{[]string{"/gate*"}, "/gateway/eu-1", false},
		{[]string{"/gateway/*"}, "/gateway/eu-1", true},
		{[]string{"/gateway/eu-1"}, "/gateway/eu-1", true},
		{[]string{"/gateway/eu-1"}, "/gateway/eu-2", false},
		{nil, "/billing/eu", false},
	}
	for _, tt := range tests {
		if got := (ingesttoken.Scope{Sources: tt.sources}).AllowsSource(tt.source); got != tt.want {
			t.Errorf("Scope{Sources: %q}.AllowsSource(%q) = %v; want %v", tt.sources, tt.source, got, tt.want)
		}
	}
}

func TestScopeAllowsAPI(t *testing.T) {
	anyAPI, one := ingesttoken.Scope{}, ingesttoken.Scope{APIIDs: []string{"a"}}
	if !anyAPI.AllowsAPI("b") || !one.AllowsAPI("a") || one.AllowsAPI("b") {
		t.Errorf("AllowsAPI: empty list must allow any API, a list only its own")
	}
}

func TestGenerate(t *testing.T) {
	a, err := ingesttoken.Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ingesttoken.Generate()
	if !strings.HasPrefix(a, ingesttoken.Prefix) || len(a) != len(ingesttoken.Prefix)+43 || a == b {
		t.Errorf("Generate() = %q, %q; want two distinct %s tokens of 43 more characters", a, b, ingesttoken.Prefix)
	}
	if ingesttoken.Hash(a) == ingesttoken.Hash(b) {
		t.Errorf("Hash of two tokens is equal")
	}
}

func TestWellFormed(t *testing.T) {
	good, _ := ingesttoken.Generate()
	tests := []struct {
		token string
		want  bool
	}{
		{good, true},
		{ingesttoken.Prefix + strings.Repeat("aZ0-_", 8) + "abc", true},
		{ingesttoken.Prefix + strings.Repeat("A", 42), false},
		{ingesttoken.Prefix + strings.Repeat("A", 44), false},
		{ingesttoken.Prefix + strings.Repeat("A", 42) + "+", false},
		{ingesttoken.Prefix + strings.Repeat("A", 42) + "=", false},
		{"xeil_ingest_" + strings.Repeat("A", 43), false},
		{strings.Repeat("A", 55), false},
		{"", false},
	}
	for _, tt := range tests {
		if got := ingesttoken.WellFormed(tt.token); got != tt.want {
			t.Errorf("WellFormed(%q) = %v; want %v", tt.token, got, tt.want)
		}
	}
}
