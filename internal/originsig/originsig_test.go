package originsig_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/veil-platform/veil/internal/originsig"
)

func TestSignVerify(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	secret, other := originsig.NewSecret(), originsig.NewSecret()
	if !strings.HasPrefix(secret, originsig.SecretPrefix) || len(secret) != len(originsig.SecretPrefix)+64 || secret == other {
		t.Fatalf("NewSecret() = %q, %q; want two different vsk_ and 64 hex digits", secret, other)
	}
	const method, path, query, api = "GET", "/v1/items/a%2Fb", "limit=10&page=a%26b", "0b7a0d8e-3f5e-4f53-9a0e-1d1c2b3a4f5e"
	good := originsig.Sign(now, method, path, query, api, secret)
	noQuery := originsig.Sign(now, method, path, "", api, secret)
	if !regexp.MustCompile(`^t=1900000000,v1=[0-9a-f]{64}$`).MatchString(good) {
		t.Fatalf("Sign() = %q; want t=<unix>,v1=<64 hex>", good)
	}
	flip := []byte(good)
	if flip[len(flip)-1] == '0' {
		flip[len(flip)-1] = '1'
	} else {
		flip[len(flip)-1] = '0'
	}
	tests := []struct {
		name                         string
		header, secret, method, path string
		query, api                   string
		at                           time.Time
		want                         error
	}{
		{"valid", good, secret, method, path, query, api, now, nil},
		{"valid at the window's end", good, secret, method, path, query, api, now.Add(originsig.Tolerance), nil},
		{"valid from a clock slightly ahead", good, secret, method, path, query, api, now.Add(-originsig.Tolerance), nil},
		{"rotation overlap, new secret", originsig.Sign(now, method, path, query, api, other, secret), secret, method, path, query, api, now, nil},
		{"rotation overlap, previous secret", originsig.Sign(now, method, path, query, api, other, secret), other, method, path, query, api, now, nil},
		{"stale (replayed)", good, secret, method, path, query, api, now.Add(originsig.Tolerance + time.Second), originsig.ErrStale},
		{"from the future", good, secret, method, path, query, api, now.Add(-originsig.Tolerance - time.Second), originsig.ErrStale},
		{"other secret", good, other, method, path, query, api, now, originsig.ErrMismatch},
		{"other method", good, secret, "POST", path, query, api, now, originsig.ErrMismatch},
		{"other path", good, secret, method, "/v1/items/a/b", query, api, now, originsig.ErrMismatch},
		{"other api", good, secret, method, path, query, "another-api", now, originsig.ErrMismatch},
		{"other query", good, secret, method, path, "limit=1000&page=a%26b", api, now, originsig.ErrMismatch},
		{"query dropped", good, secret, method, path, "", api, now, originsig.ErrMismatch},
		{"query added", noQuery, secret, method, path, "limit=10", api, now, originsig.ErrMismatch},
		{"no query, none signed", noQuery, secret, method, path, "", api, now, nil},
		{"query moved into the path", noQuery, secret, method, path + "?limit=10", "", api, now, originsig.ErrMismatch},
		{"flipped bit", string(flip), secret, method, path, query, api, now, originsig.ErrMismatch},
		{"forged timestamp", strings.Replace(good, "t=1900000000", "t=1900000100", 1), secret, method, path, query, api, now, originsig.ErrMismatch},
		{"empty", "", secret, method, path, query, api, now, originsig.ErrMalformed},
		{"no signature", "t=1900000000", secret, method, path, query, api, now, originsig.ErrMalformed},
		{"no time", "v1=" + strings.Repeat("0", 64), secret, method, path, query, api, now, originsig.ErrMalformed},
		{"short signature", "t=1900000000,v1=abcd", secret, method, path, query, api, now, originsig.ErrMalformed},
		{"not hex", "t=1900000000,v1=" + strings.Repeat("z", 64), secret, method, path, query, api, now, originsig.ErrMalformed},
	}
	for _, tt := range tests {
		if err := originsig.Verify(tt.header, tt.secret, tt.method, tt.path, tt.query, tt.api, tt.at); !errors.Is(err, tt.want) {
			t.Errorf("Verify(%s) = %v; want %v", tt.name, err, tt.want)
		}
	}
}

// TestReadmeSnippetIsVerify: the README's Go verification snippet is the
// text of verify.go from its marker on, so the code providers copy is the
// code tested above and through the real gateway.
func TestReadmeSnippetIsVerify(t *testing.T) {
	src, err := os.ReadFile("verify.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const marker = "the README's Go\n// verification snippet; TestReadmeSnippetIsVerify keeps the two equal.\n\n"
	_, body, ok := strings.Cut(string(src), marker)
	if !ok {
		t.Fatal("verify.go lost the marker of the README snippet")
	}
	_, section, ok := strings.Cut(string(readme), "### Upstream secrecy and origin proof")
	if !ok {
		t.Fatal("README has no section Upstream secrecy and origin proof")
	}
	m := regexp.MustCompile("(?s)```go\n(.*?)```").FindStringSubmatch(section)
	if m == nil {
		t.Fatal("README's origin proof section has no Go snippet")
	}
	if !strings.Contains(m[1], body) {
		t.Errorf("README's Go snippet does not contain verify.go's code; copy verify.go from its marker on into the README:\n%s", body)
	}
}

// TestReadmeNodeSnippet runs the README's Node verification snippet with
// node on signatures Sign makes, good and bad, and wants Verify's answers.
func TestReadmeNodeSnippet(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is needed to test the README's Node snippet: %v", err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "### Upstream secrecy and origin proof")
	m := regexp.MustCompile("(?s)```js\n(.*?)```").FindStringSubmatch(section)
	if m == nil {
		t.Fatal("README's origin proof section has no Node snippet")
	}
	now := time.Now()
	secret, other := originsig.NewSecret(), originsig.NewSecret()
	const api = "6a1f7f0e-5a8c-4c1e-9c39-1f0f5b2b8a11"
	type check struct {
		// Target is the raw request target, req.url in Node.
		Name, Header, Secret, Method, Target, API string
		Now                                       int64
		want                                      bool
	}
	good := originsig.Sign(now, "GET", "/v1/items/a%20b", "", api, secret)
	withQuery := originsig.Sign(now, "GET", "/v1/items", "q=a%20b&x=?", api, secret)
	checks := []check{
		{"valid", good, secret, "GET", "/v1/items/a%20b", api, now.Unix(), true},
		{"valid with a query", withQuery, secret, "GET", "/v1/items?q=a%20b&x=?", api, now.Unix(), true},
		{"other query", withQuery, secret, "GET", "/v1/items?q=other&x=?", api, now.Unix(), false},
		{"query dropped", withQuery, secret, "GET", "/v1/items", api, now.Unix(), false},
		{"query added", good, secret, "GET", "/v1/items/a%20b?admin=1", api, now.Unix(), false},
		{"empty query is none", good, secret, "GET", "/v1/items/a%20b?", api, now.Unix(), true},
		{"overlap, previous secret", originsig.Sign(now, "POST", "/v1", "", api, other, secret), secret, "POST", "/v1", api, now.Unix(), true},
		{"stale", good, secret, "GET", "/v1/items/a%20b", api, now.Add(originsig.Tolerance + 2*time.Second).Unix(), false},
		{"other secret", good, other, "GET", "/v1/items/a%20b", api, now.Unix(), false},
		{"other path", good, secret, "GET", "/v1/items/a b", api, now.Unix(), false},
		{"other method", good, secret, "HEAD", "/v1/items/a%20b", api, now.Unix(), false},
		{"other api", good, secret, "GET", "/v1/items/a%20b", "x", now.Unix(), false},
		{"malformed", "t=1,v1=zz", secret, "GET", "/", api, now.Unix(), false},
		{"empty", "", secret, "GET", "/", api, now.Unix(), false},
	}
	for _, c := range checks {
		path, query, _ := strings.Cut(c.Target, "?")
		verr := originsig.Verify(c.Header, c.Secret, c.Method, path, query, c.API, time.Unix(c.Now, 0))
		if (verr == nil) != c.want {
			t.Fatalf("Verify(%s) = %v; the case is wrong", c.Name, verr)
		}
	}
	in, _ := json.Marshal(checks)
	script := m[1] + `
const checks = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify(checks.map((c) => verifyVeilSignature(c.Header, c.Secret, c.Method, c.Target, c.API, c.Now))));
`
	file := filepath.Join(t.TempDir(), "verify.js")
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), node, file)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node README snippet: %v", err)
	}
	var got []bool
	if err := json.Unmarshal(out, &got); err != nil || len(got) != len(checks) {
		t.Fatalf("node README snippet printed %q; want %d booleans", out, len(checks))
	}
	for i, c := range checks {
		if got[i] != c.want {
			t.Errorf("verifyVeilSignature(%s) = %t; want %t", c.Name, got[i], c.want)
		}
	}
}
