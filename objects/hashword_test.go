package objects

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/mapstore/mapstore/mapped"
)

// The HashMap's word format ('W': one-word integer keys, values of at
// most 56 bytes): slots of a key and its value, a power of two of them,
// keys 0 and wordTomb kept in the table's head, removed slots that a
// probe goes past, probes that wrap at the table's end, a table with no
// empty slot, and heads, counts and headers overwritten with garbage.

// tombKey is wordTomb as an int64 key.
var tombKey = func() int64 { w := uint64(wordTomb); return int64(w) }()

// hwSlotOf is the slot that holds k (not a head key).
func hwSlotOf[V any](t *testing.T, h *HashMap[int64, V], k int64) uint64 {
	t.Helper()
	o := hmOp(t, h)
	at, found, _ := o.wordFind(uint64(k))
	require.True(t, found, "key %d", k)
	return at
}

// hwKeysHoming returns n keys from from on, not in h, not kept in the
// head, whose probe starts at slot i.
func hwKeysHoming[V any](h *HashMap[int64, V], i uint64, from int64, n int) []int64 {
	var ks []int64
	for k := from; len(ks) < n; k++ {
		if k != 0 && k != tombKey && wordHome(uint64(k), h.groups) == i && !h.Has(k) {
			ks = append(ks, k)
		}
	}
	return ks
}

func TestHashWordLayout(t *testing.T) {
	for _, c := range []struct {
		geo  func() (*hashGeo, error)
		slot uint64
	}{
		{hashGeoOf[uint64, float64], 16},
		{hashGeoOf[int64, String], 32},
		{hashGeoOf[int64, struct{}], 8},
		{hashGeoOf[uint64, [3]byte], 16},
		{hashGeoOf[int64, [56]byte], 64},
	} {
		g, err := c.geo()
		require.NoError(t, err)
		assert.True(t, g.word)
		assert.Equal(t, c.slot, g.slot)
	}
	assert.Equal(t, byte('W'), HashMap[int64, String]{}.containerKind())
	assert.Equal(t, byte('G'), HashMap[int32, String]{}.containerKind())
	assert.Equal(t, byte('G'), HashMap[int64, [57]byte]{}.containerKind())
	for _, slot := range []uint64{8, 16, 32, 64} {
		for _, tb := range []uint64{8, 64, 4096, 4096 + 8, 4096 + 56} {
			d := wordData(tb, slot)
			assert.Zero(t, d%64)
			assert.GreaterOrEqual(t, d, tb+2*slot, "the head: two words and two values")
			assert.LessOrEqual(t, d+7*slot, tb+wordBytes(7, slot))
		}
	}
	// Where keys land is part of the format: pinned.
	seg := newSeg(t)
	h, err := Construct(seg, "h", HashMap[uint64, uint64]{})
	require.NoError(t, err)
	for k := uint64(1); k <= 6; k++ {
		require.NoError(t, h.Set(k, k*10))
	}
	require.Equal(t, uint64(8), h.groups, "4 slots, then 8 at the 4th key")
	got := map[uint64]uint64{}
	d := wordData(h.table, 16)
	for i := range h.groups {
		s := (*[2]uint64)(unsafe.Add(seg.Base(), d+16*i))
		if s[0] != 0 {
			assert.Equal(t, s[0]*10, s[1], "the value beside its key")
			got[s[0]] = i
		}
	}
	assert.Equal(t, map[uint64]uint64{1: 4, 2: 1, 3: 6, 4: 3, 5: 0, 6: 5}, got)
}

// Tables are powers of two, at most 3/4 full and removed, and double as
// a map grows: a rebuild leaves room for as many keys again.
func TestHashWordSizing(t *testing.T) {
	seg := newSeg(t)
	h, err := Construct(seg, "h", HashMap[int64, int64]{})
	require.NoError(t, err)
	var sizes []uint64
	for i := range int64(20000) {
		before := h.groups
		require.NoError(t, h.Set(i*7919, i)) // 0 first: kept in the head
		if h.groups != before {
			sizes = append(sizes, h.groups)
			assert.GreaterOrEqual(t, wordMaxFull(h.groups), 2*uint64(i), "after the rebuild at %d keys", i)
		}
		o := hmOp(t, h)
		require.Less(t, h.n-1+*o.removed(), wordMaxFull(h.groups))
		require.Zero(t, *o.removed(), "removed count with %d keys (no removals)", h.n)
	}
	want := []uint64{}
	for s := uint64(4); s <= 32768; s *= 2 {
		want = append(want, s)
	}
	assert.Equal(t, want, sizes)
	for i := range int64(20000) {
		v, ok := h.Get(i * 7919)
		require.True(t, ok)
		require.Equal(t, i, *v)
	}
	// Removals leave removed slots; reinsertions reuse them or rebuild at
	// the same key count without growing.
	for i := range int64(19000) {
		ok, err := h.Delete(i * 7919)
		require.NoError(t, err)
		require.True(t, ok)
	}
	for i := range int64(100000) {
		require.NoError(t, h.Set(-i-1, i))
		ok, err := h.Delete(-i - 1)
		require.NoError(t, err)
		require.True(t, ok)
	}
	assert.Equal(t, 1000, h.Len())
	assert.LessOrEqual(t, h.groups, uint64(32768))
	for i := int64(19000); i < 20000; i++ {
		v, ok := h.Get(i * 7919)
		require.True(t, ok)
		require.Equal(t, i, *v)
	}
	require.NoError(t, seg.CheckSanity())
	require.NoError(t, Destroy[HashMap[int64, int64]](seg, "h"))
	assert.True(t, seg.AllMemoryDeallocated())
}

// Keys 0 and wordTomb live in the table's head: found, replaced,
// removed, listed, carried through rebuilds, and their values' blocks
// freed, as any other key's.
func TestHashWordHeadKeys(t *testing.T) {
	seg := newSeg(t)
	free0 := seg.FreeMemory()
	h, err := Construct(seg, "h", HashMap[int64, String]{})
	require.NoError(t, err)
	_, ok := h.Get(0)
	assert.False(t, ok, "an empty map")
	ok, err = h.Delete(tombKey)
	require.NoError(t, err)
	assert.False(t, ok)
	long := func(k int64) string { return fmt.Sprintf("the value of key %d, long enough for a block", k) }
	set := func(k int64) {
		p, _, err := h.GetOrInsert(k)
		require.NoError(t, err)
		require.NoError(t, p.Set(long(k)))
	}
	set(tombKey) // the first key: makes the table
	require.NotZero(t, h.table)
	set(0)
	assert.Equal(t, 2, h.Len())
	o := hmOp(t, h)
	assert.Equal(t, uint64(wordHas0|wordHasTomb), *o.flags())
	for i := range h.groups {
		assert.Zero(t, *o.slotAt(wordData(h.table, o.slot), i), "no slot holds them")
	}
	p0, _ := h.Get(0)
	p1, ins, err := h.GetOrInsert(0)
	require.NoError(t, err)
	assert.False(t, ins)
	assert.Equal(t, p0, p1, "the value in place")
	for k := int64(1); k <= 3000; k++ { // rebuilds carry the head
		set(k)
	}
	for _, k := range []int64{0, tombKey, 1, 3000} {
		v, ok := h.Get(k)
		require.True(t, ok, "key %d", k)
		assert.Equal(t, long(k), v.String())
	}
	seen := map[int64]bool{}
	for k, v := range h.All() {
		require.False(t, seen[k], "key %d twice", k)
		seen[k] = true
		assert.Equal(t, long(k), v.String())
	}
	assert.Len(t, seen, 3002)
	assert.Equal(t, 3002, h.Len())
	require.NoError(t, h.Set(tombKey, String{})) // replaces, freeing the old value's block
	v, ok := h.Get(tombKey)
	require.True(t, ok)
	assert.Equal(t, "", v.String())
	ok, err = h.Delete(0)
	require.NoError(t, err)
	assert.True(t, ok)
	_, ok = h.Get(0)
	assert.False(t, ok)
	o = hmOp(t, h)
	assert.Equal(t, uint64(wordHasTomb), *o.flags())
	assert.Equal(t, 3001, h.Len())
	require.NoError(t, seg.CheckSanity())
	require.NoError(t, Destroy[HashMap[int64, String]](seg, "h"))
	assert.Equal(t, free0, seg.FreeMemory())
	assert.True(t, seg.AllMemoryDeallocated())
}

// A removal leaves its slot removed while the next slot is taken (a
// probe may go past it), empty when the next is empty; lookups go past
// removed slots, and an insertion reuses the first one on its probe.
func TestHashWordRemovedSlots(t *testing.T) {
	seg := newSeg(t)
	h, err := Construct(seg, "h", HashMap[int64, int64]{})
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(1, 2)) // keys at random: some runs of free slots
	for k := int64(1); k <= 30; k++ {
		require.NoError(t, h.Set(int64(rng.Uint64()>>1)|1, k))
	}
	require.Equal(t, uint64(64), h.groups)
	o := hmOp(t, h)
	d := wordData(h.table, o.slot)
	// A run of 4 keys homing to one free slot: at, at+1, at+2, at+3.
	at := h.groups
	for i := range h.groups - 5 {
		free := true
		for j := range uint64(5) {
			free = free && *o.slotAt(d, i+j) == 0
		}
		if free {
			at = i
			break
		}
	}
	require.Less(t, at, h.groups, "a run of 5 free slots")
	ks := hwKeysHoming(h, at, 1, 4)
	for _, k := range ks {
		require.NoError(t, h.Set(k, -k))
	}
	for j, k := range ks {
		require.Equal(t, at+uint64(j), hwSlotOf(t, h, k))
	}
	ok, err := h.Delete(ks[1])
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, uint64(wordTomb), *o.slotAt(d, at+1), "the next slot is taken: removed")
	assert.Equal(t, uint64(1), *o.removed())
	ok, err = h.Delete(ks[3])
	require.NoError(t, err)
	require.True(t, ok)
	assert.Zero(t, *o.slotAt(d, at+3), "the next slot is empty: empty")
	assert.Equal(t, uint64(1), *o.removed())
	v, ok := h.Get(ks[2])
	require.True(t, ok, "found past a removed slot")
	assert.Equal(t, -ks[2], *v)
	_, ok = h.Get(ks[1])
	assert.False(t, ok)
	more := hwKeysHoming(h, at, ks[3]+1, 1)
	require.NoError(t, h.Set(more[0], 7))
	assert.Equal(t, at+1, hwSlotOf(t, h, more[0]), "the removed slot reused")
	assert.Zero(t, *o.removed())
	assert.Equal(t, 33, h.Len())
	require.NoError(t, seg.CheckSanity())
}

// A probe that starts in the last slot goes on at the first.
func TestHashWordProbeWrapsAtTheEnd(t *testing.T) {
	seg := newSeg(t)
	h, err := Construct(seg, "h", HashMap[int64, int64]{})
	require.NoError(t, err)
	for k := int64(1); k <= 20; k++ {
		require.NoError(t, h.Set(k*1000003, k))
	}
	require.Equal(t, uint64(32), h.groups)
	last := h.groups - 1
	ks := hwKeysHoming(h, last, 1, 4)
	for _, k := range ks {
		require.NoError(t, h.Set(k, -k))
	}
	require.Equal(t, uint64(32), h.groups, "no rebuild")
	wrapped := 0
	for _, k := range ks {
		v, ok := h.Get(k)
		require.True(t, ok, "key %d", k)
		require.Equal(t, -k, *v)
		if hwSlotOf(t, h, k) < last {
			wrapped++
		}
	}
	assert.GreaterOrEqual(t, wrapped, 3, "keys homing to the last slot placed past the table's end")
	n := 0
	for range h.All() {
		n++
	}
	assert.Equal(t, h.Len(), n)
}

// A table with no empty slot (only damaged counts let one fill up):
// lookups of absent keys end after every slot, and an insertion
// rebuilds.
func TestHashWordTableWithNoEmptySlot(t *testing.T) {
	seg := newSeg(t)
	h, err := Construct(seg, "h", HashMap[int64, int64]{})
	require.NoError(t, err)
	for k := int64(1); k <= 3; k++ {
		require.NoError(t, h.Set(k, k))
	}
	require.Equal(t, uint64(4), h.groups)
	h.n = 0 // lets a 4th key in
	require.NoError(t, h.Set(4, 4))
	h.n = 4
	require.Equal(t, uint64(4), h.groups)
	o := hmOp(t, h)
	for i := range uint64(4) {
		require.NotZero(t, *o.slotAt(wordData(h.table, o.slot), i), "slot %d full", i)
	}
	_, ok := h.Get(99)
	assert.False(t, ok)
	_, ok = h.Get(99) // by the table's record (hashlook.go) this time
	assert.False(t, ok)
	ok, err = h.Delete(99)
	require.NoError(t, err)
	assert.False(t, ok)
	require.NoError(t, h.Set(5, 5)) // no free slot: rebuilt
	assert.Greater(t, h.groups, uint64(4))
	for k := int64(1); k <= 5; k++ {
		v, ok := h.Get(k)
		require.True(t, ok)
		require.Equal(t, k, *v)
	}
	require.NoError(t, Destroy[HashMap[int64, int64]](seg, "h"))
	assert.True(t, seg.AllMemoryDeallocated())
}

// Heads, counts and headers overwritten with garbage: every call reports
// mapped.ErrCorrupt naming what it read, by error or by a panic carrying
// it, and nothing faults or hangs.
func TestHashWordCorruptTable(t *testing.T) {
	panicOnFault(t)
	type hm = HashMap[int64, String]
	setup, calls := hmCorruptSetup[int64](), hmCorruptCalls[int64]
	t.Run("flags", func(t *testing.T) {
		_, h, o := setup(t)
		*o.flags() = 4
		calls(t, h, 0, "flags 4")
		corruptOutcome(t, "All", func() error {
			for range h.All() {
			}
			return nil
		})
		corruptOutcome(t, "Set of a new key: a rebuild", func() error {
			for k := int64(1000); k < 2000; k++ {
				if err := h.Set(k, String{}); err != nil {
					return err
				}
			}
			return nil
		})
	})
	t.Run("removed count beyond the slots", func(t *testing.T) {
		_, h, o := setup(t)
		*o.removed() = h.groups + 1
		corruptOutcome(t, "Set", func() error { return h.Set(12345, String{}) })
		corruptOutcome(t, "Delete", func() error { _, err := h.Delete(5); return err })
	})
	t.Run("a removed slot and a removed count of 0", func(t *testing.T) {
		_, h, o := setup(t)
		ok, err := h.Delete(7)
		require.NoError(t, err)
		require.True(t, ok)
		if *o.removed() == 0 { // removed, not emptied: make it so
			require.NoError(t, h.Set(7, String{}))
			at, found, _ := o.wordFind(7)
			require.True(t, found)
			*o.slotAt(wordData(h.table, o.slot), at) = wordTomb
			h.n--
		} else {
			*o.removed() = 0
		}
		corruptOutcome(t, "Set into the removed slot", func() error { return h.Set(7, String{}) })
	})
	t.Run("key count beyond the slots, for a head key", func(t *testing.T) {
		_, h, _ := setup(t)
		ok, err := h.Delete(0)
		require.NoError(t, err)
		require.True(t, ok)
		h.n = h.groups + 5
		corruptOutcome(t, "Set of key 0", func() error { return h.Set(0, String{}) })
	})
	t.Run("key count beyond the slots", func(t *testing.T) {
		_, h, _ := setup(t)
		h.n = h.groups + 3
		corruptOutcome(t, "Len", func() error { h.Len(); return nil })
		corruptOutcome(t, "Delete", func() error { _, err := h.Delete(5); return err })
	})
	t.Run("key count short of the table's", func(t *testing.T) {
		_, h, _ := setup(t)
		h.n = 0
		corruptOutcome(t, "Delete", func() error { _, err := h.Delete(5); return err })
		h.n = 3
		corruptOutcome(t, "a rebuild", func() error {
			for k := int64(1000); k < 2000; k++ {
				if err := h.Set(k, String{}); err != nil {
					return err
				}
			}
			return nil
		})
	})
	t.Run("header", func(t *testing.T) {
		seg, h, _ := setup(t)
		good := *h
		size := uint64(seg.Size())
		for _, bad := range []hm{
			{table: good.table, n: good.n, groups: 0},
			{table: good.table, n: good.n, groups: good.groups + 1},
			{table: good.table, n: good.n, groups: good.groups * 3},
			{table: good.table, n: good.n, groups: 1 << 40 * 2},
			{table: good.table, n: good.n, groups: 1 << 63},
			{table: good.table, n: good.n, groups: size / 16},
			{table: size - 8, n: good.n, groups: good.groups},
			{table: size + 64, n: good.n, groups: good.groups},
			{table: 1 << 62, n: good.n, groups: 4},
			{table: good.table + 3, n: good.n, groups: good.groups},
		} {
			*h = bad
			what := fmt.Sprintf("header %+v", bad)
			for _, k := range []int64{0, 3, 12345} {
				calls(t, h, k, what)
			}
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
	t.Run("slot count past the table's block", func(t *testing.T) {
		seg, h, _ := setup(t)
		h.groups *= 4 // still inside the segment, past the block
		err := Destroy[hm](seg, "h")
		require.ErrorIs(t, err, mapped.ErrCorrupt)
	})
}

// A HashMap with one-word keys (the word format) against a Go map, as
// TestHashMapProperties, with keys that include the two kept in the
// table's head.
func TestHashWordProperties(t *testing.T) {
	keys := rapid.OneOf(rapid.SampledFrom([]int64{0, tombKey, 1, -1, 2, 1 << 62, -1 << 63}), rapid.Int64Range(-40, 40))
	hashMapProps(t, keys, func(i int64) int64 { return i })
}

// A table for more keys than any table can hold is ErrNoSpace, in either
// format.
func TestHashTableTooLarge(t *testing.T) {
	seg := newSeg(t)
	_, err := wordSizeFor(seg, maxWordSlots)
	require.ErrorIs(t, err, mapped.ErrNoSpace)
	s, err := wordSizeFor(seg, maxWordSlots/8*3)
	require.NoError(t, err)
	assert.Equal(t, uint64(maxWordSlots), s)
	h, err := Construct(seg, "g", HashMap[int32, int64]{})
	require.NoError(t, err)
	o := hmOp(t, h)
	_, err = o.sizeFor(maxGroups + 1)
	require.ErrorIs(t, err, mapped.ErrNoSpace)
}
