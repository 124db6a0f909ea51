// Command queue passes messages between processes through a persistent
// message queue in a shared memory segment, and survives the consumer
// being killed: the durable-IPC scenario of a queue.
//
// Run with no arguments, it is the parent: it creates a fixed-size 1 MiB
// POSIX shared memory segment holding the queue "jobs" (objects.Queue:
// 64-byte messages, at most 32 queued) and a ledger (a Mutex and a Vector
// of the sequence numbers received, in order). It starts a producer, which
// sends messages 0..1999 with priorities 0, 1 and 2 (seq % 3), and a
// consumer, which receives them and, under the ledger's Mutex, appends
// each one's number to the ledger. After 700 messages the consumer stops
// inside the ledger's critical section and the parent SIGKILLs it there,
// while the producer goes on (it blocks once the queue is full). A second
// consumer starts: its first Lock of the ledger's Mutex reports
// objects.ErrOwnerDied (the lock was the dead consumer's), and it
// receives the rest. The parent checks that every message was received
// exactly once, in order within each priority, that the queue is empty,
// and removes the segment.
//
//	go run ./examples/queue
//
// It exits with status 0 only if every check held. The children run as
//
//	queue producer|consumer <shm name> [stop-after]
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/mapped"
	"github.com/mapstore/mapstore/objects"
)

const (
	total     = 2000
	stopAfter = 700
	queueName = "jobs"
)

// Ledger is what the consumers record, in the segment.
type Ledger struct {
	Mu   objects.Mutex
	Seen objects.Vector[int64] // sequence numbers, in the order received
}

func main() {
	var err error
	role := "queue"
	switch {
	case len(os.Args) == 1:
		err = parent()
	case len(os.Args) >= 3 && os.Args[1] == "producer":
		role += " producer"
		err = producer(os.Args[2])
	case len(os.Args) >= 3 && os.Args[1] == "consumer":
		role += " consumer"
		stop := -1
		if len(os.Args) == 4 {
			stop, _ = strconv.Atoi(os.Args[3])
		}
		err = consumer(os.Args[2], stop)
	default:
		err = errors.New("usage: queue (no arguments), or queue producer|consumer <shm name> [stop-after]")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, role+": FAILED:", err)
		os.Exit(1)
	}
}

func parent() (err error) {
	name := fmt.Sprintf("mapstore-example-queue-%d", os.Getpid())
	_ = shm.Remove(name) // only a dead process with our pid can have left it
	defer func() {
		if rerr := shm.Remove(name); rerr != nil && err == nil {
			err = fmt.Errorf("remove the segment: %w", rerr)
		}
	}()
	seg, err := mapped.Open(shm.Named(name), mapped.CreateOnly, mapped.WithSize(1<<20), mapped.WithFixedSize())
	if err != nil {
		return err
	}
	defer seg.Close()
	q, err := objects.ConstructQueue(seg, queueName, objects.QueueConfig{MaxMsgSize: 64, MaxMsgs: 32})
	if err != nil {
		return err
	}
	led, err := objects.Construct(seg, "ledger", Ledger{})
	if err != nil {
		return err
	}
	fmt.Printf("parent: created shm:%s with queue %q (%d messages of up to %d bytes)\n", name, queueName, q.Cap(), q.MaxMsgSize())

	prod, _, err := start(false, "producer", name)
	if err != nil {
		return err
	}
	defer prod.Process.Kill() // on a failure: no child outlives the parent
	cons, out, err := start(true, "consumer", name, strconv.Itoa(stopAfter))
	if err != nil {
		return err
	}
	defer cons.Process.Kill()
	if line, err := out.ReadString('\n'); err != nil || line != "stopped\n" {
		return fmt.Errorf("the first consumer did not stop where it should (%q, %v)", line, err)
	}
	if err := cons.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_ = cons.Wait()
	fmt.Printf("parent: SIGKILLed the consumer (pid %d) after %d messages, inside the ledger's critical section; %d messages queued\n", cons.Process.Pid, led.Seen.Len(), q.Len())

	cons2, _, err := start(false, "consumer", name)
	if err != nil {
		return err
	}
	defer cons2.Process.Kill()
	if err := cons2.Wait(); err != nil {
		return fmt.Errorf("second consumer: %w", err)
	}
	if err := prod.Wait(); err != nil {
		return fmt.Errorf("producer: %w", err)
	}

	// Every message exactly once, in order within each priority.
	seen := make([]int, total)
	last := [3]int64{-1, -1, -1}
	for _, s := range led.Seen.Slice() {
		if s < 0 || s >= total {
			return fmt.Errorf("the ledger holds %d, which was never sent", s)
		}
		seen[s]++
		if s <= last[s%3] {
			return fmt.Errorf("message %d (priority %d) came after %d", s, s%3, last[s%3])
		}
		last[s%3] = s
	}
	for s, n := range seen {
		if n != 1 {
			return fmt.Errorf("message %d was received %d times", s, n)
		}
	}
	if q.Len() != 0 {
		return fmt.Errorf("%d messages left in the queue", q.Len())
	}
	fmt.Printf("parent: OK: all %d messages received exactly once, in order within each priority; the queue is empty\n", total)
	fmt.Println("parent: all checks passed; removing the segment")
	return nil
}

// start runs this program as a child with args, its stderr ours; its
// stdout is ours too, or, with pipe, returned for the parent to read.
func start(pipe bool, args ...string) (*exec.Cmd, *bufio.Reader, error) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Stderr = os.Stderr
	var r *bufio.Reader
	if pipe {
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, nil, err
		}
		r = bufio.NewReader(out)
	} else {
		cmd.Stdout = os.Stdout
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	return cmd, r, nil
}

func open(name string) (*mapped.Segment, *objects.Queue, *Ledger, error) {
	seg, err := mapped.Open(shm.Named(name), mapped.OpenOnly)
	if err != nil {
		return nil, nil, nil, err
	}
	q, err := objects.FindQueue(seg, queueName)
	if err != nil {
		seg.Close()
		return nil, nil, nil, err
	}
	led, err := objects.Find[Ledger](seg, "ledger")
	if err != nil {
		seg.Close()
		return nil, nil, nil, err
	}
	return seg, q, led, nil
}

func producer(name string) error {
	seg, q, _, err := open(name)
	if err != nil {
		return err
	}
	defer seg.Close()
	var msg [64]byte
	for s := range total {
		binary.LittleEndian.PutUint64(msg[:], uint64(s))
		if err := q.Send(msg[:8+s%56], uint32(s%3)); err != nil {
			return err
		}
	}
	fmt.Printf("producer: sent %d messages, priorities 0..2\n", total)
	return nil
}

func consumer(name string, stop int) error {
	seg, q, led, err := open(name)
	if err != nil {
		return err
	}
	defer seg.Close()
	buf := make([]byte, q.MaxMsgSize())
	first := true
	for got := 0; ; got++ {
		err := led.Mu.Lock()
		if first && errors.Is(err, objects.ErrOwnerDied) {
			fmt.Printf("consumer: the ledger's lock was held by a consumer that died: %v\n", err)
			err = nil
		}
		first = false
		if err != nil {
			return err
		}
		n := led.Seen.Len()
		if n == total {
			break
		}
		if got == stop {
			fmt.Println("stopped") // the parent kills us here, holding the lock
			for {
				// Not select{}: with every goroutine blocked, the runtime
				// would end the process itself ("deadlock") before the
				// parent's SIGKILL.
				time.Sleep(time.Hour)
			}
		}
		m, _, err := q.Receive(buf)
		if err != nil {
			return err
		}
		if m < 8 {
			return fmt.Errorf("a message of %d bytes", m)
		}
		if err := led.Seen.Append(int64(binary.LittleEndian.Uint64(buf))); err != nil {
			return err
		}
		if err := led.Mu.Unlock(); err != nil {
			return err
		}
	}
	fmt.Printf("consumer: the ledger holds all %d messages\n", total)
	return led.Mu.Unlock()
}
