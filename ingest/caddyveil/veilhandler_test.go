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

// decodeVeilHandler decodes a handler of Caddy's JSON config: its
// "handler" must be "veil" and every other field one of Handler's. It
// returns the Handler and those other fields.
func decodeVeilHandler(t *testing.T, raw []byte) (Handler, map[string]json.RawMessage) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	if got := string(fields["handler"]); got != `"veil"` {
		t.Fatalf(`"handler" of %s = %s; want "veil"`, raw, got)
	}
	delete(fields, "handler")
	rest, _ := json.Marshal(fields)
	dec := json.NewDecoder(bytes.NewReader(rest))
	dec.DisallowUnknownFields()
	var h Handler
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("Handler does not take the veil handler's JSON %s: %v", rest, err)
	}
	return h, fields
}

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
	h, entry := decodeVeilHandler(t, b)
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
