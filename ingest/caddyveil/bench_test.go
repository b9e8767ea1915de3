package caddyveil

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// BenchmarkAppendEvent measures the encoding of one admitted call's usage
// event, the part of every request's hot path that is the gateway's own.
func BenchmarkAppendEvent(b *testing.B) {
	h := &Handler{APIID: "api_weather", app: &App{Source: "/gateway/bench"}}
	r := httptest.NewRequest("GET", "/weather/forecast/paris", nil)
	c := call{
		start:    time.Now(),
		keyID:    "key_0123456789abcdef",
		subject:  "0b6f8a52-3c1e-4b7a-9f2d-5e8c1a4d7b90",
		route:    "/forecast/{city}",
		rel:      "/forecast/paris",
		status:   200,
		reqBytes: 0,
		resBytes: 512,
		units:    decimal.NewFromInt(1),
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = h.appendEvent(buf[:0], r, &c)
	}
	b.SetBytes(int64(len(buf)))
}
