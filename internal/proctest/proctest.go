// Package proctest runs parts of a test binary as separate processes, for
// tests of behaviour across processes (which -race cannot see, since the
// memory is shared through mappings, not the Go heap).
//
// A test package's TestMain calls Main with its children; a test starts one
// with Start, talks to it line by line over its stdin and stdout, and kills
// or waits for it.
package proctest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const envChild = "MAPSTORE_TEST_CHILD"

// Main runs the child named by the environment, if any, and exits with
// its status; otherwise it runs the tests.
func Main(m *testing.M, children map[string]func(args []string) int) {
	if name := os.Getenv(envChild); name != "" {
		f, ok := children[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "proctest: no child %q\n", name)
			os.Exit(3)
		}
		os.Exit(f(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// Child is a running child process.
type Child struct {
	t      testing.TB
	Cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *strings.Builder
	errw   *lockedWriter
	done   chan struct{}
	once   sync.Once
	err    error
}

// Start runs the child name with args, as a new process of this test binary.
func Start(t testing.TB, name string, args ...string) *Child {
	t.Helper()
	return StartCmd(t, Command(name, args...))
}

// Command builds the command for child name, to adjust before StartCmd.
func Command(name string, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), envChild+"="+name)
	return cmd
}

// StartCmd starts a command built by Command.
func StartCmd(t testing.TB, cmd *exec.Cmd) *Child {
	t.Helper()
	c := &Child{t: t, Cmd: cmd, stderr: &strings.Builder{}, done: make(chan struct{})}
	var err error
	if c.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.out = bufio.NewReader(out)
	c.errw = &lockedWriter{b: c.stderr}
	cmd.Stderr = c.errw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.waitDone()
	})
	return c
}

type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (c *Child) waitDone() chan struct{} {
	c.once.Do(func() {
		go func() {
			c.err = c.Cmd.Wait()
			close(c.done)
		}()
	})
	return c.done
}

// Send writes one line to the child's stdin.
func (c *Child) Send(format string, args ...any) {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.in, format+"\n", args...); err != nil {
		c.t.Fatalf("send to child: %v; stderr: %s", err, c.Stderr())
	}
}

// Expect reads one line from the child's stdout (within 30 s) and fails the
// test unless it starts with prefix. It returns the rest of the line.
func (c *Child) Expect(prefix string) string {
	c.t.Helper()
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		l, err := c.out.ReadString('\n')
		ch <- res{strings.TrimRight(l, "\n"), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			c.t.Fatalf("child: reading line %q: %v; stderr: %s", prefix, r.err, c.Stderr())
		}
		if !strings.HasPrefix(r.line, prefix) {
			c.t.Fatalf("child said %q, want prefix %q; stderr: %s", r.line, prefix, c.Stderr())
		}
		return strings.TrimSpace(strings.TrimPrefix(r.line, prefix))
	case <-time.After(30 * time.Second):
		c.t.Fatalf("child: no line %q within 30s; stderr: %s", prefix, c.Stderr())
	}
	return ""
}

// Kill sends SIGKILL and waits for the process to be gone.
func (c *Child) Kill() {
	_ = c.Cmd.Process.Signal(syscall.SIGKILL)
	<-c.waitDone()
}

// Exited reports whether the process has ended (on its own, or killed),
// without waiting.
func (c *Child) Exited() bool {
	select {
	case <-c.waitDone():
		return true
	default:
		return false
	}
}

// Wait closes stdin and waits for the child to exit, returning its exit
// code (-1 if killed by a signal).
func (c *Child) Wait() int {
	_ = c.in.Close()
	select {
	case <-c.waitDone():
	case <-time.After(60 * time.Second):
		c.t.Fatalf("child did not exit within 60s; stderr: %s", c.Stderr())
	}
	if c.Cmd.ProcessState == nil {
		return -1
	}
	return c.Cmd.ProcessState.ExitCode()
}

// Stderr is what the child wrote to stderr so far.
func (c *Child) Stderr() string {
	c.errw.mu.Lock()
	defer c.errw.mu.Unlock()
	return c.stderr.String()
}

// Lines reads lines from stdin, for a child's command loop.
func Lines() *bufio.Scanner { return bufio.NewScanner(os.Stdin) }
