package processors

import "testing"

func TestSeenSet(t *testing.T) {
	s := newSeenSet()
	a, b := keyOf("/src", "1"), keyOf("/src", "2")
	if a == b || keyOf("/sr", "c1") == keyOf("/src", "1") {
		t.Fatal("distinct (source, id) pairs share a key")
	}
	s.add(a, 10, 100)
	s.add(a, 5, 100) // an earlier offset wins
	s.add(a, 20, 100)
	if off, ok := s.lookup(a); !ok || off != 5 {
		t.Fatalf("lookup(a) = %d, %v; want 5, true", off, ok)
	}
	s.add(b, 11, 50)
	if n := s.prune(60); n != 1 || s.len() != 1 {
		t.Fatalf("prune(60) dropped %d, left %d; want 1 and 1", n, s.len())
	}
	if _, ok := s.lookup(b); ok {
		t.Fatal("pruned entry still found")
	}
}
