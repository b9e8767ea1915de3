// Package gatewayproc runs a veil gateway as a child process: started with
// a data directory of its own, waited for until it serves, stopped with
// SIGTERM (Caddy stops its apps, the veil app flushes its events) and
// killed when it does not exit in time. The test environment and the
// benchmarks both run their gateways through it.
package gatewayproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config says what to run.
type Config struct {
	// Binary is the veil binary.
	Binary string
	// Args follow the binary, e.g. gateway run --config caddy.json.
	Args []string
	// Env is added to this process's environment.
	Env []string
	// DataDir holds Caddy's storage (certificates, locks, autosaved
	// config) and the veil app's default spool, through XDG_DATA_HOME and
	// XDG_CONFIG_HOME, set after Env.
	DataDir string
	// Ready are URLs that answer 200 once the gateway serves.
	Ready []string
	// StopTimeout is how long Stop waits after SIGTERM before it kills the
	// process; zero means 15 seconds.
	StopTimeout time.Duration
}

// Process is a running gateway.
type Process struct {
	// Name names it in messages: "veil gateway run".
	Name string

	ready       []string
	stopTimeout time.Duration
	cmd         *exec.Cmd
	out         *SyncBuffer
	exited      chan struct{} // closed when the process has been waited for
	err         error         // its exit error, set before exited closes
	stop        sync.Once
	stopErr     error
}

// Start starts the process; it does not wait for it to serve (WaitReady).
func Start(c Config) (*Process, error) {
	p := &Process{
		Name:        "veil " + strings.Join(c.Args[:min(len(c.Args), 2)], " "),
		ready:       c.Ready,
		stopTimeout: c.StopTimeout,
		out:         &SyncBuffer{},
		exited:      make(chan struct{}),
	}
	if p.stopTimeout == 0 {
		p.stopTimeout = 15 * time.Second
	}
	p.cmd = exec.Command(c.Binary, c.Args...)
	p.cmd.Env = append(append(os.Environ(), c.Env...),
		"XDG_DATA_HOME="+filepath.Join(c.DataDir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(c.DataDir, "config"),
	)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.Name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// ErrExited is returned by WaitReady when the process ended before it
// served.
var ErrExited = errors.New("exited before it was ready")

// Probe returns nil when every ready URL answers 200 and check, when not
// nil, returns nil; ErrExited (with the exit error and output) when the
// process has ended.
func (p *Process) Probe(client *http.Client, check func() error) error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s %w: %v\n%s", p.Name, ErrExited, p.err, p.Output())
	default:
	}
	for _, u := range p.ready {
		resp, err := client.Get(u)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s = %d; want 200", u, resp.StatusCode)
		}
	}
	if check != nil {
		return check()
	}
	return nil
}

// WaitReady polls Probe every 20 ms until it passes, the process exits, ctx
// ends or timeout passes.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration, check func() error) error {
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		err := p.Probe(client, check)
		if err == nil || errors.Is(err, ErrExited) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not serve after %s: %w\n%s", p.Name, timeout, err, p.Output())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and kills the process if it has not exited within the
// stop timeout. It reports an unclean exit; stopping a stopped process
// returns what the first Stop did.
func (p *Process) Stop() error {
	p.stop.Do(func() {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			_ = p.cmd.Process.Kill()
		}
		select {
		case <-p.exited:
			p.stopErr = p.err
		case <-time.After(p.stopTimeout):
			_ = p.cmd.Process.Kill()
			<-p.exited
			p.stopErr = fmt.Errorf("did not exit within %s of SIGTERM; killed", p.stopTimeout)
		}
	})
	return p.stopErr
}

// Pid is the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output returns what the process wrote so far to stdout and stderr
// (Caddy's JSON logs).
func (p *Process) Output() string { return p.out.String() }

// ReadyURLs are the URLs the process is ready at.
func (p *Process) ReadyURLs() []string { return p.ready }

// FreeLoopbackAddr returns a loopback address, host:port, whose port was
// free a moment ago: for a child process or a server to listen on.
func FreeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads: a
// child process's output or a logger's, read while written. The zero
// value is ready to use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

var _ io.Writer = (*SyncBuffer)(nil)

// Write appends p to the buffer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
