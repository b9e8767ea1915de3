package problem_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/veil-platform/veil/internal/problem"
)

func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	problem.Write(rec, problem.New(http.StatusBadRequest, "invalid-events", "Invalid events", "2 events were rejected").With("accepted", 0))
	if got := rec.Header().Get("Content-Type"); got != "application/problem+json" {
		t.Fatalf("Content-Type = %q; want application/problem+json", got)
	}
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("status = %d; want 400", rec.Code)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"type": problem.TypeBase + "invalid-events", "title": "Invalid events", "status": float64(400),
		"detail": "2 events were rejected", "accepted": float64(0),
	}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("body[%q] = %v; want %v", k, body[k], v)
		}
	}
}

func TestExtensionsCannotOverrideMembers(t *testing.T) {
	rec := httptest.NewRecorder()
	problem.Write(rec, problem.New(http.StatusNotFound, "not-found", "Not found", "").With("status", 200))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body["status"] != float64(404) {
		t.Fatalf("status member = %v; want 404", body["status"])
	}
}
