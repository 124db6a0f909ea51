package mapped

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/mapstore/mapstore/internal/proctest"
)

// Review tests of the block caches (cache.go): bad values in a magazine
// are ErrCorrupt, never a fault or a write outside the mapping, and a
// block in a cache is free for every call that takes a block.

func init() {
	children["cachecorrupt"] = childCacheCorrupt
}

// ownMagazine makes sure the P the caller runs on has a magazine holding
// a 16-byte cell, and returns it. The caller runs with GOMAXPROCS 1, so
// that every later call uses the same one.
func ownMagazine(s *Segment) (*magazine, error) {
	blk, err := s.Allocate(16)
	if err != nil {
		return nil, err
	}
	if err := s.Deallocate(blk); err != nil {
		return nil, err
	}
	m := s.mags[0].Load()
	if m == nil || *m.count(0) == 0 {
		return nil, fmt.Errorf("no magazine with a 16-byte cell after a pair")
	}
	return m, nil
}

// guardBelow maps the 8 KiB below the segment's mapping inaccessible
// (unless something is there already), so that a wild offset that wraps
// below the base faults for certain. It reports whether it could.
func guardBelow(s *Segment) bool {
	at := uintptr(s.h.base) - 2*pageSize
	p, _, errno := unix.Syscall6(unix.SYS_MMAP, at, 2*pageSize, unix.PROT_NONE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uintptr(0), 0)
	if errno != 0 {
		return false
	}
	if p != at {
		_, _, _ = unix.Syscall(unix.SYS_MUNMAP, p, 2*pageSize, 0)
		return false
	}
	return true
}

// childCacheCorrupt opens the segment, gives its only P a magazine,
// writes a wild offset into it (args[1] says where) and runs the call
// that reads it, printing "err <error>", "ok" or "outside" (a block
// handed out outside the mapping); a fault kills it.
func childCacheCorrupt(args []string) int {
	runtime.GOMAXPROCS(1)
	s := childOpen(args[0])
	m, err := ownMagazine(s)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if !guardBelow(s) {
		fmt.Println("noguard")
		return 0
	}
	switch args[1] {
	case "slot":
		// One 16-byte cell, at the last 16-aligned offset: offset plus
		// size wraps to 0.
		*m.slot(0, 0) = ^uint64(0) - 15
		*m.count(0) = 1
		blk, err := s.Allocate(16)
		switch {
		case err != nil:
			fmt.Println("err", err)
		case uintptr(unsafe.Pointer(&blk[0]))-uintptr(s.h.base) >= uintptr(s.Size()):
			fmt.Println("outside")
		default:
			fmt.Println("ok")
		}
	case "next":
		// The next magazine at the last page-aligned offset but one:
		// offset plus the magazine's size wraps to 0.
		*(*uint64)(unsafe.Add(unsafe.Pointer(m), magNext)) = ^uint64(0) - (2*pageSize - 1)
		if err := s.CheckSanity(); err != nil {
			fmt.Println("err", err)
		} else {
			fmt.Println("ok")
		}
	}
	return 0
}

// A magazine slot or next link whose offset plus size wraps around is
// ErrCorrupt: not a write (or read) below the mapping.
func TestCacheWrappingOffsetIsErrCorrupt(t *testing.T) {
	for _, where := range []string{"slot", "next"} {
		t.Run(where, func(t *testing.T) {
			b, spec := newShm(t)
			mustOpen(t, b, CreateOnly, WithSize(1<<20))
			c := proctest.Start(t, "cachecorrupt", spec, where)
			out := c.Expect("")
			code := c.Wait()
			if out == "noguard" {
				t.Skip("the page below the mapping is in use: no guard")
			}
			require.Zero(t, code, "the child died: %s", c.Stderr())
			require.True(t, strings.HasPrefix(out, "err"), "child said %q", out)
			assert.Contains(t, out, ErrCorrupt.Error())
		})
	}
}

// A magazine whose count is more than its slots fails the allocation that
// finds it (ErrCorrupt), and the segment is marked corrupt; the fault is
// not left for a later, unrelated operation to report.
func TestCacheBadCountFailsTheAllocation(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	s := newShmSeg(t, WithSize(1<<20))
	m, err := ownMagazine(s)
	require.NoError(t, err)
	*m.count(0) = mc[0].cap + 5
	_, err = s.Allocate(16)
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Nil(t, s.h.fault.Load(), "no fault left pending")
}

// A full magazine whose top slot is not a cell: the free that flushes it
// is ErrCorrupt (the flush's finding is not dropped).
func TestCacheFlushOfBadSlotIsErrCorrupt(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	s := newShmSeg(t, WithSize(1<<20))
	m, err := ownMagazine(s)
	require.NoError(t, err)
	x, err := s.Allocate(16)
	require.NoError(t, err)
	*m.count(0) = mc[0].cap
	*m.slot(0, mc[0].cap-1) = s.h.geo.lo + 8 // not 16-aligned
	err = s.Deallocate(x)
	require.ErrorIs(t, err, ErrCorrupt)
}

// A full magazine whose top slot names a live large block: the flush does
// not free that block (it is no cell of the class), and says ErrCorrupt.
func TestCacheFlushDoesNotFreeALargeBlock(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	s := newShmSeg(t, WithSize(1<<20))
	m, err := ownMagazine(s)
	require.NoError(t, err)
	big, err := s.Allocate(3 * pageSize)
	require.NoError(t, err)
	bh, err := s.Handle(big)
	require.NoError(t, err)
	x, err := s.Allocate(16)
	require.NoError(t, err)
	// Fill the stack with live 16-byte cells (ours), then put the large
	// block on top.
	for i := *m.count(0); i < mc[0].cap-1; i++ {
		blk, err := s.AllocateAligned(16, 16) // not through the cache
		require.NoError(t, err)
		*m.slot(0, i) = uint64(uintptr(unsafe.Pointer(&blk[0])) - uintptr(s.h.base))
	}
	*m.slot(0, mc[0].cap-1) = uint64(bh.Offset())
	*m.count(0) = mc[0].cap
	err = s.Deallocate(x)
	assert.ErrorIs(t, err, ErrCorrupt)
	sz, err := s.h.blockSize(uint64(bh.Offset()))
	require.NoError(t, err, "the large block is still live")
	assert.EqualValues(t, 3*pageSize, sz)
}

// A block in a cache is free: Expand refuses it as Block and Deallocate
// do.
func TestCachedBlockExpandRefused(t *testing.T) {
	s := newShmSeg(t, WithSize(1<<20))
	x, err := s.Allocate(100)
	require.NoError(t, err)
	require.NoError(t, s.Deallocate(x))
	require.True(t, s.h.marked(uint64(uintptr(unsafe.Pointer(&x[0]))-uintptr(s.h.base))))
	_, err = s.Expand(unsafe.Pointer(&x[0]), 50)
	require.ErrorIs(t, err, ErrInvalidHandle)
}
