package mapped

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/internal/proctest"
)

// Regression tests for what the session-6 review found.

func init() {
	// growloop: args spec step. Grows the segment by step bytes in a loop
	// until its stdin closes (or the segment is full).
	children["growloop"] = func(args []string) int {
		seg := childOpen(args[0])
		var step int64
		fmt.Sscan(args[1], &step)
		stop := make(chan struct{})
		go func() {
			for in := proctest.Lines(); in.Scan(); {
			}
			close(stop)
		}()
		fmt.Println("ready")
		for {
			select {
			case <-stop:
				_ = seg.Close()
				return 0
			default:
			}
			if err := seg.Grow(step); errors.Is(err, ErrNoSpace) {
				<-stop
				return 0
			} else if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
	}
	// growcrash: the state a writer killed inside a growth between writing
	// the header (new size) and the live-size word leaves; it holds the
	// segment lock (it was in Grow) and waits to be killed.
	children["growcrash"] = func(args []string) int {
		seg := childOpen(args[0])
		childLock(seg)
		seg.h.j.Begin(opGrow)
		old := seg.env.Size()
		if _, err := seg.env.Grow(old + 1<<20); err != nil {
			return 2
		}
		atomic.StoreUint64((*uint64)(unsafe.Add(seg.env.Base(), 1024)), uint64(old)) // the live-size word
		return holdUntilKilled()
	}
	// holdlockbad: half an allocation, and a fast-path intent record that
	// names a page beyond the managed ones, so that rolling it back fails;
	// then waits to be killed.
	children["holdlockbad"] = func(args []string) int {
		seg := childOpen(args[0])
		childLock(seg)
		seg.h.j.Begin(opAllocate)
		seg.h.add(mInUse, 4096)
		*seg.h.w(mFast) = fastValid | fastAlloc | (seg.h.get(mManaged) + 5)
		return holdUntilKilled()
	}
}

// A stale handle into a freed multi-page block, or a second free of a
// small block whose multi-page run was given back, is ErrInvalidHandle:
// the continuation descriptors left inside a free span mean nothing, and
// must not make the segment look corrupt.
func TestStaleHandlesIntoFreedPagesAreInvalid(t *testing.T) {
	s := newShmSeg(t)
	_, err := s.Allocate(100)
	require.NoError(t, err)
	b, err := s.Allocate(4 * pageSize)
	require.NoError(t, err)
	inner, err := s.Handle(b[2*pageSize:])
	require.NoError(t, err)
	require.NoError(t, s.Deallocate(b))
	_, err = s.Block(inner)
	require.ErrorIs(t, err, ErrInvalidHandle)
	require.ErrorIs(t, s.Deallocate(b), ErrInvalidHandle, "a second free")

	var cl *sizeClass
	for i := range classes {
		if classes[i].pages > 1 {
			cl = &classes[i]
			break
		}
	}
	require.NotNil(t, cl)
	var blocks [][]byte
	for range 3 * cl.ncells {
		b, err := s.Allocate(int(cl.size))
		require.NoError(t, err)
		blocks = append(blocks, b)
	}
	// One block of each run first (each becomes the partial list's head in
	// turn), then the rest: runs that empty while not the head go back to
	// the page heap, leaving their continuations inside free spans.
	n := int(cl.ncells)
	for r := range 3 {
		require.NoError(t, s.Deallocate(blocks[r*n]))
	}
	for i, b := range blocks {
		if i%n != 0 {
			require.NoError(t, s.Deallocate(b))
		}
	}
	for _, b := range blocks {
		require.ErrorIs(t, s.Deallocate(b), ErrInvalidHandle)
	}
	_, err = s.Allocate(64)
	require.NoError(t, err, "the segment is not corrupt")
	require.NoError(t, s.CheckSanity())
}

// Opens validate the descriptor table between other processes'
// operations: a process growing the segment (and moving the table) never
// makes an open see the table half moved and call the segment corrupt.
func TestOpensDuringGrowthValidate(t *testing.T) {
	b, spec := newShm(t)
	s := mustOpen(t, b, CreateOnly, WithSize(1<<20), WithMaxSize(2<<30))
	require.NoError(t, s.Close())
	g := proctest.Start(t, "growloop", spec, "1048576")
	g.Expect("ready")
	n := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); n++ {
		for _, mode := range []Mode{OpenOnly, OpenReadOnly} {
			s, err := Open(b, mode)
			require.NoError(t, err, "open %d, %v", n, mode)
			_, err = s.LookupNamed("x", false)
			require.ErrorIs(t, err, ErrNotFound, "open %d, %v", n, mode)
			require.NoError(t, s.Close())
		}
	}
	require.Equal(t, 0, g.Wait(), g.Stderr())
	t.Logf("%d pairs of opens while a process grew the segment", n)
}

// A writer killed between a growth's header write and its live-size word,
// while another writer stays attached: the survivor's next growth (and any
// new open) finishes the publication instead of calling the segment
// corrupt.
func TestGrowthKilledBeforeItsLiveSize(t *testing.T) {
	b, spec := newShm(t)
	s := mustOpen(t, b, CreateOnly, WithSize(1<<20))
	c := proctest.Start(t, "growcrash", spec)
	c.Expect("holding")
	c.Kill()
	_, err := s.Allocate(100) // takes the lock over
	require.NoError(t, err)
	s2, err := Open(b, OpenOnly)
	require.NoError(t, err, "a new open while the survivor is attached")
	assert.Equal(t, int64(2<<20), s2.Size())
	require.NoError(t, s.Grow(pageSize))
	assert.Equal(t, int64(2<<20+pageSize), s.Size())
	require.NoError(t, s2.Close())
	require.NoError(t, s.CheckSanity())
}

// A lock takeover whose rollback fails leaves the half-done operation in
// place: the waiter's call fails with ErrCorrupt instead of running on top
// of it, and later calls say why.
func TestTakeoverThatCannotRollBack(t *testing.T) {
	b, spec := newShm(t)
	s := mustOpen(t, b, CreateOnly)
	c := proctest.Start(t, "holdlockbad", spec)
	c.Expect("holding")
	c.Kill()
	_, err := s.Allocate(5000) // waits, takes the lock over, cannot roll back
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, strings.Join(s.RecoveryReport().Actions, "\n"), "could not roll back")
	_, err = s.Allocate(64)
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "could not roll back")
}

// Flush racing Close: Close closes the descriptor, Flush must never hand
// its number (closed, perhaps reused) to a system call; with -race this
// also shows the descriptor is guarded.
func TestFlushDuringClose(t *testing.T) {
	for range 50 {
		s, err := Open(file.Path(filepath.Join(t.TempDir(), "f.seg")), CreateOnly)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			for {
				if err := s.Flush(); err != nil {
					done <- err
					return
				}
			}
		}()
		require.NoError(t, s.Close())
		require.ErrorIs(t, <-done, ErrClosed)
	}
}

// A second Close while the first waits for a call in flight returns only
// once the first is done, so a caller that exits on its nil leaves the
// segment detached.
func TestSecondCloseWaitsForTheFirst(t *testing.T) {
	s := newShmSeg(t)
	inside, release := make(chan struct{}), make(chan struct{})
	go func() {
		_, _ = s.CreateNamed("slow", false, NameSpec{Count: 1, ElemSize: 8}, func([]byte) {
			close(inside)
			<-release
		})
	}()
	<-inside
	first := make(chan error, 1)
	go func() { first <- s.Close() }()
	time.Sleep(20 * time.Millisecond) // the first Close is waiting for the lock
	second := make(chan error, 1)
	go func() { second <- s.Close() }()
	select {
	case <-second:
		t.Fatal("the second Close returned while the first was still waiting")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-first)
	require.NoError(t, <-second)
}

// A read-only read that a busy writer keeps tearing gives up after a
// while with ErrBusy instead of retrying for ever.
func TestReadOnlyReadsGiveUpUnderABusyWriter(t *testing.T) {
	b, spec := newShm(t)
	s := mustOpen(t, b, CreateOnly, WithSize(4<<20))
	for i := range 5000 {
		_, err := s.CreateNamed(fmt.Sprintf("n%d", i), false, NameSpec{Count: 1, ElemSize: 8}, nil)
		require.NoError(t, err)
	}
	ro := mustOpen(t, b, OpenReadOnly)
	c := proctest.Start(t, "indexchurn", spec, "5")
	c.Expect("ready")
	for range 3 {
		start := time.Now()
		err := ro.CheckSanity()
		took := time.Since(start)
		if err != nil {
			require.ErrorIs(t, err, ErrBusy)
		}
		assert.Less(t, took, readOnlyPatience+2*time.Second, "CheckSanity took %v (%v)", took, err)
	}
	c.Kill()
}
