package planfiles

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A FIFO among the plan files is refused at once: opening it for reading
// would wait for a writer, and the reload with it.
func TestReadDirFIFO(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.yaml"), []byte(validPlan), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "z.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	type result struct {
		srcs []Source
		errs Errors
	}
	done := make(chan result, 1)
	go func() {
		srcs, errs := ReadDir(dir)
		done <- result{srcs, errs}
	}()
	select {
	case r := <-done:
		if len(r.srcs) != 1 || r.srcs[0].Rel != "a.yaml" {
			t.Fatalf("ReadDir sources = %v; want a.yaml", r.srcs)
		}
		if len(r.errs) != 1 || r.errs[0].File != "z.yaml" || !strings.Contains(r.errs[0].Message, "not a regular file") {
			t.Fatalf("ReadDir errors = %v; want z.yaml not a regular file", r.errs)
		}
	case <-time.After(5 * time.Second):
		// Release the blocked open before failing.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		t.Fatal("ReadDir still reading a FIFO after 5s")
	}
}

// A file replaced between its check and its open is refused: by a link to
// outside the directory, by a FIFO, or by another regular file.
func TestReadFileSwapped(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret.yaml")
	if err := os.WriteFile(outside, []byte(validPlan), 0o600); err != nil {
		t.Fatal(err)
	}
	swaps := []struct {
		name string
		swap func(path string) error
		want string
	}{
		{"link to outside", func(path string) error { return os.Symlink(outside, path) }, "open file"},
		{"fifo", func(path string) error { return syscall.Mkfifo(path, 0o600) }, "replaced while being read"},
		{"other file", func(path string) error { return os.WriteFile(path, []byte(validPlan), 0o600) }, "replaced while being read"},
	}
	for _, tc := range swaps {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "target.data"), []byte(validPlan), 0o600); err != nil {
				t.Fatal(err)
			}
			// a.yaml is an allowed link within the directory.
			if err := os.Symlink("target.data", filepath.Join(dir, "a.yaml")); err != nil {
				t.Fatal(err)
			}
			// The replacement is made beside the file and renamed over it,
			// so that it is another file, not the same inode reused.
			beforeOpen = func(path string) {
				if err := tc.swap(path + ".new"); err != nil {
					t.Error(err)
				}
				if err := os.Rename(path+".new", path); err != nil {
					t.Error(err)
				}
			}
			t.Cleanup(func() { beforeOpen = func(string) {} })
			srcs, errs := ReadDir(dir)
			if len(srcs) != 0 || len(errs) != 1 || errs[0].File != "a.yaml" || !strings.Contains(errs[0].Message, tc.want) {
				t.Fatalf("ReadDir = %v, %v; want a.yaml refused (%s)", srcs, errs, tc.want)
			}
		})
	}
}
