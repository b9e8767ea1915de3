package planfiles

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch reloads the directory now and after every change to it, until ctx
// ends. It watches the directory rather than the files: editors and
// configuration tools replace a file by renaming a new one over it, which
// a watch on the old file would miss. Changes closer together than the
// debounce make one reload. A failed reload is logged and counted by
// Reload; Watch goes on, and the next change retries.
func (l *Loader) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch plan directory: %w", err)
	}
	defer w.Close()
	if err := w.Add(l.cfg.Dir); err != nil {
		return fmt.Errorf("watch plan directory %s: %w", l.cfg.Dir, err)
	}
	_, _ = l.Reload(ctx)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if relevant(ev.Name) {
				timer.Reset(l.cfg.Debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflow of the kernel's queue loses events: reload
			// to be sure nothing was missed.
			l.log.WarnContext(ctx, "plan directory watch error; reloading", "error", err)
			timer.Reset(l.cfg.Debounce)
		case <-timer.C:
			_, _ = l.Reload(ctx)
		}
	}
}

// relevant reports whether a change of name may change the plans: a plan
// file, or one of the ..-prefixed entries through which Kubernetes swaps a
// mounted ConfigMap's files at once.
func relevant(name string) bool {
	base := filepath.Base(name)
	return IsPlanFile(base) || strings.HasPrefix(base, "..")
}
