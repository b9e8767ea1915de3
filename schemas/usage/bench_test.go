package usage_test

import (
	"testing"

	"github.com/veil-platform/veil/schemas/usage"
)

func BenchmarkDecode(b *testing.B) {
	raw := []byte(with(func(map[string]any) {}))
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := usage.Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalJSON(b *testing.B) {
	e, err := usage.Decode([]byte(with(func(map[string]any) {})))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}
