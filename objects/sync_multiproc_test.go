package objects

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/internal/proctest"
	"github.com/mapstore/mapstore/mapped"
)

// The synchronisation primitives across processes: children of this
// test binary (the "sync" child, whose first argument says what it does)
// open the segment named by a spec ("file:PATH" or "shm:NAME") and use
// the syncFix named "fix" in it.

// syncFix is what the multi-process tests share. Vec always holds
// consecutive numbers (v[i+1] == v[i]+1) between calls: the children
// change it under a lock with calls that keep that so (lanes), and are
// killed in the middle.
type syncFix struct {
	Mu     Mutex
	RW     RWMutex
	Cond   Cond
	Sem    Semaphore
	Count  int64
	Tokens int64
	Got    int64
	Vec    Vector[int64]
}

func syncFixture(t *testing.T, spec string) (*mapped.Segment, *syncFix) {
	t.Helper()
	seg, err := kOpenSpec(spec, mapped.CreateOnly, mapped.WithSize(4<<20))
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	fx, err := Construct(seg, "fix", syncFix{})
	require.NoError(t, err)
	fx.Cond.L.Set(&fx.Mu)
	require.NoError(t, fx.Vec.Append(0))
	return seg, fx
}

// forSyncKinds runs f on a file and on a shared memory segment.
func forSyncKinds(t *testing.T, f func(t *testing.T, spec string)) {
	t.Run("file", func(t *testing.T) { f(t, "file:"+t.TempDir()+"/sync.seg") })
	t.Run("shm", func(t *testing.T) {
		name := fmt.Sprintf("mapstore-sync-%d-%d", os.Getpid(), rand.Uint32())
		t.Cleanup(func() { _ = shm.Remove(name) })
		f(t, "shm:"+name)
	})
}

func childSync(args []string) int {
	seg, err := kOpenSpec(args[1], mapped.OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fx, err := Find[syncFix](seg, "fix")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	switch args[0] {
	case "count": // count N G: G goroutines each add 1 to Count N times under Mu
		n, _ := strconv.Atoi(args[2])
		g, _ := strconv.Atoi(args[3])
		// The first Unlock registers for the barrier the plain-store
		// Unlock needs, in the background: wait for it.
		if err := fx.Mu.Lock(); err != nil {
			return fail(err)
		}
		if err := fx.Mu.Unlock(); err != nil {
			return fail(err)
		}
		<-fenceDone
		fmt.Println("ready")
		proctest.Lines().Scan() // go
		var wg sync.WaitGroup
		errs := make(chan error, g)
		for range g {
			wg.Go(func() {
				for range n {
					if err := fx.Mu.Lock(); err != nil {
						errs <- err
						return
					}
					c := fx.Count
					if c%7 == 0 {
						time.Sleep(time.Microsecond) // widen the window a lost exclusion would need
					}
					fx.Count = c + 1
					if err := fx.Mu.Unlock(); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			return fail(err)
		}
		fmt.Println("done", mutexSleeps.Load(), mutexMissed.Load(), fenced.Load())
	case "hold": // hold LOCK: take the lock, say so, wait to be killed
		if err := lockFor(fx, args[2]); err != nil {
			return fail(err)
		}
		fmt.Println("locked")
		proctest.Lines().Scan()
	case "churn": // churn LOCK SEED: take the lock and change Vec under it until killed
		rng := rand.New(rand.NewPCG(uint64(len(args[3])), 9))
		if s, err := strconv.ParseUint(args[3], 10, 64); err == nil {
			rng = rand.New(rand.NewPCG(s, 9))
		}
		if args[2] == "cond" {
			// Take the mutex the parent waits on the condition with,
			// wake the parent (which then waits for the mutex), churn.
			if err := fx.Mu.Lock(); err != nil && !errors.Is(err, ErrOwnerDied) {
				return fail(err)
			}
			fx.Tokens++
			fx.Cond.Broadcast()
		} else if err := lockFor(fx, args[2]); err != nil {
			return fail(err)
		}
		fmt.Println("locked")
		for {
			if err := churnVec(&fx.Vec, rng); err != nil {
				return fail(err)
			}
		}
	case "condwait": // condwait G TOTAL: G goroutines take tokens under Mu, waiting on Cond, until TOTAL were taken
		g, _ := strconv.Atoi(args[2])
		total, _ := strconv.ParseInt(args[3], 10, 64)
		var wg sync.WaitGroup
		errs := make(chan error, g)
		for range g {
			wg.Go(func() {
				if err := fx.Mu.Lock(); err != nil {
					errs <- err
					return
				}
				for {
					for fx.Tokens == 0 && fx.Got < total {
						if err := fx.Cond.Wait(); err != nil {
							errs <- err
							return
						}
					}
					if fx.Got == total {
						break
					}
					fx.Tokens--
					if fx.Got++; fx.Got == total {
						fx.Cond.Broadcast() // the others stop
					}
				}
				if err := fx.Mu.Unlock(); err != nil {
					errs <- err
				}
			})
		}
		fmt.Println("ready")
		wg.Wait()
		close(errs)
		for err := range errs {
			return fail(err)
		}
		fmt.Println("done")
	case "broadcast": // broadcast: with nothing changed by this open before, add a token and Broadcast
		atomic.AddInt64(&fx.Tokens, 1)
		fx.Cond.Broadcast()
		fmt.Println("done")
	default:
		return fail(fmt.Errorf("sync child: unknown command %q", args[0]))
	}
	return 0
}

// lockFor takes the lock named by what; a dead predecessor is no error.
func lockFor(fx *syncFix, what string) error {
	var err error
	switch what {
	case "mutex":
		err = fx.Mu.Lock()
	case "rw-write":
		err = fx.RW.Lock()
	case "rw-read":
		err = fx.RW.RLock()
	default:
		return fmt.Errorf("no lock %q", what)
	}
	if errors.Is(err, ErrOwnerDied) {
		return nil
	}
	return err
}

// churnVec makes one change to v that keeps its numbers consecutive:
// append, insert at the front, delete the front or the back; the inserts
// and deletes run in lanes, appends past the capacity too.
func churnVec(v *Vector[int64], rng *rand.Rand) error {
	s := v.Slice()
	n := len(s)
	switch op := rng.IntN(4); {
	case op == 0 && n < 300:
		return v.Append(s[n-1] + 1)
	case op == 1 && n < 300:
		return v.Insert(0, s[0]-1)
	case op == 2 && n > 1:
		return v.Delete(0, 1)
	case n > 1:
		return v.Truncate(n - 1)
	}
	return v.Append(s[n-1] + 1)
}

// checkVec verifies Vec: non-empty and consecutive.
func checkVec(t *testing.T, v *Vector[int64]) {
	t.Helper()
	s := v.Slice()
	require.NotEmpty(t, s)
	for i := 1; i < len(s); i++ {
		require.Equal(t, s[i-1]+1, s[i], "element %d of %d", i, len(s))
	}
}

// Three processes of four goroutines each add to one counter in the
// segment under the Mutex, with plain loads and stores: the count comes
// out exact.
func TestMutexExclusionAcrossProcesses(t *testing.T) {
	forSyncKinds(t, func(t *testing.T, spec string) {
		seg, fx := syncFixture(t, spec)
		const procs, gs = 3, 4
		n := orShortN(2000, 500)
		var cs []*proctest.Child
		for range procs {
			c := proctest.Start(t, "sync", "count", spec, strconv.Itoa(n), strconv.Itoa(gs))
			c.Expect("ready")
			cs = append(cs, c)
		}
		for _, c := range cs {
			c.Send("go")
		}
		var sleeps, missed int64
		for _, c := range cs {
			var s, m int64
			var fast bool
			_, err := fmt.Sscanf(c.Expect("done"), "%d %d %t", &s, &m, &fast)
			require.NoError(t, err)
			require.Equal(t, 0, c.Wait(), c.Stderr())
			sleeps, missed = sleeps+s, missed+m
			assert.True(t, fast, "the children's Unlocks took the plain-store path")
		}
		assert.Equal(t, int64(procs*gs*n), fx.Count)
		// Unlock's plain store must not lose a sleeper's wake-up: a sleep
		// that times out (20 ms) to find the mutex free is one that did.
		t.Logf("%d sleeps in the futex, %d timed out to find the mutex free", sleeps, missed)
		assert.Positive(t, sleeps, "no process slept: the wake-up path went untested")
		assert.Zero(t, missed, "sleepers missed their wake-ups")
		require.NoError(t, fx.Mu.Lock())
		require.NoError(t, fx.Mu.Unlock())
		require.NoError(t, seg.CheckSanity())
	})
}

func orShortN(n, short int) int {
	if testing.Short() {
		return short
	}
	return n
}

// A process killed holding the Mutex: a waiter in another process gets
// the lock, with ErrOwnerDied, within 100 ms of the death (measured from
// the kill; the bound asserted is generous, for loaded machines).
func TestMutexOwnerDeathHandover(t *testing.T) {
	forSyncKinds(t, func(t *testing.T, spec string) {
		_, fx := syncFixture(t, spec)
		var worst time.Duration
		for range 5 {
			c := proctest.Start(t, "sync", "hold", spec, "mutex")
			c.Expect("locked")
			got := make(chan error, 1)
			var at time.Time
			go func() {
				err := fx.Mu.Lock()
				at = time.Now()
				got <- err
			}()
			time.Sleep(30 * time.Millisecond) // the waiter sleeps in the futex
			start := time.Now()
			c.Kill()
			err := <-got
			require.ErrorIs(t, err, ErrOwnerDied)
			d := at.Sub(start)
			worst = max(worst, d)
			require.NoError(t, fx.Mu.Unlock())
		}
		t.Logf("owner death to handover: worst of 5 %v", worst)
		assert.Less(t, worst, time.Second, "handed over within 100 ms, with a generous bound")
	})
}

// A process killed holding a lock in the middle of changing a container
// under it (often inside a lane): the next locker gets ErrOwnerDied, and
// the container holds a state before or after the cut call.
func TestOwnerDiedWithContainerMidUpdate(t *testing.T) {
	kills := orShortN(8, 3)
	for _, lk := range []string{"mutex", "rw-write", "cond"} {
		t.Run(lk, func(t *testing.T) {
			forSyncKinds(t, func(t *testing.T, spec string) {
				seg, fx := syncFixture(t, spec)
				rolled := 0
				for k := range kills {
					before := len(seg.RecoveryReport().Actions)
					var waited chan error
					if lk == "cond" {
						require.NoError(t, fx.Mu.Lock())
						fx.Tokens = 0
						waited = make(chan error, 1)
						go func() {
							var err error
							for fx.Tokens == 0 && err == nil {
								err = fx.Cond.Wait()
							}
							waited <- err
						}()
					}
					c := proctest.Start(t, "sync", "churn", spec, lk, strconv.Itoa(k))
					c.Expect("locked")
					time.Sleep(time.Duration(1+rand.IntN(5)) * time.Millisecond)
					c.Kill()
					var err error
					switch {
					case lk == "cond":
						err = <-waited
					case lk == "rw-write" && k%2 == 1:
						err = fx.RW.RLock() // a reader is told too
					case lk == "rw-write":
						err = fx.RW.Lock()
					default:
						err = fx.Mu.Lock()
					}
					require.ErrorIs(t, err, ErrOwnerDied)
					checkVec(t, &fx.Vec)
					require.NoError(t, seg.CheckSanity())
					switch {
					case lk == "rw-write" && k%2 == 1:
						require.NoError(t, fx.RW.RUnlock())
					case lk == "rw-write":
						require.NoError(t, fx.RW.Unlock())
					default:
						require.NoError(t, fx.Mu.Unlock())
					}
					rolled += strings.Count(strings.Join(seg.RecoveryReport().Actions[before:], "\n"), "lane")
				}
				t.Logf("%d kills under %s; %d lanes rolled back or finished by the next locker", kills, lk, rolled)
			})
		})
	}
}

// Many waiters in several processes take tokens handed out one at a time
// with Signal (now and then Broadcast): every token is taken, so no
// wake-up was lost (a lost one leaves a token and a sleeping waiter, and
// the children never say done).
func TestCondManyWaitersAcrossProcesses(t *testing.T) {
	forSyncKinds(t, func(t *testing.T, spec string) {
		seg, fx := syncFixture(t, spec)
		const procs, gs = 3, 4
		total := orShortN(1500, 300)
		var cs []*proctest.Child
		for range procs {
			c := proctest.Start(t, "sync", "condwait", spec, strconv.Itoa(gs), strconv.Itoa(total))
			c.Expect("ready")
			cs = append(cs, c)
		}
		for k := range total {
			require.NoError(t, fx.Mu.Lock())
			fx.Tokens++
			if k%50 == 49 {
				fx.Cond.Broadcast()
			} else {
				fx.Cond.Signal()
			}
			require.NoError(t, fx.Mu.Unlock())
			if k%8 == 0 {
				time.Sleep(50 * time.Microsecond) // let waiters sleep again, now and then
			}
		}
		for _, c := range cs {
			c.Expect("done")
			require.Equal(t, 0, c.Wait(), c.Stderr())
		}
		assert.Equal(t, int64(total), fx.Got)
		assert.Zero(t, fx.Tokens)
		require.NoError(t, seg.CheckSanity())
	})
}

// A process killed holding a read hold: a writer in another process gets
// the lock (the dead reader's hold is released, and that is no error),
// within the same 100 ms.
func TestRWMutexDeadReaderReleased(t *testing.T) {
	forSyncKinds(t, func(t *testing.T, spec string) {
		_, fx := syncFixture(t, spec)
		c := proctest.Start(t, "sync", "hold", spec, "rw-read")
		c.Expect("locked")
		require.NoError(t, fx.RW.RLock(), "readers share")
		require.NoError(t, fx.RW.RUnlock())
		got := make(chan error, 1)
		go func() { got <- fx.RW.Lock() }()
		time.Sleep(30 * time.Millisecond)
		select {
		case err := <-got:
			t.Fatalf("the writer got in past a live reader: %v", err)
		default:
		}
		c.Kill()
		require.NoError(t, <-got)
		require.NoError(t, fx.RW.Unlock())
	})
}
