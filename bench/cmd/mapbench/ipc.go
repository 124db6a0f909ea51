package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/mapped"
	"github.com/mapstore/mapstore/objects"
)

// The durable-IPC cases (issue 15): an uncontended objects.Mutex (heap:
// sync.Mutex, the floor), and 64-byte messages between two processes
// through objects.Queue. The second process is this program again,
// started with -child (see ipcChild).

const (
	mutexN      = 10_000_000
	pingpongN   = 100_000
	throughputN = 1_000_000
	queueCap    = 1024
	msgSize     = 64
)

type mutexFix struct {
	Mu    objects.Mutex
	Count int64
}

func mutexLockUnlock(e env) (int, time.Duration, error) {
	if e.seg == nil {
		var mu sync.Mutex
		count := 0
		start := time.Now()
		for i := 0; i < mutexN; i++ {
			mu.Lock()
			count++
			mu.Unlock()
		}
		d := time.Since(start)
		if count != mutexN {
			return 0, 0, fmt.Errorf("count %d", count)
		}
		return mutexN, d, nil
	}
	m, err := objects.Construct(e.seg, "mutex", mutexFix{})
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	for i := 0; i < mutexN; i++ {
		if err := m.Mu.Lock(); err != nil {
			return 0, 0, err
		}
		m.Count++
		if err := m.Mu.Unlock(); err != nil {
			return 0, 0, err
		}
	}
	d := time.Since(start)
	if m.Count != mutexN {
		return 0, 0, fmt.Errorf("count %d", m.Count)
	}
	return mutexN, d, nil
}

// childProc is the other process of a two-process case: this program,
// started with -child.
type childProc struct {
	*exec.Cmd
	out *bufio.Reader  // its stdout, read up to and including "ready"
	in  io.WriteCloser // its stdin
}

// startChild starts this program as the other process of case name on
// the segment in b, and waits until it says it is ready.
func startChild(name string, b backing.Backing, n int) (*childProc, error) {
	cmd := exec.Command(os.Args[0], "-child", name, "-seg", b.Name(), "-n", strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &childProc{Cmd: cmd, out: bufio.NewReader(out), in: in}
	line, err := c.out.ReadString('\n')
	if err != nil || line != "ready\n" {
		c.stop()
		return nil, fmt.Errorf("child %s: %q, %v", name, line, err)
	}
	return c, nil
}

// stop kills the child and waits for it, on a failure of this side.
func (c *childProc) stop() {
	_ = c.Process.Kill()
	_ = c.Wait()
}

// queuePingpong64: a round trip of a 64-byte message, through a queue to
// the child and back through another.
func queuePingpong64(e env) (int, time.Duration, error) {
	ping, err := objects.ConstructQueue(e.seg, "ping", objects.QueueConfig{MaxMsgSize: msgSize, MaxMsgs: queueCap})
	if err != nil {
		return 0, 0, err
	}
	pong, err := objects.ConstructQueue(e.seg, "pong", objects.QueueConfig{MaxMsgSize: msgSize, MaxMsgs: queueCap})
	if err != nil {
		return 0, 0, err
	}
	cmd, err := startChild("queue_pingpong_64", e.b, pingpongN)
	if err != nil {
		return 0, 0, err
	}
	msg, buf := make([]byte, msgSize), make([]byte, msgSize)
	start := time.Now()
	for i := 0; i < pingpongN; i++ {
		msg[0] = byte(i)
		if err := ping.Send(msg, 0); err != nil {
			return 0, 0, err
		}
		n, _, err := pong.Receive(buf)
		if err != nil {
			return 0, 0, err
		}
		if n != msgSize || buf[0] != byte(i) {
			return 0, 0, fmt.Errorf("round trip %d came back as %d bytes starting %d", i, n, buf[0])
		}
	}
	d := time.Since(start)
	if err := cmd.Wait(); err != nil {
		return 0, 0, err
	}
	return pingpongN, d, nil
}

// queueThroughput64: the child sends 1e6 64-byte messages through a queue
// of 1024; the parent receives them. Per message.
func queueThroughput64(e env) (int, time.Duration, error) {
	q, err := objects.ConstructQueue(e.seg, "stream", objects.QueueConfig{MaxMsgSize: msgSize, MaxMsgs: queueCap})
	if err != nil {
		return 0, 0, err
	}
	cmd, err := startChild("queue_throughput_64", e.b, throughputN)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now() // from the child's first send on
	buf := make([]byte, msgSize)
	sum := 0
	for i := 0; i < throughputN; i++ {
		n, _, err := q.Receive(buf)
		if err != nil {
			return 0, 0, err
		}
		sum += n
	}
	d := time.Since(start)
	if sum != throughputN*msgSize {
		return 0, 0, fmt.Errorf("received %d bytes", sum)
	}
	return throughputN, d, cmd.Wait()
}

// ipcChild is the second process of a queue case or of
// alloc_free_64_2procs.
func ipcChild(name, seg string, n int) error {
	var b backing.Backing = file.Path(seg)
	if s, ok := strings.CutPrefix(seg, "shm:"); ok {
		b = shm.Named(s)
	}
	s, err := mapped.Open(b, mapped.OpenOnly)
	if err != nil {
		return err
	}
	defer s.Close()
	buf := make([]byte, msgSize)
	switch name {
	case allocProcsCase:
		return allocProcsChild(s, n)
	case "queue_pingpong_64":
		ping, err := objects.FindQueue(s, "ping")
		if err != nil {
			return err
		}
		pong, err := objects.FindQueue(s, "pong")
		if err != nil {
			return err
		}
		fmt.Println("ready")
		for i := 0; i < n; i++ {
			m, _, err := ping.Receive(buf)
			if err != nil {
				return err
			}
			if err := pong.Send(buf[:m], 0); err != nil {
				return err
			}
		}
	case "queue_throughput_64":
		q, err := objects.FindQueue(s, "stream")
		if err != nil {
			return err
		}
		fmt.Println("ready")
		for i := 0; i < n; i++ {
			buf[0] = byte(i)
			if err := q.Send(buf, 0); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("no child %q", name)
	}
	return nil
}
