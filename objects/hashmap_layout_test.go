package objects

import (
	"bytes"
	"fmt"
	"math/bits"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/mapped"
)

// The HashMap's 'G' table format (keys that are not one word: int32
// here): groups of 7 slots behind a control word, a group count that is
// not a power of two, probes that wrap at the table's end, a table with
// no empty slot, and control words, removed counts and headers
// overwritten with garbage. hashword_test.go does the same for the word
// format.

// hmOp is h's hashOp, for looking at its table.
func hmOp[K comparable, V any](t *testing.T, h *HashMap[K, V]) hashOp[K, V] {
	t.Helper()
	o, err := h.op("test")
	require.NoError(t, err)
	return o
}

// hmGroupOf is the group that holds k.
func hmGroupOf[K comparable, V any](t *testing.T, h *HashMap[K, V], k K) uint64 {
	t.Helper()
	o := hmOp(t, h)
	at, found, _, err := o.find(&k, o.hashOf(&k))
	require.NoError(t, err)
	require.True(t, found, "key %v", k)
	return at >> 3
}

// hmKeysHoming returns n keys from from on, not in h, whose probe starts
// at group g.
func hmKeysHoming(t *testing.T, h *HashMap[int32, int64], g uint64, from int32, n int) []int32 {
	o := hmOp(t, h)
	var ks []int32
	for k := from; len(ks) < n; k++ {
		if home(o.hashOf(&k), h.groups) == g && !h.Has(k) {
			ks = append(ks, k)
		}
	}
	return ks
}

func TestHashMapGroupLayout(t *testing.T) {
	g32, err := hashGeoOf[int32, float64]()
	require.NoError(t, err)
	assert.Equal(t, uint64(128), g32.group, "control word and 7 keys in one 64-byte line, 7 values in the next")
	assert.Equal(t, uint64(64), g32.valOff)
	assert.False(t, g32.word)
	gb, err := hashGeoOf[uint64, [57]byte]()
	require.NoError(t, err)
	assert.False(t, gb.word, "a value of more than 56 bytes: the 'G' format")
	assert.Equal(t, uint64(8+7*8+7*64), gb.group)
	gs, err := hashGeoOf[string, int32]()
	require.NoError(t, err)
	assert.Equal(t, uint64(8+7*24+7*4+4), gs.group, "string keys: 8-byte multiple, no line padding")
	assert.False(t, gs.word)
	gf, err := hashGeoOf[float64, [3]byte]()
	require.NoError(t, err)
	assert.Equal(t, uint64(128), gf.group)
	assert.False(t, gf.word, "a float key is not compared as a word (-0 is 0)")
	for _, d := range []uint64{8, 64, 4096, 4096 + 8, 4096 + 56, 4096 + 120} {
		assert.Zero(t, tableData(d)%64)
		assert.GreaterOrEqual(t, tableData(d), d+8)
		assert.LessOrEqual(t, tableData(d), d+64)
	}
}

// Tables are sized for their keys in whole groups, not powers of two: a
// rebuild leaves them at most half as full as they may be, and none is
// more than 7/8 full.
func TestHashMapSizing(t *testing.T) {
	seg := newSeg(t)
	h, err := Construct(seg, "h", HashMap[int32, int64]{})
	require.NoError(t, err)
	var sizes []uint64
	for i := range int64(20000) {
		before := h.groups
		require.NoError(t, h.Set(int32(i*7919), i))
		if h.groups != before {
			sizes = append(sizes, h.groups)
			// Just rebuilt for i+1 keys: room for as many again.
			assert.GreaterOrEqual(t, maxFull(h.groups), 2*uint64(i+1), "after the rebuild at %d keys", i+1)
			assert.Less(t, maxFull(h.groups), 2*uint64(i+1)+7, "after the rebuild at %d keys", i+1)
		}
		require.LessOrEqual(t, h.n, maxFull(h.groups))
		o := hmOp(t, h)
		require.Zero(t, *o.removed(), "removed count with %d keys (no removals)", h.n)
	}
	assert.Equal(t, []uint64{1, 3, 7, 15, 31, 63, 127, 255, 511, 1023, 2047, 4095}, sizes)
	powersOfTwo := 0
	for _, s := range sizes {
		if bits.OnesCount64(s*groupSlots) == 1 {
			powersOfTwo++
		}
	}
	assert.Zero(t, powersOfTwo, "slot counts %v", sizes)
	for i := range int64(20000) {
		v, ok := h.Get(int32(i * 7919))
		require.True(t, ok)
		require.Equal(t, i, *v)
	}
	// Removals free slots for reuse; a rebuild at the same key count does
	// not grow the table.
	for i := range int64(19000) {
		ok, err := h.Delete(int32(i * 7919))
		require.NoError(t, err)
		require.True(t, ok)
	}
	for i := range int64(100000) {
		require.NoError(t, h.Set(int32(-i-1), i))
		ok, err := h.Delete(int32(-i - 1))
		require.NoError(t, err)
		require.True(t, ok)
	}
	assert.Equal(t, 1000, h.Len())
	assert.LessOrEqual(t, h.groups, uint64(4095))
	require.NoError(t, seg.CheckSanity())
}

// A probe that starts in the last group goes on at the first.
func TestHashMapProbeWrapsAtTheEnd(t *testing.T) {
	seg := newSeg(t)
	h, err := Construct(seg, "h", HashMap[int32, int64]{})
	require.NoError(t, err)
	for i := range int64(20) {
		require.NoError(t, h.Set(int32(1000000+i), i))
	}
	require.Equal(t, uint64(7), h.groups)
	o0 := hmOp(t, h)
	require.GreaterOrEqual(t, maxFull(h.groups)-h.n-*o0.removed(), uint64(10))
	last := h.groups - 1
	ks := hmKeysHoming(t, h, last, 0, 10) // 7 slots at most in the last group
	for _, k := range ks {
		require.NoError(t, h.Set(k, -int64(k)))
	}
	require.Equal(t, uint64(7), h.groups, "no rebuild")
	wrapped := 0
	for _, k := range ks {
		v, ok := h.Get(k)
		require.True(t, ok, "key %d", k)
		require.Equal(t, -int64(k), *v)
		if hmGroupOf(t, h, k) < last {
			wrapped++
		}
	}
	assert.GreaterOrEqual(t, wrapped, 3, "keys homing to the last group placed past the table's end")
	// A removal in the full last group marks its slot removed (a probe
	// goes past it); the wrapped keys stay found.
	ok, err := h.Delete(ks[0])
	require.NoError(t, err)
	require.True(t, ok)
	o := hmOp(t, h)
	w := *(*uint64)(o.at(o.ctrlOff(tableData(h.table), last)))
	assert.Zero(t, zeroBytes(w), "the last group has no empty slot")
	assert.NotZero(t, zeroBytes(w^bytesLo*ctrlRemoved), "a removed slot in it")
	for _, k := range ks[1:] {
		v, ok := h.Get(k)
		require.True(t, ok, "key %d", k)
		require.Equal(t, -int64(k), *v)
	}
	// The removed slot is reused by the next key homing there.
	more := hmKeysHoming(t, h, last, ks[len(ks)-1]+1, 1)
	require.NoError(t, h.Set(more[0], 5))
	assert.Equal(t, last, hmGroupOf(t, h, more[0]))
	n := 0
	for range h.All() {
		n++
	}
	assert.Equal(t, h.Len(), n)
	require.NoError(t, seg.CheckSanity())
}

// A table with no empty slot (only a damaged count lets one fill up): lookups of absent keys end after every group, and an insertion
// rebuilds.
func TestHashMapTableWithNoEmptySlot(t *testing.T) {
	seg := newSeg(t)
	h, err := Construct(seg, "h", HashMap[int32, int64]{})
	require.NoError(t, err)
	for i := range int64(6) {
		require.NoError(t, h.Set(int32(i), i))
	}
	require.Equal(t, uint64(1), h.groups)
	o := hmOp(t, h)
	require.Equal(t, maxFull(1), h.n, "6 of 7 slots: as full as a table gets")
	h.n-- // lets a 7th key in
	require.NoError(t, h.Set(6, 6))
	h.n++
	require.Equal(t, uint64(1), h.groups)
	w := *(*uint64)(o.at(o.ctrlOff(tableData(h.table), 0)))
	require.Equal(t, uint64(bytesHi), w&bytesHi, "all 7 slots full")
	_, ok := h.Get(99)
	assert.False(t, ok)
	ok, err = h.Delete(99)
	require.NoError(t, err)
	assert.False(t, ok)
	require.NoError(t, h.Set(7, 7)) // no free slot: rebuilt
	assert.Greater(t, h.groups, uint64(1))
	for i := range int64(8) {
		v, ok := h.Get(int32(i))
		require.True(t, ok)
		require.Equal(t, i, *v)
	}
	require.NoError(t, Destroy[HashMap[int32, int64]](seg, "h"))
	assert.True(t, seg.AllMemoryDeallocated())
}

// Control words, removed counts and headers overwritten with garbage:
// every call reports mapped.ErrCorrupt naming what it read, by error or
// by a panic carrying it, and nothing faults or hangs.
func TestHashMapCorruptTable(t *testing.T) {
	panicOnFault(t)
	type hm = HashMap[int32, String]
	setup, calls := hmCorruptSetup[int32](), hmCorruptCalls[int32]
	for _, c := range []struct {
		name string
		bad  func(w uint64) uint64
	}{
		{"a control byte of 0x05", func(w uint64) uint64 { return withByte(w, 3, 0x05) }},
		{"a control byte of 0x7f", func(w uint64) uint64 { return withByte(w, 0, 0x7f) }},
		{"the top byte set", func(w uint64) uint64 { return w | 1<<60 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			seg, h, o := setup(t)
			// A key absent from the map whose probe starts at group 0.
			ks := []int32{}
			for k := int32(1000); len(ks) == 0; k++ {
				if home(o.hashOf(&k), h.groups) == 0 {
					ks = append(ks, k)
				}
			}
			// Group 0 with its empty slots marked removed (so that a probe
			// from it goes on and must judge every byte), then damaged.
			cw := (*uint64)(o.at(o.ctrlOff(tableData(h.table), 0)))
			for j := range uint64(groupSlots) {
				if byte(*cw>>(8*j)) == ctrlEmpty {
					*cw = withByte(*cw, j, ctrlRemoved)
				}
			}
			*cw = c.bad(*cw)
			calls(t, h, ks[0], c.name)
			err := Destroy[hm](seg, "h") // the dropper reads full slots only: it may succeed
			if err != nil {
				require.ErrorIs(t, err, mapped.ErrCorrupt)
			}
		})
	}
	t.Run("removed count beyond the slots", func(t *testing.T) {
		_, h, o := setup(t)
		*o.removed() = h.groups*groupSlots + 1
		k := int32(12345)
		corruptOutcome(t, "Set", func() error { return h.Set(k, String{}) })
	})
	t.Run("header", func(t *testing.T) {
		seg, h, _ := setup(t)
		good := *h
		size := uint64(seg.Size())
		for _, bad := range []hm{
			{table: good.table, n: good.n, groups: 0},
			{table: good.table, n: good.n, groups: size / 128},
			{table: good.table, n: good.n, groups: 1 << 60},
			{table: size - 8, n: good.n, groups: good.groups},
			{table: size + 64, n: good.n, groups: good.groups},
			{table: 1 << 62, n: good.n, groups: 1},
			{table: good.table + 3, n: good.n, groups: good.groups},
		} {
			*h = bad
			what := fmt.Sprintf("header %+v", bad)
			calls(t, h, 3, what)
			corruptOutcome(t, what+": Clear", h.Clear)
			corruptOutcome(t, what+": All", func() error {
				for range h.All() {
				}
				return nil
			})
		}
		*h = good
		require.NoError(t, seg.CheckSanity())
	})
	t.Run("group count past the table's block", func(t *testing.T) {
		seg, h, _ := setup(t)
		h.groups += 3 // still inside the segment, past the block
		err := Destroy[hm](seg, "h")
		require.ErrorIs(t, err, mapped.ErrCorrupt)
	})
}

// hmCorruptSetup returns a setup for a corruption test: a segment and a
// HashMap[K, String] in it of 40 keys (0 to 39), each value owning a
// block, and its hashOp.
func hmCorruptSetup[K int32 | int64]() func(t *testing.T) (*mapped.Segment, *HashMap[K, String], hashOp[K, String]) {
	return func(t *testing.T) (*mapped.Segment, *HashMap[K, String], hashOp[K, String]) {
		seg := newSeg(t)
		h, err := Construct(seg, "h", HashMap[K, String]{})
		require.NoError(t, err)
		for i := range 40 {
			v, _, err := h.GetOrInsert(K(i))
			require.NoError(t, err)
			require.NoError(t, v.Set(fmt.Sprintf("value %d, long enough to own a block", i)))
		}
		return seg, h, hmOp(t, h)
	}
}

// hmCorruptCalls requires Get, Set and Delete of k on the damaged h to
// report mapped.ErrCorrupt (corruptOutcome).
func hmCorruptCalls[K int32 | int64](t *testing.T, h *HashMap[K, String], k K, what string) {
	corruptOutcome(t, what+": Get", func() error { h.Get(k); return nil })
	corruptOutcome(t, what+": Set", func() error { return h.Set(k, String{}) })
	corruptOutcome(t, what+": Delete", func() error { _, err := h.Delete(k); return err })
}

// A HashMap written in a format before this one is another layout: found
// by name, it is ErrTypeMismatch, not read as this one. Before 'G' there
// was 'H' (24-byte slots behind a hash word, a power of two of them); a
// HashMap with one-word keys was 'G' before the word format, 'W'.
func TestHashMapOldFormatRefused(t *testing.T) {
	t.Run("H", func(t *testing.T) { oldHashFormatRefused[HashMap[int32, int64]](t, 'G', 'H') })
	t.Run("G", func(t *testing.T) { oldHashFormatRefused[HashMap[int64, int64]](t, 'W', 'G') })
}

func oldHashFormatRefused[hm any](t *testing.T, now, before byte) {
	seg := newSeg(t)
	ti := infoOf[hm]()
	require.NoError(t, ti.err)
	i := bytes.Index(ti.spec, []byte{'C', now})
	require.Positive(t, i, "the fingerprint records the container kind")
	old := bytes.Clone(ti.spec)
	old[i+1] = before
	_, err := seg.CreateNamed("old", false, mapped.NameSpec{Count: 1, ElemSize: 24, Align: 8, Layout: old}, func([]byte) {})
	require.NoError(t, err)
	_, err = Find[hm](seg, "old")
	require.ErrorIs(t, err, ErrTypeMismatch)
	require.ErrorContains(t, err, "of another layout", "the same type name: the message says the layout differs")
	var zero hm
	_, err = FindOrConstruct(seg, "old", zero)
	require.ErrorIs(t, err, ErrTypeMismatch)
	require.ErrorIs(t, Destroy[hm](seg, "old"), ErrTypeMismatch)
}
