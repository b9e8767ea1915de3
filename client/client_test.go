package client_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/client"
)

const specPath = "../schemas/openapi.json"

// TestGeneratedFromCurrentSpec fails when schemas/openapi.json changed after
// client.gen.go was generated.
func TestGeneratedFromCurrentSpec(t *testing.T) {
	raw, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%x", sha256.Sum256(raw)); got != client.SpecSHA256 {
		t.Fatalf("sha256(schemas/openapi.json) = %s; want %s, the document client.gen.go was generated from: run go generate ./client", got, client.SpecSHA256)
	}
}

// TestEveryOperationHasAMethod checks the generated client against the
// document's operation ids, without the generator.
func TestEveryOperationHasAMethod(t *testing.T) {
	raw, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeFor[*client.ClientWithResponses]()
	n := 0
	for path, item := range doc.Paths {
		for method, rawOp := range item {
			var op struct {
				OperationID string `json:"operationId"`
			}
			// Path items also hold parameters, a list, and descriptions.
			if json.Unmarshal(rawOp, &op) != nil || op.OperationID == "" {
				continue
			}
			n++
			name := string(op.OperationID[0]-'a'+'A') + op.OperationID[1:] + "WithResponse"
			if _, ok := typ.MethodByName(name); !ok {
				t.Errorf("%s %s (%s): ClientWithResponses has no method %s", method, path, op.OperationID, name)
			}
		}
	}
	if n == 0 {
		t.Fatal("the document names no operation")
	}
}

// TestGeneratedUpToDate regenerates the client into a temporary folder and
// compares it with the files in the repository, with the oapi-codegen
// version go.mod pins as a tool.
func TestGeneratedUpToDate(t *testing.T) {
	out := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "go", "run", "generate.go", "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run generate.go: %v\n%s", err, b)
	}
	for _, name := range []string{"client.gen.go", "spec.gen.go"} {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what generate.go writes today: run go generate ./client", name)
		}
	}
}

func TestCheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer tok" {
			t.Errorf("Authorization = %q; want Bearer tok", got)
		}
		switch r.URL.Path {
		case "/v1/me":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"subject":"dana"}`))
		case "/v1/apis":
			if got := r.Header.Get("Idempotency-Key"); got != "k1" {
				t.Errorf("Idempotency-Key = %q; want k1", got)
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"type":"https://veil.dev/problems/slug-taken","title":"Slug taken","status":409,"detail":"the slug is taken","request_id":"r1"}`))
		default:
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("upstream down"))
		}
	}))
	defer srv.Close()
	cp, err := client.New(srv.URL+"/", client.WithBearer("tok"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	me, err := cp.GetMeWithResponse(ctx, nil)
	if err := client.Check(me, err); err != nil {
		t.Fatalf("Check(GetMe) = %v; want nil", err)
	}

	created, err := cp.CreateAPIWithResponse(ctx, nil, client.APIInput{Name: "n", Slug: "s", UpstreamUrl: "http://x"}, client.Idempotent("k1"))
	err = client.Check(created, err)
	if !client.IsProblem(err, "slug-taken") {
		t.Fatalf("Check(CreateAPI) = %v; want a slug-taken problem", err)
	}
	if want := "control plane answered 409 https://veil.dev/problems/slug-taken: the slug is taken (request r1)"; err.Error() != want {
		t.Errorf("Error() = %q; want %q", err.Error(), want)
	}

	got, err := cp.GetKeyWithResponse(ctx, uuid.New(), nil, client.Bearer("tok"))
	err = client.Check(got, err)
	var pe *client.ProblemError
	if !errors.As(err, &pe) || pe.Status != http.StatusBadGateway || pe.Name() != "" {
		t.Fatalf("Check(GetKey) = %v; want a 502 ProblemError without a problem document", err)
	}
}
