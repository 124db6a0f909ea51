package mapped

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Hash tables in a Shape: a 'G' table (groups of 7 slots behind a
// control word, objects.HashMap's format), a 'W' one (one-word keys
// beside their values, two keys in the head: objects.HashMap's word
// format) and an 'H' one (the format before 'G', which only an older
// build's lane records still hold) each free what their full slots'
// values own and then their table, and read nothing of their other
// slots; a 'G' or 'W' table whose count does not fit its block is
// ErrCorrupt.

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

func TestDropWordHashTable(t *testing.T) {
	s := newShmSeg(t)
	free0 := s.FreeMemory()
	const slots, slot, tomb = 16, 24, 0x5555 // a key word, a value owning a block, 8 spare
	hdr, err := s.Allocate(24)
	require.NoError(t, err)
	tbl, err := s.Allocate(2*slot + 56 + slots*slot)
	require.NoError(t, err)
	off := func(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0])) - uintptr(s.h.base)) }
	t0 := off(tbl)
	data := (t0 + 2*slot + 63) &^ 63
	for i := range tbl {
		tbl[i] = 0xa5 // garbage in every value that is not an entry's
	}
	own := func(at uint64) {
		b, err := s.Allocate(40)
		require.NoError(t, err)
		binary.LittleEndian.PutUint64(tbl[at-t0:], off(b))
	}
	full := 0
	for i := uint64(0); i < slots; i++ {
		key := []uint64{0, tomb, 7 + i}[i%3] // empty, removed, full
		binary.LittleEndian.PutUint64(tbl[data-t0+i*slot:], key)
		if i%3 == 2 {
			own(data + i*slot + 8)
			full++
		}
	}
	binary.LittleEndian.PutUint64(tbl[0:], 5) // removed count: not read
	binary.LittleEndian.PutUint64(tbl[8:], 3) // keys 0 and tomb in the head
	own(t0 + 16)
	own(t0 + 8 + slot)
	binary.LittleEndian.PutUint64(hdr[0:], t0)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(full+2))
	binary.LittleEndian.PutUint64(hdr[16:], slots)
	sh := Shape{}.WordTable(0, slot, tomb, Shape{}.Block(0))
	require.Equal(t, byte('W'), sh[0])

	l, err := s.BeginLane()
	require.NoError(t, err)
	require.NoError(t, l.Drop(unsafe.Pointer(&hdr[0]), 1, 24, sh))
	require.NoError(t, l.Commit())
	assert.Zero(t, binary.LittleEndian.Uint64(hdr), "the table word is zeroed as its block is freed")
	require.NoError(t, s.Deallocate(hdr))
	assert.Equal(t, free0, s.FreeMemory(), "every value's block and the table freed")
	require.NoError(t, s.CheckSanity())

	// Only the head keys its flags name: one flag, one block.
	hdr, err = s.Allocate(24)
	require.NoError(t, err)
	tbl, err = s.Allocate(2*slot + 56 + 2*slot)
	require.NoError(t, err)
	t0 = off(tbl)
	clear(tbl)
	binary.LittleEndian.PutUint64(tbl[8:], 2)
	binary.LittleEndian.PutUint64(tbl[16:], 0xa5a5a5a5a5a5a5a5) // key 0's value: not read
	own(t0 + 8 + slot)
	binary.LittleEndian.PutUint64(hdr[0:], t0)
	binary.LittleEndian.PutUint64(hdr[16:], 2)
	l, err = s.BeginLane()
	require.NoError(t, err)
	require.NoError(t, l.Drop(unsafe.Pointer(&hdr[0]), 1, 24, sh))
	require.NoError(t, l.Commit())
	require.NoError(t, s.Deallocate(hdr))
	assert.Equal(t, free0, s.FreeMemory())

	// A slot count past the block: ErrCorrupt, nothing read past it.
	hdr, err = s.Allocate(24)
	require.NoError(t, err)
	tbl, err = s.Allocate(2*slot + 56 + 2*slot)
	require.NoError(t, err)
	clear(tbl)
	binary.LittleEndian.PutUint64(hdr[0:], off(tbl))
	for _, n := range []uint64{5, 1 << 40, 1 << 62} {
		binary.LittleEndian.PutUint64(hdr[16:], n)
		l, err = s.BeginLane()
		require.NoError(t, err)
		require.NoError(t, l.Drop(unsafe.Pointer(&hdr[0]), 1, 24, sh))
		require.ErrorIs(t, l.Commit(), ErrCorrupt, "%d slots", n)
	}
	// A malformed geometry: ErrCorrupt.
	binary.LittleEndian.PutUint64(hdr[16:], 2)
	for _, bad := range []Shape{
		Shape{}.WordTable(0, 4, tomb, Shape{}.Block(0)),     // a slot smaller than its key
		Shape{}.WordTable(0, 20, tomb, Shape{}.Block(0)),    // a slot not of whole words
		Shape{}.WordTable(0, 1<<21, tomb, Shape{}.Block(0)), // a slot past any value
		Shape{}.WordTable(0, 4096, tomb, Shape{}.Block(0)),  // a head past the block
	} {
		l, err = s.BeginLane()
		require.NoError(t, err)
		require.NoError(t, l.Drop(unsafe.Pointer(&hdr[0]), 1, 24, bad))
		require.ErrorIs(t, l.Commit(), ErrCorrupt)
	}
}
