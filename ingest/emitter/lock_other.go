//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package emitter

import (
	"fmt"
	"io"
	"os"
)

// lockDir only creates the lock file where flock is unavailable: there the
// caller must make sure one emitter uses a spool directory at a time.
func lockDir(path string) (io.Closer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open spool lock: %w", err)
	}
	return f, nil
}
