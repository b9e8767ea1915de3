package planfiles

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// The bounds of a plan directory: a file is a plan, not a data dump, and a
// directory is a catalogue of plans, not an archive.
const (
	MaxFileSize = 1 << 20
	MaxFiles    = 500
)

// Source is one plan file as read.
type Source struct {
	// Rel is the file's path relative to the directory: what
	// plans.source_file records.
	Rel     string
	Content []byte
	// Hash is the SHA-256 of Content, in hex.
	Hash string
}

// IsPlanFile reports whether a directory entry's name is a plan file:
// *.yaml or *.yml, not hidden (editors' swap and backup files are).
func IsPlanFile(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	ext := filepath.Ext(name)
	return ext == ".yaml" || ext == ".yml"
}

// ReadDir reads the plan files at the top of dir, in name order. A file
// that cannot be read, is too large, is not a regular file, or is a
// symbolic link that leads out of dir is an error for that file; too many
// files is an error of the directory.
func ReadDir(dir string) ([]Source, Errors) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, Errors{{File: dir, Message: fmt.Sprintf("read plan directory: %v", err)}}
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, Errors{{File: dir, Message: fmt.Sprintf("read plan directory: %v", err)}}
	}
	var names []string
	for _, e := range entries {
		if IsPlanFile(e.Name()) && !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if len(names) > MaxFiles {
		return nil, Errors{{File: dir, Message: fmt.Sprintf("%d plan files; at most %d", len(names), MaxFiles)}}
	}
	var out []Source
	var errs Errors
	for _, name := range names {
		src, err := readFile(root, name)
		if err != nil {
			errs = append(errs, Error{File: name, Message: err.Error()})
			continue
		}
		out = append(out, src)
	}
	return out, errs
}

// readFile reads the plan file name of root. A symbolic link is resolved
// first and must stay within root; what is opened is then the resolved
// path, without following a link, so a link swapped after the check is
// refused rather than followed.
func readFile(root, name string) (Source, error) {
	path := filepath.Join(root, name)
	lst, err := os.Lstat(path)
	if err != nil {
		return Source{}, fmt.Errorf("stat file: %w", err)
	}
	if lst.Mode()&os.ModeSymlink != 0 {
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			return Source{}, fmt.Errorf("resolve file: %w", err)
		}
		if rel, err := filepath.Rel(root, real); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return Source{}, fmt.Errorf("a symbolic link that leads out of the plan directory, to %s: refused", real)
		}
		path = real
	}
	content, err := readRegular(path)
	if err != nil {
		return Source{}, err
	}
	return NewSource(name, content), nil
}

// ReadFile reads one plan file named by the user (veil pricing validate):
// a symbolic link is followed, the file must be regular and within
// MaxFileSize, as in a plan directory. The source is named by path.
func ReadFile(path string) (Source, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return Source{}, fmt.Errorf("resolve file: %w", err)
	}
	content, err := readRegular(real)
	if err != nil {
		return Source{}, err
	}
	return NewSource(path, content), nil
}

// readRegular reads a regular file that is not a symbolic link. The mode is
// checked before the open, since opening a FIFO for reading waits for a
// writer; the open neither waits (O_NONBLOCK) nor follows a link
// (O_NOFOLLOW), and the opened file must be the one checked, so a file
// swapped in between is refused. The read is bounded.
func readRegular(path string) ([]byte, error) {
	lst, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("stat file: %w", err)
	}
	if !lst.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	beforeOpen(path)
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat file: %w", err)
	}
	if !st.Mode().IsRegular() || !os.SameFile(lst, st) {
		return nil, errors.New("replaced while being read: not the regular file checked")
	}
	// Read one byte past the bound: the size of a file being written may
	// change between Stat and Read.
	content, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read file: %w", err)
	}
	if len(content) > MaxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxFileSize)
	}
	return content, nil
}

// beforeOpen runs between readRegular's check and its open; tests swap the
// file there.
var beforeOpen = func(string) {}

// NewSource is a plan file's content under its relative path.
func NewSource(rel string, content []byte) Source {
	sum := sha256.Sum256(content)
	return Source{Rel: rel, Content: content, Hash: hex.EncodeToString(sum[:])}
}

// ParseAll parses every source and checks what concerns several files: two
// files may not declare the same plan, nor the same meter of an API with
// different definitions.
func ParseAll(sources []Source) ([]*Plan, Errors) {
	var plans []*Plan
	var errs Errors
	for _, s := range sources {
		p, es := Parse(s.Rel, s.Content)
		errs = append(errs, es...)
		if p != nil {
			plans = append(plans, p)
		}
	}
	errs = append(errs, crossCheck(plans)...)
	errs.sort()
	return plans, errs
}

func crossCheck(plans []*Plan) Errors {
	var errs Errors
	declared := map[string]string{}
	type meterAt struct {
		plan *Plan
		i    int
	}
	meters := map[string]meterAt{}
	for _, p := range plans {
		key := p.API + "/" + p.Slug
		if other, ok := declared[key]; ok {
			errs = append(errs, Error{File: p.File, Line: p.Line("plan"), Field: "plan",
				Message: fmt.Sprintf("plan %s of API %s is declared by %s too", p.Slug, p.API, other)})
		} else {
			declared[key] = p.File
		}
		for i, m := range p.Meters {
			mkey := p.API + "/" + m.Slug
			prev, ok := meters[mkey]
			if !ok {
				meters[mkey] = meterAt{p, i}
				continue
			}
			if !sameMeter(prev.plan.Meters[prev.i], m) {
				field := fmt.Sprintf("meters[%d]", i)
				errs = append(errs, Error{File: p.File, Line: p.Line(field), Field: field,
					Message: fmt.Sprintf("meter %q of API %s is defined differently in %s", m.Slug, p.API, prev.plan.File)})
			}
		}
	}
	return errs
}
