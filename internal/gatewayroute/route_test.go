package gatewayroute_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/veil-platform/veil/internal/gatewayroute"
)

// TestDecodeAdmitsOnlyEncodedShape: Decode takes back what Encode wrote,
// and refuses every other route, however close, so the gateway's routes
// endpoint cannot be handed a file server or a proxy to its admin socket.
func TestDecodeAdmitsOnlyEncodedShape(t *testing.T) {
	full := gatewayroute.Route{
		ID: "veil-api-1", PathPrefix: "/weather", Upstream: "https://weather.example/v1",
		Methods: []string{"GET"}, Headers: map[string]string{gatewayroute.APIHeader: "1"},
		Veil:    &gatewayroute.Veil{APIID: "1", RouteTemplates: []string{"/forecast/{city}"}},
		Signing: &gatewayroute.Signing{APIID: "1", Secret: strings.Repeat("s", 32)},
	}
	plain := gatewayroute.Route{ID: "veil-api-2", PathPrefix: "/plain", Upstream: "http://127.0.0.1:9999"}
	for _, r := range []gatewayroute.Route{full, plain} {
		want, raw, err := gatewayroute.Encode(r)
		if err != nil {
			t.Fatalf("Encode(%s) = %v", r.ID, err)
		}
		got, err := gatewayroute.Decode(raw)
		if err != nil || got.ID != want.ID || got.Upstream != want.Upstream || (got.Signing == nil) != (want.Signing == nil) {
			t.Errorf("Decode(Encode(%s)) = %+v, %v; want %+v", r.ID, got, err, want)
		}
	}
	_, raw, err := gatewayroute.Encode(full)
	if err != nil {
		t.Fatal(err)
	}
	good := string(raw)
	tests := []struct{ name, body string }{
		{"file server", `{"@id":"veil-api-1","match":[{"path":["/x","/x/*"]}],"handle":[{"handler":"file_server","root":"/"}],"terminal":true}`},
		{"plain http transport", strings.Replace(good, `"protocol":"veil"`, `"protocol":"http"`, 1)},
		{"a handler in front", strings.Replace(good, `"handle":[`, `"handle":[{"handler":"file_server"},`, 1)},
		{"a field more", strings.Replace(good, `"terminal":true`, `"terminal":true,"group":"x"`, 1)},
		{"a veil handler field Encode never writes", strings.Replace(good, `"handler":"veil",`, `"handler":"veil","key_query_param":"api_key",`, 1)},
		{"an unknown handler field", strings.Replace(good, `"handler":"reverse_proxy"`, `"handler":"reverse_proxy","flush_interval":-1`, 1)},
		{"another dial than the Host", strings.Replace(good, `"dial":"weather.example:443"`, `"dial":"127.0.0.1:2019"`, 1)},
		{"the gateway's own id", strings.Replace(good, `"@id":"veil-api-1"`, `"@id":"`+gatewayroute.HealthRouteID+`"`, 1)},
		{"not JSON", `{`},
	}
	for _, tt := range tests {
		if tt.body == good {
			t.Fatalf("%s: the edit did not change the route", tt.name)
		}
		if _, err := gatewayroute.Decode([]byte(tt.body)); !errors.Is(err, gatewayroute.ErrUnrecognizedRoute) {
			t.Errorf("Decode(%s) = %v; want ErrUnrecognizedRoute", tt.name, err)
		}
	}
}
