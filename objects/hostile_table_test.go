package objects

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/mapped"
)

// A hash table header that names the segment's own manager area (below
// the memory blocks live in) is ErrCorrupt, in both formats and whether
// or not a Get recorded the real table first; nothing in the manager
// area is written. (Set wrote the value into the "free slot" there, then
// a lane refused to save it with a string panic.)
func TestHashTableInTheManagerArea(t *testing.T) {
	panicOnFault(t)
	t.Run("word", func(t *testing.T) {
		seg := newSeg(t)
		h := wordMapOf(t, seg, 40)
		_, ok := h.Get(3)
		require.True(t, ok)
		head := append([]byte(nil), unsafe.Slice((*byte)(seg.Base()), 4096)...)
		for _, off := range []uint64{8, 56, 64, 1024} {
			h.table, h.n, h.groups = off, 0, 4
			require.ErrorIs(t, h.Set(12345, 1.5), mapped.ErrCorrupt, "table at %d", off)
			r := outcome(func() { h.Get(12345) })
			err, _ := r.(error)
			assert.ErrorIs(t, err, mapped.ErrCorrupt, "Get, table at %d: %v", off, r)
		}
		assert.Equal(t, head, unsafe.Slice((*byte)(seg.Base()), 4096), "the manager area's first page is unchanged")
	})
	t.Run("group", func(t *testing.T) {
		seg := newSeg(t)
		h, err := Construct(seg, "g", HashMap[int32, int64]{})
		require.NoError(t, err)
		require.NoError(t, h.Set(1, 1))
		good := h.table
		head := append([]byte(nil), unsafe.Slice((*byte)(seg.Base()), 4096)...)
		for off := uint64(8); off < min(good, 4096); off += 8 {
			*h = HashMap[int32, int64]{table: off, n: 0, groups: 1}
			require.ErrorIs(t, h.Set(12345, 7), mapped.ErrCorrupt, "table at %d", off)
		}
		assert.Equal(t, head, unsafe.Slice((*byte)(seg.Base()), 4096), "the manager area's first page is unchanged")
	})
}

// A key count past what the table can hold, with no free slot, is
// ErrCorrupt before any rebuild: not a table sized from the bad count
// (the segment grew by gigabytes, or ErrNoSpace).
func TestHashKeyCountTooLargeForARebuild(t *testing.T) {
	panicOnFault(t)
	seg := newSeg(t)
	h := wordMapOf(t, seg, 40)
	o := hmOp(t, h)
	d := wordData(h.table, o.slot)
	for i := range h.groups {
		*o.slotAt(d, i) = 0x1234567800000000 + i // full, none asked for
	}
	size := seg.Size()
	for _, n := range []uint64{h.groups + 3, 1 << 24, 1 << 30, 1 << 39, 1 << 62} {
		h.n = n
		require.ErrorIs(t, h.Set(99999, 1), mapped.ErrCorrupt, "%d keys", n)
	}
	assert.Equal(t, size, seg.Size(), "the segment did not grow")

	g, err := Construct(seg, "g", HashMap[int32, int64]{})
	require.NoError(t, err)
	require.NoError(t, g.Set(1, 1))
	og := hmOp(t, g)
	dg := tableData(g.table)
	for grp := range g.groups { // every control byte full
		*(*uint64)(og.at(og.ctrlOff(dg, grp))) = 0x0101010101010101
	}
	for _, n := range []uint64{g.groups*groupSlots + 1, 1 << 30, 1 << 40} {
		g.n = n
		require.ErrorIs(t, g.Set(99999, 1), mapped.ErrCorrupt, "%d keys", n)
	}
	assert.Equal(t, size, seg.Size(), "the segment did not grow")
}
