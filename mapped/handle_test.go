package mapped

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBadHandlesAndSizes(t *testing.T) {
	b, _ := newFile(t)
	s := mustOpen(t, b, CreateOnly, WithSize(1<<20))
	o, _ := newShm(t)
	other := mustOpen(t, o, CreateOnly)

	small, err := s.Allocate(100)
	require.NoError(t, err)
	large, err := s.Allocate(3 * 4096)
	require.NoError(t, err)
	hs, err := s.Handle(small)
	require.NoError(t, err)
	hl, err := s.Handle(large)
	require.NoError(t, err)

	p, err := ParseHandle(hs.String())
	require.NoError(t, err)
	assert.Equal(t, hs, p)
	for _, bad := range []string{"", "x", "-1", "0", "18446744073709551616"} {
		_, err := ParseHandle(bad)
		require.ErrorIs(t, err, ErrInvalidHandle, bad)
	}

	free := s.FreeMemory()
	cases := map[string]Handle{
		"beyond the size":          s.handle(uint64(s.Size()) + 4096),
		"inside a small block":     hs + 16,
		"inside a large block":     hl + 4096,
		"in the allocator's table": s.handle(s.h.geo.lo),
		"zero":                     0,
	}
	otherBlk, err := other.Allocate(100)
	require.NoError(t, err)
	cases["from another segment"], err = other.Handle(otherBlk)
	require.NoError(t, err)
	for name, h := range cases {
		_, err := s.Block(h)
		require.ErrorIs(t, err, ErrInvalidHandle, name)
		assert.Contains(t, err.Error(), s.Name(), name)
	}
	require.ErrorIs(t, s.Deallocate(small[16:]), ErrInvalidHandle, "the middle of a block")
	require.ErrorIs(t, s.Deallocate(otherBlk), ErrInvalidHandle, "memory of another segment")
	require.ErrorIs(t, s.Deallocate(make([]byte, 10)), ErrInvalidHandle, "Go memory")
	require.ErrorIs(t, s.Deallocate(nil), ErrInvalidHandle)
	assert.Equal(t, free, s.FreeMemory(), "refused calls change nothing")

	require.NoError(t, s.Deallocate(small))
	require.NoError(t, s.Deallocate(large))
	_, err = s.Block(hs)
	require.ErrorIs(t, err, ErrInvalidHandle, "a freed block")
	err = s.Deallocate(small)
	require.ErrorIs(t, err, ErrInvalidHandle, "double free")
	assert.Contains(t, err.Error(), "free")
	require.ErrorIs(t, s.Deallocate(large), ErrInvalidHandle, "double free of a large block")
	require.NoError(t, s.CheckSanity(), "a double free is an error, not corruption")
	assert.True(t, s.AllMemoryDeallocated())

	for _, n := range []int{0, -1, -1 << 62, 1 << 62} {
		_, err := s.Allocate(n)
		require.ErrorIs(t, err, ErrInvalidSize, "%d", n)
	}
	for _, a := range []int{0, -8, 3, 48, 4096 + 16} {
		_, err := s.AllocateAligned(64, a)
		require.ErrorIs(t, err, ErrInvalidSize, "alignment %d", a)
	}
	_, err = s.Allocate(int(DefaultMaxSize))
	require.ErrorIs(t, err, ErrNoSpace, "more than the maximum size")
	require.NoError(t, s.CheckSanity())
}

func TestFixedSizeAllocationIsErrNoSpace(t *testing.T) {
	s := newShmSeg(t, WithSize(64<<10), WithFixedSize())
	var n int
	for {
		_, err := s.Allocate(1000)
		if err != nil {
			require.ErrorIs(t, err, ErrNoSpace)
			break
		}
		n++
	}
	assert.Greater(t, n, 20)
	assert.Equal(t, int64(64<<10), s.Size(), "a fixed-size segment does not grow")
	require.NoError(t, s.CheckSanity())
}

func TestAllocationGrowsTheSegment(t *testing.T) {
	b, _ := newFile(t)
	s := mustOpen(t, b, CreateOnly, WithSize(64<<10))
	big, err := s.Allocate(10 << 20)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, s.Size(), int64(10<<20))
	big[len(big)-1] = 1
	for i := 0; i < 20000; i++ {
		_, err := s.Allocate(64)
		require.NoError(t, err)
	}
	require.NoError(t, s.CheckSanity())
	require.NoError(t, s.Deallocate(big))
	require.NoError(t, s.CheckSanity())
}
