// Command supervisor shows a supervisor and worker processes sharing a
// table in a segment under a robust lock, and what happens when a worker
// dies holding it: the durable-IPC scenario of a shared map.
//
// Run with no arguments, it is the supervisor: it creates a 4 MiB POSIX
// shared memory segment holding "shared" (an objects.Mutex and an
// objects.Map[string, int64]) and starts three workers. Each worker
// repeatedly takes the lock and, in one critical section, sets a batch of
// its own keys ("w<id>/<round>/<j>" -> j, in order) in the map. The
// supervisor SIGKILLs worker 0 in the middle of a batch, holding the
// lock, most likely inside a Map call. The next worker to lock gets
// objects.ErrOwnerDied, after the dead worker's unfinished Map call was
// rolled back or finished: it checks the map (every batch is a prefix
// 0..k-1 of its keys, whole for the finished rounds; nothing torn) and
// goes on. The supervisor waits for the others, checks the whole map the
// same way, destroys it, checks that all memory is free, and removes the
// segment.
//
//	go run ./examples/supervisor
//
// It exits with status 0 only if every check held. A worker runs as
//
//	supervisor worker <shm name> <id> <rounds>
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/mapped"
	"github.com/mapstore/mapstore/objects"
)

// Shared is the supervisor's and the workers' state in the segment.
type Shared struct {
	Mu    objects.Mutex
	Table objects.Map[string, int64]
	Died  int64 // the lockers that found the lock's owner dead
}

const (
	workers = 3
	rounds  = 40
	batch   = 200
	long    = 50000 // worker 0's round 10: long enough to be killed in it
)

// key is worker id's key j of its round: zero-padded to 5 digits, so that
// the map's order (by bytes) is the order of j up to long's 50,000 (with 4
// digits "w0/010/10000" sorted between j 1000 and 1001).
func key(id, round, j int) string { return fmt.Sprintf("w%d/%03d/%05d", id, round, j) }

func main() {
	var err error
	role := "supervisor"
	switch {
	case len(os.Args) == 1:
		err = supervise()
	case len(os.Args) == 5 && os.Args[1] == "worker":
		role += " worker " + os.Args[3]
		id, _ := strconv.Atoi(os.Args[3])
		n, _ := strconv.Atoi(os.Args[4])
		err = work(os.Args[2], id, n)
	default:
		err = errors.New("usage: supervisor (no arguments), or supervisor worker <shm name> <id> <rounds>")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, role+": FAILED:", err)
		os.Exit(1)
	}
}

// check verifies the table: for each worker and round, the keys present
// are 0..k-1 of the batch, each holding its j; rounds below a worker's
// last one it touched are whole. It returns how many keys each worker
// has.
func check(t *objects.Map[string, int64]) (map[int]int, error) {
	type wr struct{ id, round int }
	count := map[wr]int{}
	perWorker := map[int]int{}
	prev := ""
	for k, v := range t.All() {
		if k <= prev {
			return nil, fmt.Errorf("keys out of order: %q after %q", k, prev)
		}
		prev = k
		var id, round, j int
		if _, err := fmt.Sscanf(k, "w%d/%d/%d", &id, &round, &j); err != nil {
			return nil, fmt.Errorf("key %q: %v", k, err)
		}
		if int64(j) != *v {
			return nil, fmt.Errorf("key %q holds %d", k, *v)
		}
		c := count[wr{id, round}]
		if j != c {
			return nil, fmt.Errorf("worker %d round %d: key %d present after %d keys, not a prefix", id, round, j, c)
		}
		count[wr{id, round}] = c + 1
		perWorker[id]++
	}
	last := map[int]int{}
	for r := range count {
		last[r.id] = max(last[r.id], r.round)
	}
	for r, c := range count {
		if r.round < last[r.id] && c != batch && !(r.id == 0 && r.round == 10 && c == long) {
			return nil, fmt.Errorf("worker %d round %d has %d keys, and a later round began", r.id, r.round, c)
		}
	}
	walked := 0
	for _, n := range perWorker {
		walked += n
	}
	if t.Len() != walked {
		return nil, fmt.Errorf("the map's length is %d keys, the walk found %d", t.Len(), walked)
	}
	return perWorker, nil
}

func supervise() (err error) {
	name := fmt.Sprintf("mapstore-example-supervisor-%d", os.Getpid())
	_ = shm.Remove(name) // only a dead process with our pid can have left it
	defer func() {
		if rerr := shm.Remove(name); rerr != nil && err == nil {
			err = fmt.Errorf("remove the segment: %w", rerr)
		}
	}()
	seg, err := mapped.Open(shm.Named(name), mapped.CreateOnly, mapped.WithSize(4<<20))
	if err != nil {
		return err
	}
	defer seg.Close()
	sh, err := objects.Construct(seg, "shared", Shared{})
	if err != nil {
		return err
	}
	fmt.Printf("supervisor: created shm:%s with a Mutex and a Map; starting %d workers\n", name, workers)

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var cmds []*exec.Cmd
	var victim *bufio.Reader
	var forward sync.WaitGroup // the goroutines passing workers' lines through
	for id := range workers {
		cmd := exec.Command(exe, "worker", name, strconv.Itoa(id), strconv.Itoa(rounds))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		defer cmd.Process.Kill() // on a failure: no worker outlives the supervisor
		cmds = append(cmds, cmd)
		r := bufio.NewReader(out)
		if id == 0 {
			victim = r
		} else {
			forward.Add(1)
			go func() { // pass the other workers' lines through, to the end
				defer forward.Done()
				for {
					line, err := r.ReadString('\n')
					fmt.Print(line)
					if err != nil {
						return
					}
				}
			}()
		}
	}
	// Worker 0 says when it holds the lock in its 10th round; a moment
	// later it is in the middle of that round's batch of Map calls.
	for {
		line, err := victim.ReadString('\n')
		if err != nil {
			return fmt.Errorf("worker 0 ended before its 10th round: %v", err)
		}
		if strings.HasPrefix(line, "worker 0: round 10 ") {
			break
		}
	}
	time.Sleep(2 * time.Millisecond)
	if err := cmds[0].Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_ = cmds[0].Wait()
	fmt.Printf("supervisor: SIGKILLed worker 0 (pid %d) in its round 10, holding the lock\n", cmds[0].Process.Pid)
	// Every line of the other workers read before Wait closes their pipes.
	forward.Wait()
	for id := 1; id < workers; id++ {
		if err := cmds[id].Wait(); err != nil {
			return fmt.Errorf("worker %d: %w", id, err)
		}
	}

	if err := sh.Mu.Lock(); errors.Is(err, objects.ErrOwnerDied) {
		sh.Died++ // the workers had finished: the supervisor is the next locker
		fmt.Println("supervisor: Lock reported ErrOwnerDied")
	} else if err != nil {
		return err
	}
	per, err := check(&sh.Table)
	_ = sh.Mu.Unlock()
	if err != nil {
		return err
	}
	if sh.Died != 1 {
		return fmt.Errorf("%d lockers found the owner dead, want 1", sh.Died)
	}
	for id := 1; id < workers; id++ {
		if per[id] != rounds*batch {
			return fmt.Errorf("worker %d has %d keys, want %d", id, per[id], rounds*batch)
		}
	}
	if per[0] < 10*batch || per[0] >= 10*batch+long {
		return fmt.Errorf("worker 0 has %d keys, want its 10 whole rounds and part of the 11th", per[0])
	}
	fmt.Printf("supervisor: OK: workers 1 and 2 set all %d keys; worker 0's %d: 10 whole rounds and a prefix of the round it died in (its last Map call rolled back or finished); one locker got ErrOwnerDied\n", rounds*batch, per[0])
	if err := objects.Destroy[Shared](seg, "shared"); err != nil {
		return err
	}
	if !seg.AllMemoryDeallocated() {
		return fmt.Errorf("after destroying the shared state, AllMemoryDeallocated is false (%d bytes free)", seg.FreeMemory())
	}
	if err := seg.CheckSanity(); err != nil {
		return err
	}
	fmt.Println("supervisor: OK: destroyed the shared state (the map, its nodes and keys) and all memory is deallocated")
	if err := seg.Close(); err != nil {
		return err
	}
	fmt.Println("supervisor: all checks passed; removing the segment")
	return nil
}

func work(name string, id, n int) error {
	seg, err := mapped.Open(shm.Named(name), mapped.OpenOnly)
	if err != nil {
		return err
	}
	defer seg.Close()
	sh, err := objects.Find[Shared](seg, "shared")
	if err != nil {
		return err
	}
	for round := range n {
		err := sh.Mu.Lock()
		switch {
		case errors.Is(err, objects.ErrOwnerDied):
			// We hold the lock; the dead owner's unfinished Map call was
			// rolled back (or finished) before Lock returned.
			if _, cerr := check(&sh.Table); cerr != nil {
				_ = sh.Mu.Unlock()
				return fmt.Errorf("after the owner died: %w", cerr)
			}
			sh.Died++
			what := "no Map call was in flight"
			for _, a := range seg.RecoveryReport().Actions {
				if strings.Contains(a, "lane") {
					what = a
				}
			}
			fmt.Printf("worker %d: Lock reported ErrOwnerDied (%s); the map checks out; going on\n", id, what)
		case err != nil:
			return err
		}
		size := batch
		if id == 0 && round == 10 {
			size = long
			fmt.Printf("worker %d: round %d holds the lock\n", id, round)
		}
		for j := range size {
			if err := sh.Table.Set(key(id, round, j), int64(j)); err != nil {
				_ = sh.Mu.Unlock()
				return err
			}
		}
		if err := sh.Mu.Unlock(); err != nil {
			return err
		}
	}
	fmt.Printf("worker %d: done, %d rounds of %d keys\n", id, n, batch)
	return seg.Close()
}
