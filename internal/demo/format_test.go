package demo

import "testing"

func TestRates(t *testing.T) {
	tests := []struct {
		perSecond, perMinute int
		want                 string
	}{
		{0, 0, "none"},
		{10, 0, "10/s"},
		{0, 600, "600/min"},
		{10, 600, "10/s, 600/min"},
	}
	for _, tt := range tests {
		if got := rates(tt.perSecond, tt.perMinute, "none"); got != tt.want {
			t.Errorf("rates(%d, %d) = %q; want %q", tt.perSecond, tt.perMinute, got, tt.want)
		}
	}
}

func TestContainsPlaintext(t *testing.T) {
	tests := []struct {
		body string
		want bool
	}{
		{`{"id":"k1","masked":"veil_test_ab…wxyz"}`, false},
		{`{"id":"k1","key":""}`, false},
		{`{"id":"k1","key":"veil_test_abc"}`, true},
		{`not json`, false},
	}
	for _, tt := range tests {
		if got := containsPlaintext([]byte(tt.body)); got != tt.want {
			t.Errorf("containsPlaintext(%s) = %t; want %t", tt.body, got, tt.want)
		}
	}
}
