package mapped

import (
	"errors"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExpandInPlace(t *testing.T) {
	seg := newShmSeg(t, WithSize(1<<20))
	free0 := seg.FreeMemory()
	a, err := seg.Allocate(3 * pageSize)
	require.NoError(t, err)
	copy(a, "kept")
	p := unsafe.Pointer(&a[0])

	// The pages after it are free: it grows where it is.
	n, err := seg.Expand(p, 5*pageSize)
	require.NoError(t, err)
	assert.Equal(t, 5*pageSize, n)
	b, err := seg.Block(mustHandleOf(t, seg, a))
	require.NoError(t, err)
	assert.Equal(t, 5*pageSize, len(b))
	assert.Equal(t, "kept", string(b[:4]))
	assert.Equal(t, free0-5*pageSize, seg.FreeMemory())
	require.NoError(t, seg.CheckSanity())

	// A block after it: no room, nothing changes.
	c, err := seg.Allocate(2 * pageSize)
	require.NoError(t, err)
	require.Equal(t, uintptr(p)+5*pageSize, uintptr(unsafe.Pointer(&c[0])), "the next block lands right after")
	n, err = seg.Expand(p, 6*pageSize)
	require.NoError(t, err)
	assert.Equal(t, 5*pageSize, n)
	assert.Equal(t, free0-7*pageSize, seg.FreeMemory())

	// Already large enough, and small blocks, answer their size.
	n, err = seg.Expand(p, 100)
	require.NoError(t, err)
	assert.Equal(t, 5*pageSize, n)
	small, err := seg.Allocate(100)
	require.NoError(t, err)
	n, err = seg.Expand(unsafe.Pointer(&small[0]), 5000)
	require.NoError(t, err)
	assert.Less(t, n, 5000)

	// Not a block's start.
	_, err = seg.Expand(unsafe.Add(p, 16), 8*pageSize)
	assert.ErrorIs(t, err, ErrInvalidHandle)

	for _, x := range [][]byte{a, c, small} {
		require.NoError(t, seg.Deallocate(x))
	}
	assert.True(t, seg.AllMemoryDeallocated())
	assert.Equal(t, free0, seg.FreeMemory())
	require.NoError(t, seg.CheckSanity())
}

// A block that ends the managed pages grows the segment to expand.
func TestExpandGrowsTheSegment(t *testing.T) {
	seg := newShmSeg(t, WithSize(256<<10))
	var last []byte
	for {
		b, err := seg.Allocate(pageSize)
		require.NoError(t, err)
		if int64(uintptr(unsafe.Pointer(&b[0]))-uintptr(seg.Base()))+pageSize == seg.Size() {
			last = b
			break
		}
	}
	size0 := seg.Size()
	n, err := seg.Expand(unsafe.Pointer(&last[0]), 64*pageSize)
	require.NoError(t, err)
	assert.Equal(t, 64*pageSize, n)
	assert.Greater(t, seg.Size(), size0)
	require.NoError(t, seg.CheckSanity())
}

// Runs shrink to fit: a class whose runs are 8 pages still allocates in a
// fixed segment with fewer free pages than that.
func TestRunsShrinkToFit(t *testing.T) {
	seg := newShmSeg(t, WithSize(64<<10), WithFixedSize())
	c := classOf[(256+15)>>4]
	require.Equal(t, uint64(8), classes[c].pages, "256-byte blocks come from 8-page runs")
	var bs [][]byte
	for {
		b, err := seg.Allocate(256)
		if errors.Is(err, ErrNoSpace) {
			break
		}
		require.NoError(t, err)
		bs = append(bs, b)
	}
	free := int(seg.h.managed()) - int(seg.h.geo.lo>>pageShift)
	full := free / 8 * int(classes[c].ncells) // what whole 8-page runs hold
	assert.Greater(t, len(bs), full, "256-byte blocks in %d free pages: the pages left after the 8-page runs hold some too, in smaller runs", free)
	for _, b := range bs {
		require.NoError(t, seg.Deallocate(b))
	}
	require.NoError(t, seg.CheckSanity())
	assert.True(t, seg.AllMemoryDeallocated())
	// Nothing stranded: every free page in one block.
	big, err := seg.Allocate(free * pageSize)
	require.NoError(t, err, "one block of all %d free pages", free)
	require.NoError(t, seg.Deallocate(big))
}

func mustHandleOf(t *testing.T, seg *Segment, b []byte) Handle {
	h, err := seg.Handle(b)
	require.NoError(t, err)
	return h
}
