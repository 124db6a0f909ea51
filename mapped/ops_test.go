package mapped

import (
	"encoding/binary"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/internal/proctest"
)

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
	s := newShmSeg(t)
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

// Two Grows at once grow twice: the size is read under the lock.
func TestConcurrentGrowsAllCount(t *testing.T) {
	s := newShmSeg(t, WithSize(64<<10))
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
