//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package emitter

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// lockDir takes an exclusive advisory lock on path, so that two emitters
// (two processes, or an old and a new Caddy config) never share a spool: one
// would delete segments the other is still writing.
func lockDir(path string) (io.Closer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open spool lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock spool dir: %w", ErrSpoolLocked)
		}
		return nil, fmt.Errorf("lock spool dir: %w", err)
	}
	return f, nil
}
