package caddyveil

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard" // reverse_proxy, handle, route
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// adapt runs the Caddyfile adapter on src as `caddy adapt` does.
func adapt(t *testing.T, src string) ([]byte, error) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal(`caddyconfig.GetAdapter("caddyfile") = nil; want the Caddyfile adapter`)
	}
	out, warnings, err := adapter.Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	for _, w := range warnings {
		t.Errorf("adapt warning: %s:%d: %s", w.File, w.Line, w.Message)
	}
	return out, err
}

// TestCaddyfileAdapt holds every testdata/*.caddyfile to its adapted JSON in
// testdata/*.json; go test -run TestCaddyfileAdapt -update rewrites them.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.caddyfile")
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".caddyfile")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			out, err := adapt(t, string(src))
			if err != nil {
				t.Fatalf("adapt %s: %v", file, err)
			}
			var got bytes.Buffer
			if err := json.Indent(&got, out, "", "\t"); err != nil {
				t.Fatalf("indent adapted JSON: %v\n%s", err, out)
			}
			got.WriteByte('\n')
			golden := strings.TrimSuffix(file, ".caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden file (run with -update to write it): %v", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("adapt(%s) =\n%s\nwant (%s)\n%s", file, got.Bytes(), golden, want)
			}
		})
	}
}

// TestCaddyfileAdaptSettings decodes what the adapter made back into the
// module types, so a setting that lands under the wrong JSON name fails
// here even when the golden files are rewritten carelessly.
func TestCaddyfileAdaptSettings(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "global.caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := adapt(t, string(src))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			Veil json.RawMessage `json:"veil"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	// Every setting of the app is in global.caddyfile: a new one fails here
	// until the Caddyfile and the golden file show it.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(cfg.Apps.Veil, &fields); err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeFor[App]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		if _, ok := fields[name]; !ok {
			t.Errorf("apps.veil from testdata/global.caddyfile has no %s; want every setting set", name)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(cfg.Apps.Veil))
	dec.DisallowUnknownFields()
	var app App
	if err := dec.Decode(&app); err != nil {
		t.Fatalf("decode apps.veil %s: %v", cfg.Apps.Veil, err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"redis_address", app.RedisAddress, "10.0.0.5:6380"},
		{"redis_db", app.RedisDB, 3},
		{"cache_ttl", time.Duration(app.CacheTTL), 30 * time.Second},
		{"negative_cache_ttl", time.Duration(app.NegativeCacheTTL), 2 * time.Second},
		{"redis_outage_grace", time.Duration(app.RedisOutageGrace), 10 * time.Second},
		{"on_redis_error", app.OnRedisError, "deny"},
		{"local_rate_fraction", app.LocalRateFraction, 0.25},
		{"brokers", strings.Join(app.Brokers, ","), "kafka-1:9092,kafka-2:9092"},
		{"topic", app.Topic, "veil.usage.test"},
		{"spool_dir", app.SpoolDir, "/var/lib/veil/spool"},
		{"spool_max_bytes", app.SpoolMaxBytes, int64(1048576)},
		{"spool_fsync", app.SpoolFsync, "always"},
		{"memory_events", app.MemoryEvents, 5000},
		{"source", app.Source, "/gateway/test-1"},
		{"egress.allow", strings.Join(app.Egress.Allow, ","), "10.20.0.0/16,192.168.4.10:8443"},
		{"egress.deny", strings.Join(app.Egress.Deny, ","), "10.0.0.5:6380"},
		{"egress.resolver", app.Egress.Resolver, "10.0.0.53:53"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("apps.veil %s = %v; want %v", c.name, c.got, c.want)
		}
	}
	if err := app.Validate(); err != nil {
		t.Errorf("Validate() of the adapted app = %v; want nil", err)
	}
}

// TestCaddyfileAdaptHandlerSettings does the same for the directive: the
// handler under the weather route decodes into a Handler with every
// subdirective in its field.
func TestCaddyfileAdaptHandlerSettings(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "weather.caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := adapt(t, string(src))
	if err != nil {
		t.Fatal(err)
	}
	type handlers struct {
		Handle []json.RawMessage `json:"handle"`
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Routes []handlers `json:"routes"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	srv := cfg.Apps.HTTP.Servers["srv0"]
	if len(srv.Routes) != 1 || len(srv.Routes[0].Handle) != 1 || len(srv.Routes[0].Handle[0].Routes) != 1 || len(srv.Routes[0].Handle[0].Routes[0].Handle) != 2 {
		t.Fatalf("adapted weather route has an unexpected shape:\n%s", out)
	}
	h, _ := decodeVeilHandler(t, srv.Routes[0].Handle[0].Routes[0].Handle[0])
	checks := []struct{ name, got, want string }{
		{"api_id", h.APIID, "api_weather"},
		{"path_prefix", h.PathPrefix, "/weather"},
		{"routes", strings.Join(h.Routes, " "), "/forecast/{city} /alerts"},
		{"key_query_param", h.KeyQueryParam, "api_key"},
		{"units_header", h.UnitsHeader, "X-Units"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("veil handler %s = %q; want %q", c.name, c.got, c.want)
		}
	}
	if err := h.Validate(); err != nil {
		t.Errorf("Validate() of the adapted handler = %v; want nil", err)
	}
}

func TestCaddyfileAdaptErrors(t *testing.T) {
	site := func(directive string) string { return ":8080 {\n" + directive + "\n}\n" }
	global := func(body string) string { return "{\n" + body + "\n}\n:8080 {\n\tveil api_x\n}\n" }
	tests := []struct {
		name    string
		src     string
		wantErr string // a part of the error
	}{
		{"unknown subdirective", site("veil api_x {\n bogus 1\n}"), `unknown veil subdirective "bogus"`},
		{"two api ids", site("veil api_x api_y"), "wrong argument count"},
		{"routes without templates", site("veil api_x {\n routes\n}"), "wrong argument count"},
		{"path_prefix without a value", site("veil api_x {\n path_prefix\n}"), "wrong argument count"},
		{"path_prefix with two values", site("veil api_x {\n path_prefix /a /b\n}"), "wrong argument count"},
		{"api_id without a value", site("veil {\n api_id\n}"), "wrong argument count"},
		{"units_header with two values", site("veil api_x {\n units_header A B\n}"), "wrong argument count"},
		{"unknown global option", global("veil {\n bogus 1\n}"), `unknown veil option "bogus"`},
		{"global option with an argument", global("veil extra {\n topic t\n}"), "wrong argument count"},
		{"redis_db not a number", global("veil {\n redis_db three\n}"), `redis_db "three"`},
		{"cache_ttl not a duration", global("veil {\n cache_ttl forever\n}"), `cache_ttl "forever"`},
		{"negative_cache_ttl not a duration", global("veil {\n negative_cache_ttl soon\n}"), `negative_cache_ttl "soon"`},
		{"redis_outage_grace not a duration", global("veil {\n redis_outage_grace long\n}"), `redis_outage_grace "long"`},
		{"local_rate_fraction not a number", global("veil {\n local_rate_fraction half\n}"), `local_rate_fraction "half"`},
		{"spool_max_bytes not a number", global("veil {\n spool_max_bytes 1GiB\n}"), `spool_max_bytes "1GiB"`},
		{"memory_events not a number", global("veil {\n memory_events many\n}"), `memory_events "many"`},
		{"brokers without addresses", global("veil {\n brokers\n}"), "wrong argument count"},
		{"topic without a value", global("veil {\n topic\n}"), "wrong argument count"},
		{"redis_address with two values", global("veil {\n redis_address a:1 b:2\n}"), "wrong argument count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := adapt(t, tt.src)
			if err == nil {
				t.Fatalf("adapt(%q) = %s, nil; want an error containing %q", tt.src, out, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("adapt(%q) error = %v; want one containing %q", tt.src, err, tt.wantErr)
			}
		})
	}
}

// TestHandlerValidate covers what adapting cannot catch and loading the
// config refuses.
func TestHandlerValidate(t *testing.T) {
	tests := []struct {
		name    string
		h       Handler
		wantErr bool
	}{
		{"complete", Handler{APIID: "api_1", PathPrefix: "/weather", Routes: []string{"/forecast/{city}", "/alerts", "/files/*"}}, false},
		{"api id only", Handler{APIID: "api_1"}, false},
		{"no api id", Handler{PathPrefix: "/weather"}, true},
		{"relative prefix", Handler{APIID: "api_1", PathPrefix: "weather"}, true},
		{"route without a slash", Handler{APIID: "api_1", Routes: []string{"forecast"}}, true},
		{"route with an empty segment", Handler{APIID: "api_1", Routes: []string{"/a//b"}}, true},
		{"route with a bad parameter", Handler{APIID: "api_1", Routes: []string{"/a/{b"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.h.Validate()
			if (err != nil) != tt.wantErr {
				t.Errorf("%+v.Validate() = %v; want error %v", tt.h, err, tt.wantErr)
			}
		})
	}
}

func TestAppValidate(t *testing.T) {
	valid := App{OnRedisError: "local", LocalRateFraction: 1}
	tests := []struct {
		name    string
		mod     func(*App)
		wantErr bool
	}{
		{"defaults", func(*App) {}, false},
		{"allow", func(a *App) { a.OnRedisError = "allow" }, false},
		{"deny", func(a *App) { a.OnRedisError = "deny" }, false},
		{"unknown on_redis_error", func(a *App) { a.OnRedisError = "panic" }, true},
		{"fraction zero", func(a *App) { a.LocalRateFraction = 0 }, true},
		{"fraction above one", func(a *App) { a.LocalRateFraction = 1.5 }, true},
		{"fraction a quarter", func(a *App) { a.LocalRateFraction = 0.25 }, false},
		{"negative redis_db", func(a *App) { a.RedisDB = -1 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := valid
			tt.mod(&a)
			err := a.Validate()
			if (err != nil) != tt.wantErr {
				t.Errorf("Validate() of %+v = %v; want error %v", a, err, tt.wantErr)
			}
		})
	}
}
