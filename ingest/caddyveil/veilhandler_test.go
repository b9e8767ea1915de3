package caddyveil

import (
	"bytes"
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/veil-platform/veil/internal/gatewayroute"
)

// TestVeilHandlerMatchesModule holds gatewayroute.VeilHandler, the one
// builder of the handler's JSON, to the module: every field it writes is
// one of Handler's, with the same value, and every field of Handler is one
// it can write.
func TestVeilHandlerMatchesModule(t *testing.T) {
	v := gatewayroute.VeilHandler{
		APIID: "api_1", PathPrefix: "/weather", RouteTemplates: []string{"/forecast/{city}"},
		KeyQueryParam: "api_key", UnitsHeader: "X-Units",
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var entry map[string]json.RawMessage
	if err := json.Unmarshal(b, &entry); err != nil {
		t.Fatal(err)
	}
	if got := string(entry["handler"]); got != `"veil"` {
		t.Errorf(`VeilHandler's "handler" = %s; want "veil"`, got)
	}
	delete(entry, "handler")
	rest, _ := json.Marshal(entry)
	dec := json.NewDecoder(bytes.NewReader(rest))
	dec.DisallowUnknownFields()
	var h Handler
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("Handler does not take VeilHandler's JSON %s: %v", rest, err)
	}
	want := Handler{APIID: v.APIID, PathPrefix: v.PathPrefix, Routes: v.RouteTemplates, KeyQueryParam: v.KeyQueryParam, UnitsHeader: v.UnitsHeader}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("Handler from VeilHandler's JSON = %+v; want %+v", h, want)
	}
	typ := reflect.TypeFor[Handler]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if _, ok := entry[name]; !ok {
			t.Errorf("Handler.%s (%q) is not written by VeilHandler; fields written: %v", f.Name, name, slices.Sorted(maps.Keys(entry)))
		}
	}
}
