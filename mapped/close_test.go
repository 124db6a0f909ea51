package mapped

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
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/internal/proctest"
)

func init() {
	// closerace: args spec seed. Four goroutines allocate, free and look
	// names up in a loop while a fifth closes the segment; every call must
	// succeed or say ErrClosed, and nothing may fault.
	children["closerace"] = childCloseRace
	// closeincreate: args spec. Close while another goroutine is inside
	// CreateNamed's fill function; prints what Close and CreateNamed did.
	children["closeincreate"] = childCloseInCreate
	// allocwithin: args spec ms. Opens the segment and allocates once;
	// prints "done" unless that takes longer than ms milliseconds.
	children["allocwithin"] = childAllocWithin
}

func childCloseRace(args []string) int {
	seg := childOpen(args[0])
	rng := rand.New(rand.NewPCG(parseSeed(args[1]), 5))
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var err error
				if (g+i)%2 == 0 {
					var b []byte
					if b, err = seg.Allocate(64 + 1000*(i%3)); err == nil {
						b[0] = 1
						err = seg.Deallocate(b)
					}
				} else {
					_, err = seg.LookupNamed("present", false)
				}
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
	if err := seg.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		return 1
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fmt.Fprintln(os.Stderr, "call:", err)
		return 1
	}
	fmt.Println("ok")
	return 0
}

// Close racing calls in flight: in a loop of fresh child processes, four
// goroutines use the segment while a fifth closes it. Every child must
// exit cleanly (no SIGSEGV, no call failing with anything but ErrClosed),
// and the segment must be left closed cleanly with its lock free: the next
// open is clean and allocates at once.
func TestCloseRacesCallsInFlight(t *testing.T) {
	runs := orShort(40, 10)
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly)
		_, err := s.CreateNamed("present", false, NameSpec{Count: 1, ElemSize: 8}, nil)
		require.NoError(t, err)
		require.NoError(t, s.Close())
		rng := rand.New(rand.NewPCG(3, 3))
		for i := range runs {
			c := proctest.Start(t, "closerace", spec, strconv.FormatUint(rng.Uint64(), 10))
			c.Expect("ok")
			require.Equal(t, 0, c.Wait(), "run %d: %s", i, c.Stderr())
		}
		s = mustOpen(t, b, OpenOnly)
		rep := s.RecoveryReport()
		assert.True(t, rep.Clean(), "%s", rep)
		require.NoError(t, s.CheckSanity())
		c := proctest.Start(t, "allocwithin", spec, "2000")
		c.Expect("done")
	})
}

func childAllocWithin(args []string) int {
	limit, _ := strconv.Atoi(args[1])
	seg := childOpen(args[0])
	done := make(chan error, 1)
	go func() {
		_, err := seg.Allocate(64)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("done")
		return 0
	case <-time.After(time.Duration(limit) * time.Millisecond):
		fmt.Println("blocked")
		return 1
	}
}

func childCloseInCreate(args []string) int {
	seg := childOpen(args[0])
	inside, release := make(chan struct{}), make(chan struct{})
	created := make(chan error, 1)
	go func() {
		_, err := seg.CreateNamed("slow", false, NameSpec{Count: 4, ElemSize: 8}, func(obj []byte) {
			close(inside)
			<-release
			for i := range obj {
				obj[i] = 7
			}
		})
		created <- err
	}()
	<-inside
	closed := make(chan error, 1)
	go func() { closed <- seg.Close() }()
	select {
	case err := <-closed:
		fmt.Println("close returned while CreateNamed was in flight:", err)
		close(release)
		<-created
		return 1
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-created; err != nil {
		fmt.Println("create:", err)
		return 1
	}
	if err := <-closed; err != nil {
		fmt.Println("close:", err)
		return 1
	}
	if _, err := seg.Allocate(8); !errors.Is(err, ErrClosed) {
		fmt.Println("allocate after close:", err)
		return 1
	}
	fmt.Println("ok")
	return 0
}

// Close while another goroutine is inside CreateNamed waits for it: the
// name is created whole, the lock is released, the journal is idle, and
// only then is the segment detached (and, as the last process, marked
// clean). The next open finds a clean segment and allocates at once.
func TestCloseWaitsForCallInFlight(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly)
		require.NoError(t, s.Close())
		c := proctest.Start(t, "closeincreate", spec)
		c.Expect("ok")
		require.Equal(t, 0, c.Wait(), c.Stderr())

		s = mustOpen(t, b, OpenOnly)
		rep := s.RecoveryReport()
		assert.True(t, rep.Clean(), "%s", rep)
		n, err := s.LookupNamed("slow", false)
		require.NoError(t, err, "the call in flight finished")
		assert.Equal(t, byte(7), n.Obj[31])
		require.NoError(t, s.CheckSanity())
		a := proctest.Start(t, "allocwithin", spec, "2000")
		a.Expect("done")
	})
}

// Every method of a closed segment says ErrClosed (or, for the
// accessors, a zero value), naming the segment.
func TestCallsAfterCloseAreErrClosed(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly)
		blk, err := s.Allocate(16)
		require.NoError(t, err)
		h, err := s.Handle(blk)
		require.NoError(t, err)
		_, err = s.CreateNamed("n", false, NameSpec{Count: 1, ElemSize: 8}, nil)
		require.NoError(t, err)
		require.NoError(t, s.Close())

		name := strings.TrimPrefix(b.Name(), "shm:")
		calls := map[string]error{}
		_, calls["Allocate"] = s.Allocate(8)
		_, calls["AllocateAligned"] = s.AllocateAligned(8, 64)
		_, calls["AllocateInto"] = s.AllocateInto(h, 8)
		calls["Deallocate"] = s.Deallocate(blk)
		calls["DeallocateFrom"] = s.DeallocateFrom(h)
		_, calls["Handle"] = s.Handle(blk)
		_, calls["Block"] = s.Block(h)
		_, calls["At"] = s.At(h, 8)
		_, calls["CreateNamed"] = s.CreateNamed("m", false, NameSpec{Count: 1, ElemSize: 8}, nil)
		_, calls["LookupNamed"] = s.LookupNamed("n", false)
		_, _, _, calls["LookupNamedAs"] = s.LookupNamedAs("n", false, nil)
		calls["RemoveNamed"] = s.RemoveNamed("n", false, nil)
		_, calls["RemoveNamedAs"] = s.RemoveNamedAs("n", false, nil)
		calls["CheckSanity"] = s.CheckSanity()
		calls["Grow"] = s.Grow(4096)
		calls["Flush"] = s.Flush()
		_, calls["Info"] = s.Info()
		for op, err := range calls {
			require.ErrorIs(t, err, ErrClosed, op)
			assert.Contains(t, err.Error(), name, op)
		}
		assert.Zero(t, s.Size())
		assert.Zero(t, s.MaxSize())
		assert.Zero(t, s.FreeMemory())
		assert.Zero(t, s.NamedCount())
		assert.False(t, s.AllMemoryDeallocated())
		for range s.NamedObjects() {
			t.Fatal("a closed segment lists names")
		}
		assert.Nil(t, SegmentAt(s.Base()))
	})
}

// A Close that is not the last releases the segment lock to the opens
// still attached: another open takes it at once, and the last Close
// leaves the word with no owner and no waiters bit. The next open is
// clean.
func TestCloseNotLastLeavesTheLockFree(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		a := mustOpen(t, b, CreateOnly)
		o := mustOpen(t, b, OpenOnly)
		_, err := a.Allocate(64)
		require.NoError(t, err)
		require.NoError(t, a.Close())
		assert.Zero(t, atomic.LoadUint64(o.lk.word)&lockOwnerMask, "released")
		before, err := o.Info()
		require.NoError(t, err)
		_, err = o.Allocate(64)
		require.NoError(t, err)
		after, err := o.Info()
		require.NoError(t, err)
		assert.Greater(t, after.LockAcquisitions, before.LockAcquisitions)
		require.NoError(t, o.Close())

		s := mustOpen(t, b, OpenOnly)
		rep := s.RecoveryReport()
		assert.True(t, rep.Clean(), "%s", rep)
		assert.Zero(t, atomic.LoadUint64(s.lk.word)&(lockOwnerMask|lockWaiters), "the lock word after the last Close")
		require.NoError(t, s.CheckSanity())
	})
}

// The last Close checks the segment's head as read from the backing once
// the mapping is retired (quietAtClose). A goroutine of this process that
// took the segment lock, or claimed a lane, just before the retire and
// let go of it just after let go into private memory: the words it left
// naming this open are cleared and written back, and the check passes.
// A lane an Abort left to recovery, and words naming another open, are
// not this open's to clear: the check fails and the segment is left for
// recovery.
func TestQuietAtCloseClearsWhatTheRetireCutOff(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly)
		head := make([]byte, mgrEnd)
		copy(head, s.env.Mem()[:mgrEnd])
		w := func(off uintptr) *uint64 { return (*uint64)(unsafe.Pointer(&head[off])) }
		var puts []int
		put := func(off int) error { puts = append(puts, off); return nil }

		*w(mLock) = 7*lockSeqOne | s.lk.me
		*w(mLaneOwners + 2*8) = s.laneMe
		require.NoError(t, s.quietAtClose(head, put))
		assert.Equal(t, []int{mLock, mLaneOwners + 2*8}, puts)
		assert.Equal(t, uint64(7*lockSeqOne), *w(mLock), "the count stays")
		assert.Zero(t, *w(mLaneOwners + 2*8))

		puts = nil
		*w(mLaneOwners + 1*8) = s.laneMe
		s.lanesLeft.Store(1 << 1)
		err := s.quietAtClose(head, put)
		require.ErrorContains(t, err, "lane 1 is claimed")
		assert.Empty(t, puts)
		s.lanesLeft.Store(0)
		*w(mLaneOwners + 1*8) = 0

		*w(mLaneOwners) = s.laneMe + 1<<8 // the same seat, another attach
		require.ErrorContains(t, s.quietAtClose(head, put), "lane 0 is claimed")
		*w(mLaneOwners) = 0
		*w(mLock) = 7*lockSeqOne | (s.lk.me + 1)
		require.ErrorContains(t, s.quietAtClose(head, put), "the segment lock is held")
		assert.Empty(t, puts)
		require.NoError(t, s.Close())
	})
}
