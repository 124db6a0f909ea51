package mapped

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Hash tables in a Shape: a 'G' table (groups of 7 slots behind a
// control word, objects.HashMap's format) and an 'H' one (the format
// before, which only an older build's lane records still hold) each free
// what their full slots' values own and then their table, and read
// nothing of their other slots; a 'G' table whose group count does not
// fit its block is ErrCorrupt.

func TestDropGroupHashTable(t *testing.T) {
	s := newShmSeg(t)
	free0 := s.FreeMemory()
	const groups, group = 5, 128 // a control word, 7 keys, 7 values (owned block words), 8 spare
	hdr, err := s.Allocate(24)
	require.NoError(t, err)
	tbl, err := s.Allocate(64 + groups*group)
	require.NoError(t, err)
	off := func(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0])) - uintptr(s.h.base)) }
	t0 := off(tbl)
	data := (t0 + 8 + 63) &^ 63
	for i := range tbl {
		tbl[i] = 0xa5 // garbage in every slot that is not full
	}
	full := 0
	for g := uint64(0); g < groups; g++ {
		var ctrl uint64
		for j := uint64(0); j < 7; j++ {
			switch (g*7 + j) % 3 {
			case 0: // full: its value owns a block
				b, err := s.Allocate(40)
				require.NoError(t, err)
				binary.LittleEndian.PutUint64(tbl[data-t0+g*group+64+8*j:], off(b))
				ctrl |= uint64(0x80|j) << (8 * j)
				full++
			case 1: // removed
				ctrl |= 1 << (8 * j)
			}
		}
		binary.LittleEndian.PutUint64(tbl[data-t0+g*group:], ctrl)
	}
	binary.LittleEndian.PutUint64(hdr[0:], t0)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(full))
	binary.LittleEndian.PutUint64(hdr[16:], groups)
	sh := Shape{}.HashTable(0, group, 8, 8, 64, 8, nil, Shape{}.Block(0))
	require.Equal(t, byte('G'), sh[0])

	l, err := s.BeginLane()
	require.NoError(t, err)
	require.NoError(t, l.Drop(unsafe.Pointer(&hdr[0]), 1, 24, sh))
	require.NoError(t, l.Commit())
	assert.Zero(t, binary.LittleEndian.Uint64(hdr), "the table word is zeroed as its block is freed")
	require.NoError(t, s.Deallocate(hdr))
	assert.Equal(t, free0, s.FreeMemory())
	require.NoError(t, s.CheckSanity())

	// A group count past the block: ErrCorrupt, nothing read past it.
	hdr, err = s.Allocate(24)
	require.NoError(t, err)
	tbl, err = s.Allocate(64 + 2*group)
	require.NoError(t, err)
	binary.LittleEndian.PutUint64(hdr[0:], off(tbl))
	for _, n := range []uint64{3, 1 << 40, 1 << 62} {
		binary.LittleEndian.PutUint64(hdr[16:], n)
		l, err = s.BeginLane()
		require.NoError(t, err)
		require.NoError(t, l.Drop(unsafe.Pointer(&hdr[0]), 1, 24, sh))
		require.ErrorIs(t, l.Commit(), ErrCorrupt, "%d groups", n)
	}
	// A malformed geometry: ErrCorrupt.
	binary.LittleEndian.PutUint64(hdr[16:], 2)
	for _, bad := range []Shape{
		Shape{}.HashTable(0, 4, 8, 8, 64, 8, nil, Shape{}.Block(0)),      // a group smaller than its word
		Shape{}.HashTable(0, group, 8, 8, 100, 8, nil, Shape{}.Block(0)), // values past the group
		Shape{}.HashTable(0, 132, 8, 8, 64, 8, nil, Shape{}.Block(0)),    // a group not of whole words
	} {
		l, err = s.BeginLane()
		require.NoError(t, err)
		require.NoError(t, l.Drop(unsafe.Pointer(&hdr[0]), 1, 24, bad))
		require.ErrorIs(t, l.Commit(), ErrCorrupt)
	}
}

func TestDropOldHashTable(t *testing.T) {
	s := newShmSeg(t)
	free0 := s.FreeMemory()
	const slots, slot = 16, 24 // a word (0 free, 1 removed, else full), the key, a value owning a block
	hdr, err := s.Allocate(24)
	require.NoError(t, err)
	tbl, err := s.Allocate(slots * slot)
	require.NoError(t, err)
	off := func(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0])) - uintptr(s.h.base)) }
	full := 0
	for i := range slots {
		w := uint64(i % 3)
		if w == 2 {
			w = 1<<63 | uint64(i)
			b, err := s.Allocate(40)
			require.NoError(t, err)
			binary.LittleEndian.PutUint64(tbl[i*slot+16:], off(b))
			full++
		} else {
			binary.LittleEndian.PutUint64(tbl[i*slot+16:], 0xa5a5a5a5a5a5a5a5) // not read
		}
		binary.LittleEndian.PutUint64(tbl[i*slot:], w)
	}
	binary.LittleEndian.PutUint64(hdr[0:], off(tbl))
	binary.LittleEndian.PutUint64(hdr[8:], uint64(full))
	binary.LittleEndian.PutUint64(hdr[16:], slots)
	// The 'H' item as an older build wrote it.
	sh := Shape{'H'}
	for _, v := range []uint64{0, slot, 8, 16} {
		sh = binary.AppendUvarint(sh, v)
	}
	sh = appendSub(sh, nil)
	sh = appendSub(sh, Shape{}.Block(0))

	l, err := s.BeginLane()
	require.NoError(t, err)
	require.NoError(t, l.Drop(unsafe.Pointer(&hdr[0]), 1, 24, sh))
	require.NoError(t, l.Commit())
	assert.Zero(t, binary.LittleEndian.Uint64(hdr))
	require.NoError(t, s.Deallocate(hdr))
	assert.Equal(t, free0, s.FreeMemory())
	require.NoError(t, s.CheckSanity())
}
