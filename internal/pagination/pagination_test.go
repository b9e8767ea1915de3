package pagination

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestCursorRoundTrip(t *testing.T) {
	c := Cursor{At: time.Date(2026, 11, 26, 23, 0, 0, 123456000, time.UTC), ID: uuid.New()}
	got, err := Decode(c.Encode())
	if err != nil || got != c {
		t.Fatalf("Decode(Encode(%v)) = %v, %v; want the same cursor", c, got, err)
	}
	if start, err := Decode(""); err != nil || start.Time() != nil {
		t.Errorf(`Decode("") = %v, %v; want the start of the list`, start, err)
	}
	for _, bad := range []string{"%%%", "bm8tc2VwYXJhdG9y", "eHx5"} {
		if _, err := Decode(bad); !errors.Is(err, ErrBadCursor) {
			t.Errorf("Decode(%q) = %v; want ErrBadCursor", bad, err)
		}
	}
}

func TestPage(t *testing.T) {
	rows := []int{1, 2, 3, 4}
	pos := func(i int) Cursor { return Cursor{At: time.Unix(int64(i), 0), ID: uuid.Nil} }
	got, next := Page(rows, 3, pos)
	if len(got) != 3 || next != pos(3).Encode() {
		t.Errorf("Page(4 rows, 3) = %v, %q; want 3 rows and the cursor of the third", got, next)
	}
	if got, next := Page(rows[:3], 3, pos); len(got) != 3 || next != "" {
		t.Errorf("Page(3 rows, 3) = %v, %q; want the last page", got, next)
	}
	for in, want := range map[int]int{0: 50, -1: 50, 7: 7, 500: 200} {
		if got := Limit(in); got != want {
			t.Errorf("Limit(%d) = %d; want %d", in, got, want)
		}
	}
}
