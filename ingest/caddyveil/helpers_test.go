package caddyveil

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRelPath(t *testing.T) {
	tests := []struct {
		prefix, path, want string
	}{
		{"/weather", "/weather/forecast/paris", "/forecast/paris"},
		{"/weather", "/weather/", "/"},
		{"/weather", "/weather", "/"},
		{"/weather", "/WEATHER/alerts", "/alerts"}, // Caddy's path matcher is case-insensitive
		{"/weather", "/other/alerts", "/other/alerts"},
		{"/weather", "/", "/"},
		{"/weather", "", "/"},
		{"/a/b", "/a/b/c", "/c"},
		{"", "/forecast/paris", "/forecast/paris"},
		{"", "", "/"},
		{"", "forecast", "/forecast"},
	}
	for _, tt := range tests {
		h := &Handler{PathPrefix: tt.prefix}
		if got := h.relPath(tt.path); got != tt.want {
			t.Errorf("Handler{PathPrefix: %q}.relPath(%q) = %q; want %q", tt.prefix, tt.path, got, tt.want)
		}
	}
}

func TestTemplate(t *testing.T) {
	h := &Handler{Routes: []string{"/forecast/{city}", "/alerts", "/files/*", "/forecast/{city}/hourly"}}
	tests := []struct{ rel, want string }{
		{"/forecast/paris", "/forecast/{city}"},
		{"/forecast/paris/hourly", "/forecast/{city}/hourly"},
		{"/alerts", "/alerts"},
		{"/files/", "/files/*"},
		{"/files/a/b", "/files/*"},
		{"/forecast/", "/*"},
		{"/forecast", "/*"},
		{"/alerts/x", "/*"},
		{"/forecast/../alerts", "/*"}, // dot segments match nothing
		{"/", "/*"},
	}
	for _, tt := range tests {
		if got := h.template(tt.rel); got != tt.want {
			t.Errorf("template(%q) = %q; want %q", tt.rel, got, tt.want)
		}
	}
	if got := (&Handler{}).template("/anything"); got != "/*" {
		t.Errorf("template(%q) without routes = %q; want /*", "/anything", got)
	}
}

// TestExtractAndStripKey checks where the key is read from and that the
// request passed on no longer carries it, while everything else stays.
func TestExtractAndStripKey(t *testing.T) {
	const key = "veil_test_0abc"
	tests := []struct {
		name       string
		param      string // KeyQueryParam
		target     string
		header     http.Header
		wantKey    string
		wantHeader http.Header // after stripKey; nil = empty
		wantQuery  string      // RawQuery after stripKey
	}{
		{
			name: "bearer", target: "/x",
			header:  http.Header{"Authorization": {"Bearer " + key}},
			wantKey: key,
		},
		{
			name: "bearer in lower case with spaces", target: "/x",
			header:  http.Header{"Authorization": {"bearer   " + key + " "}},
			wantKey: key,
		},
		{
			name: "x-api-key", target: "/x",
			header:  http.Header{"X-Api-Key": {" " + key}},
			wantKey: key,
		},
		{
			name: "bearer wins over x-api-key, both removed", target: "/x",
			header:  http.Header{"Authorization": {"Bearer " + key}, "X-Api-Key": {"other"}},
			wantKey: key,
		},
		{
			name: "basic auth is not a key and is passed on", target: "/x",
			header:     http.Header{"Authorization": {"Basic dTpw"}, "X-Api-Key": {key}},
			wantKey:    key,
			wantHeader: http.Header{"Authorization": {"Basic dTpw"}},
		},
		{
			name: "empty bearer", target: "/x",
			header:     http.Header{"Authorization": {"Bearer "}},
			wantKey:    "",
			wantHeader: http.Header{"Authorization": {"Bearer "}},
		},
		{
			name: "query parameter", param: "api_key", target: "/x?units=metric&api_key=" + key,
			wantKey: key, wantQuery: "units=metric",
		},
		{
			name: "query parameter alone", param: "api_key", target: "/x?api_key=" + key,
			wantKey: key, wantQuery: "",
		},
		{
			name: "header wins over query parameter, both removed", param: "api_key", target: "/x?api_key=other&a=1",
			header:  http.Header{"X-Api-Key": {key}},
			wantKey: key, wantQuery: "a=1",
		},
		{
			name: "query parameter not configured", target: "/x?api_key=" + key,
			wantKey: "", wantQuery: "api_key=" + key,
		},
		{
			name: "other query parameter", param: "api_key", target: "/x?key=" + key,
			wantKey: "", wantQuery: "key=" + key,
		},
		{
			name: "other headers stay", target: "/x",
			header:     http.Header{"X-Api-Key": {key}, "Accept": {"application/json"}},
			wantKey:    key,
			wantHeader: http.Header{"Accept": {"application/json"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{KeyQueryParam: tt.param}
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			for k, v := range tt.header {
				r.Header[k] = v
			}
			if got := h.extractKey(r); got != tt.wantKey {
				t.Errorf("extractKey(%s %v) = %q; want %q", tt.target, tt.header, got, tt.wantKey)
			}
			h.stripKey(r)
			want := tt.wantHeader
			if want == nil {
				want = http.Header{}
			}
			if !equalHeader(r.Header, want) {
				t.Errorf("header after stripKey = %v; want %v", r.Header, want)
			}
			wantQuery := tt.wantQuery
			if tt.param == "" && tt.wantQuery == "" {
				_, wantQuery, _ = strings.Cut(tt.target, "?")
			}
			if r.URL.RawQuery != wantQuery {
				t.Errorf("query after stripKey = %q; want %q", r.URL.RawQuery, wantQuery)
			}
			if want := r.URL.RequestURI(); r.RequestURI != want {
				t.Errorf("RequestURI after stripKey = %q; want %q", r.RequestURI, want)
			}
			if got := h.extractKey(r); got != "" && tt.wantKey != "" {
				t.Errorf("extractKey after stripKey = %q; want no key", got)
			}
		})
	}
}

func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if strings.Join(v, "\x00") != strings.Join(b[k], "\x00") {
			return false
		}
	}
	return true
}

func TestEventMethod(t *testing.T) {
	tests := []struct{ in, want string }{
		{"GET", "GET"},
		{"POST", "POST"},
		{"PROPFIND", "PROPFIND"},
		{"ABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOP"}, // 16 letters
		{"ABCDEFGHIJKLMNOPQ", "OTHER"},           // 17
		{"get", "OTHER"},
		{"M-SEARCH", "OTHER"},
		{"GET2", "OTHER"},
		{"", "OTHER"},
		{"GÉT", "OTHER"},
	}
	for _, tt := range tests {
		if got := eventMethod(tt.in); got != tt.want {
			t.Errorf("eventMethod(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 3, "abc"},
		{"abcd", 3, "abc"},
		{"aé", 2, "a"}, // é is two bytes: not cut in half
		{"é", 1, ""},
		{"a€b", 3, "a"},
		{"a€b", 4, "a€"},
	}
	for _, tt := range tests {
		if got := truncate(tt.s, tt.n); got != tt.want {
			t.Errorf("truncate(%q, %d) = %q; want %q", tt.s, tt.n, got, tt.want)
		}
	}
}
