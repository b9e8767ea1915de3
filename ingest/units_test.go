package ingest_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/veil-platform/veil/ingest"
	"github.com/veil-platform/veil/schemas/usage"
)

// TestUnitsOverTheCapNamed: the overflow report's request, ten events of
// 999,999,999,999.999999 units for one subject, is refused whole, each
// event named with its id, field and reason; an event at the cap in the
// same request is accepted.
func TestUnitsOverTheCapNamed(t *testing.T) {
	f := setup(t, true, nil)
	unitsEvent := func(id, units string) string {
		return strings.Replace(event(id, "sub_over", now), `"units":2.5`, `"units":`+units, 1)
	}
	var evs []string
	for i := range 10 {
		evs = append(evs, unitsEvent(fmt.Sprintf("over-%d", i), "999999999999.999999"))
	}
	a := f.post(t, ingest.MediaTypeBatch, "["+strings.Join(evs, ",")+"]", "Bearer "+token)
	if a.Status != http.StatusBadRequest || a.Body["rejected"] != float64(10) {
		t.Fatalf("POST ten events over the cap = %d %v; want 400 with 10 rejected", a.Status, a.Body)
	}
	errs, _ := a.Body["errors"].([]any)
	for i, e := range errs {
		m, _ := e.(map[string]any)
		if m["id"] != fmt.Sprintf("over-%d", i) || m["reason"] != string(usage.ReasonInvalidUnits) || m["field"] != "data.units" {
			t.Errorf("errors[%d] = %v; want id over-%d, reason %s, field data.units", i, m, i, usage.ReasonInvalidUnits)
		}
	}

	a = f.post(t, ingest.MediaTypeBatch, "["+unitsEvent("at-cap", "1000000000")+","+unitsEvent("past-cap", "1000000000.000001")+"]", "Bearer "+token)
	errs, _ = a.Body["errors"].([]any)
	if a.Status != http.StatusMultiStatus || a.Body["accepted"] != float64(1) || len(errs) != 1 || errs[0].(map[string]any)["id"] != "past-cap" {
		t.Fatalf("POST one event at the cap and one past it = %d %v; want 207 accepting at-cap, naming past-cap", a.Status, a.Body)
	}
}
