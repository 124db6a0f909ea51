package mapped

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
	seg, err := Open(parseSpec(args[0]), OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
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
	runs := 40
	if testing.Short() {
		runs = 10
	}
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
	seg, err := Open(parseSpec(args[0]), OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
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
	seg, err := Open(parseSpec(args[0]), OpenOnly)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
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

// allocWithin runs Allocate in a goroutine and fails the test if it does
// not return within d: a wedged segment lock blocks it for ever.
func allocWithin(t *testing.T, s *Segment, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		b, err := s.Allocate(64)
		if err == nil {
			err = s.Deallocate(b)
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(d):
		t.Fatalf("Allocate did not return within %v: the segment lock is wedged", d)
	}
}

// A panic in CreateNamed's fill function (or RemoveNamed's check) rolls
// the operation back, releases the segment lock and goes on up: the name
// is absent (or still there), no memory is lost, and this process and
// others go on using the segment.
func TestPanicInCallbackReleasesTheLock(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly)
		_, err := s.CreateNamed("keep", false, NameSpec{Count: 1, ElemSize: 8}, nil)
		require.NoError(t, err)
		free0 := s.FreeMemory()

		require.PanicsWithValue(t, "boom in init", func() {
			_, _ = s.CreateNamed("doomed", false, NameSpec{Count: 100, ElemSize: 8}, func([]byte) { panic("boom in init") })
		})
		allocWithin(t, s, 5*time.Second)
		_, err = s.LookupNamed("doomed", false)
		require.ErrorIs(t, err, ErrNotFound)
		assert.Equal(t, free0, s.FreeMemory())
		require.NoError(t, s.CheckSanity())
		assert.Contains(t, strings.Join(s.RecoveryReport().Actions, "\n"), "rolled back")

		require.PanicsWithValue(t, "boom in check", func() {
			_ = s.RemoveNamed("keep", false, func(Named) error { panic("boom in check") })
		})
		allocWithin(t, s, 5*time.Second)
		_, err = s.LookupNamed("keep", false)
		require.NoError(t, err, "the removal did not happen")
		assert.Equal(t, free0, s.FreeMemory())
		require.NoError(t, s.CheckSanity())

		// Another process is not wedged either.
		c := proctest.Start(t, "allocwithin", spec, "2000")
		c.Expect("done")
	})
}

// An operation that overflows the undo journal panics (a bug in the
// operation, not in the segment), and is rolled back and unlocked first.
func TestJournalOverflowRollsBack(t *testing.T) {
	b, _ := newShm(t)
	s := mustOpen(t, b, CreateOnly)
	blk, err := s.Allocate(8 * 1024)
	require.NoError(t, err)
	clear(blk)
	h, _ := s.Handle(blk)
	base := uintptr(h.Offset())
	free0 := s.FreeMemory()
	require.Panics(t, func() {
		_ = s.journaled("test", opAllocate, func() error {
			for i := range uintptr(1024) {
				s.h.set(base+8*i, 0xdead)
			}
			return nil
		})
	})
	for i := range 1024 {
		require.Zero(t, binary.LittleEndian.Uint64(blk[8*i:]), "word %d was rolled back", i)
	}
	allocWithin(t, s, 5*time.Second)
	assert.Equal(t, free0, s.FreeMemory())
	require.NoError(t, s.CheckSanity())
}

// An optimistic reader validates against the lock word's acquisition
// count. The count must not wrap while a reader is stalled: after 2^24
// acquisitions (under a second at today's speed) the reader must still
// see that writers ran.
func TestReadValidationSurvivesManyAcquisitions(t *testing.T) {
	b, _ := newShm(t)
	s := mustOpen(t, b, CreateOnly)
	v, ok := s.lk.readBegin()
	require.True(t, ok)
	for range 1 << 24 {
		s.lk.lock()
		s.lk.unlock()
	}
	assert.False(t, s.lk.readValid(v), "2^24 acquisitions went unnoticed by a reader")
}

// A read-only open cannot take the segment lock, so its reads are
// optimistic: they must validate (no writer ran meanwhile) or run again,
// never return what a half-done change showed them. A child rebuilds the
// name index over and over; a name that is always there must always be
// found, and the structures read must always be whole.
func TestReadOnlyReadsValidate(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly, WithSize(256<<10))
		_, err := s.CreateNamed("keep", false, NameSpec{Count: 1, ElemSize: 8}, func(obj []byte) { obj[0] = 42 })
		require.NoError(t, err)
		blk, err := s.Allocate(64)
		require.NoError(t, err)
		h, _ := s.Handle(blk)

		ro := mustOpen(t, b, OpenReadOnly)
		c := proctest.Start(t, "indexchurn", spec, "99")
		c.Expect("ready")
		var lookups, misses, blockErrs int
		for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
			for range 1000 {
				n, err := ro.LookupNamed("keep", false)
				lookups++
				if err != nil || n.Obj[0] != 42 {
					misses++
				}
			}
			if _, err := ro.Block(h); err != nil {
				blockErrs++
			}
		}
		c.Kill()
		t.Logf("%d read-only lookups while a writer rebuilt the index", lookups)
		assert.Zero(t, misses, "lookups of a name that is always there failed")
		assert.Zero(t, blockErrs, "Block of a live block failed")
	})
}

// OpenCopyOnWrite gives a consistent snapshot: it is refused (ErrBusy)
// while a writable open is attached, and otherwise copies the segment's
// pages at open, so that changes made later through the file never show
// through pages the copy had not written yet.
func TestCopyOnWriteIsASnapshot(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly)
		var hs []Handle
		for range 50 {
			blk, err := s.Allocate(64)
			require.NoError(t, err)
			blk[0] = 9
			h, _ := s.Handle(blk)
			hs = append(hs, h)
		}
		_, err := Open(b, OpenCopyOnWrite)
		require.ErrorIs(t, err, ErrBusy, "a writer is attached")
		assert.Contains(t, err.Error(), strings.TrimPrefix(b.Name(), "shm:"))
		require.NoError(t, s.Close())

		c := mustOpen(t, b, OpenCopyOnWrite)
		extra, err := c.Allocate(64) // the copy writes one block
		require.NoError(t, err)
		w := mustOpen(t, b, OpenOnly)
		for _, h := range hs[:40] {
			blk, err := w.Block(h)
			require.NoError(t, err)
			require.NoError(t, w.Deallocate(blk))
		}
		require.NoError(t, w.Close())

		require.NoError(t, c.CheckSanity(), "the copy still sees the segment as it was")
		for _, h := range hs {
			blk, err := c.Block(h)
			require.NoError(t, err)
			assert.Equal(t, byte(9), blk[0])
		}
		require.NoError(t, c.Deallocate(extra))
	})
}

// Two Grows at once grow twice: the size is read under the lock.
func TestConcurrentGrowsAllCount(t *testing.T) {
	b, _ := newShm(t)
	s := mustOpen(t, b, CreateOnly, WithSize(64<<10))
	size0 := s.Size()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				assert.NoError(t, s.Grow(64<<10))
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, size0+100*(64<<10), s.Size())
	require.NoError(t, s.CheckSanity())
}
