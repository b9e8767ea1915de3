package emitter

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/veil-platform/veil/internal/testenv"
)

// openTestSpool opens the spool in dir with 1 MiB segments, a 1 GiB cap
// and an fsync after every record.
func openTestSpool(t *testing.T, dir string) *spool {
	t.Helper()
	sp, err := openSpool(dir, 1<<20, 1<<30, fsyncAlways, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// writeSpool appends n records "k<i>"/"v<i>" to a fresh spool in dir and
// closes it, returning the path of its only segment.
func writeSpool(t *testing.T, dir string, n int) string {
	t.Helper()
	sp := openTestSpool(t, dir)
	for i := range n {
		if err := sp.append(fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	path := sp.active.path
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// readSpool reopens dir and returns the values replay would send.
func readSpool(t *testing.T, dir string) []string {
	t.Helper()
	sp := openTestSpool(t, dir)
	defer sp.close()
	var got []string
	for {
		key, value, _, _, ok := sp.next()
		if !ok {
			return got
		}
		if want := "k" + string(value[1:]); string(key) != want {
			t.Fatalf("record %s has key %s; want %s", value, key, want)
		}
		got = append(got, string(value))
	}
}

func values(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("v%d", i))
	}
	return out
}

// TestSpoolIgnoresDamagedTail damages the end of a segment the way a crash
// or a bad disk would and checks that every intact record before the
// damage still replays.
func TestSpoolIgnoresDamagedTail(t *testing.T) {
	const n = 10
	// Each frame: 8 header bytes, 1 key-length byte, "kN", "vN".
	const frame = frameHeaderLen + 1 + 2 + 2
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   []string
	}{
		{"intact", func(*testing.T, string) {}, values(0, n)},
		{"last record cut by 1 byte", truncateBy(1), values(0, n-1)},
		{"last record cut by 3 bytes", truncateBy(3), values(0, n-1)},
		{"only the last header left", truncateBy(frame - frameHeaderLen), values(0, n-1)},
		{"last header cut", truncateBy(frame - 2), values(0, n-1)},
		{"last record gone exactly", truncateBy(frame), values(0, n-1)},
		{"zeros after the last record", appendBytes(make([]byte, 4096)), values(0, n)},
		{"garbage after the last record", appendBytes([]byte("not a frame at all")), values(0, n)},
		{"bit flip in record 7", flipByte(headerLen + 7*frame + frameHeaderLen + 2), values(0, 7)},
		{"header only", truncateTo(headerLen), nil},
		{"header cut", truncateTo(3), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := writeSpool(t, dir, n)
			tt.damage(t, path)
			if got := readSpool(t, dir); !slices.Equal(got, tt.want) {
				t.Fatalf("replay after damage = %v; want %v", got, tt.want)
			}
		})
	}
}

func truncateBy(n int64) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		truncateTo(st.Size()-n)(t, path)
	}
}

func truncateTo(size int64) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
	}
}

func appendBytes(b []byte) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
}

func flipByte(off int64) func(*testing.T, string) {
	return func(t *testing.T, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[off] ^= 0x40
		if err := os.WriteFile(path, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSpoolResumesAtProgress acknowledges part of a segment, saves progress,
// reopens the spool and checks that replay resumes after the acknowledged
// records, and that a damaged progress file replays the whole segment.
func TestSpoolResumesAtProgress(t *testing.T) {
	dir := t.TempDir()
	path := writeSpool(t, dir, 10)

	sp := openTestSpool(t, dir)
	for range 4 {
		_, _, seg, end, ok := sp.next()
		if !ok {
			t.Fatal("spool ended early")
		}
		sp.acked(seg, end)
	}
	sp.next() // read, never acknowledged: must replay again
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
	if got := readSpool(t, dir); !slices.Equal(got, values(4, 10)) {
		t.Fatalf("replay after progress = %v; want %v", got, values(4, 10))
	}

	pos := filepath.Join(dir, filepath.Base(path[:len(path)-len(segmentExt)])+progressExt)
	flipByte(3)(t, pos)
	if got := readSpool(t, dir); !slices.Equal(got, values(0, 10)) {
		t.Fatalf("replay with a damaged progress file = %v; want %v", got, values(0, 10))
	}
}

// TestSpoolRemovesAcknowledgedSegments checks that a segment goes away once
// all its records are acknowledged, and not before.
func TestSpoolRemovesAcknowledgedSegments(t *testing.T) {
	dir := t.TempDir()
	path := writeSpool(t, dir, 3)
	sp := openTestSpool(t, dir)
	defer sp.close()
	type read struct {
		seg *segment
		end int64
	}
	var reads []read
	for {
		_, _, seg, end, ok := sp.next()
		if !ok {
			break
		}
		reads = append(reads, read{seg, end})
	}
	for i, r := range reads {
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("segment gone after %d of %d acknowledgements: %v", i, len(reads), err)
		}
		sp.acked(r.seg, r.end)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("stat segment after all acknowledgements = %v; want not exist", err)
	}
	if !sp.empty() || sp.bytes != 0 {
		t.Fatalf("spool after all acknowledgements: %d segments, %d bytes; want none", len(sp.segs), sp.bytes)
	}
}
