package objects

import (
	"cmp"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

// Bad input to Map: a copy in Go memory, a read-only segment, a full
// segment, keys it cannot order, damaged nodes. None may fault; each has
// its documented outcome.

// mapCalls is every method of m, each as a func returning its error (nil
// for those that return none).
func mapCalls[K comparable, V any](m *Map[K, V], k, k2 K) map[string]func() error {
	return map[string]func() error{
		"Len":         func() error { m.Len(); return nil },
		"Get":         func() error { m.Get(k); return nil },
		"Has":         func() error { m.Has(k); return nil },
		"Set":         func() error { var v V; return m.Set(k, v) },
		"GetOrInsert": func() error { _, _, err := m.GetOrInsert(k); return err },
		"Delete":      func() error { _, err := m.Delete(k); return err },
		"Clear":       m.Clear,
		"All": func() error {
			for range m.All() {
			}
			return nil
		},
		"Range": func() error {
			for range m.Range(k, k2) {
			}
			return nil
		},
		"Min": func() error { m.Min(); return nil },
		"Max": func() error { m.Max(); return nil },
	}
}

// A Map copied to Go memory (or declared there) panics on every method
// with the documented message, and reads nothing.
func TestMapCopyPanics(t *testing.T) {
	panicOnFault(t)
	seg := newSeg(t)
	m, err := Construct(seg, "m", Map[int64, int64]{})
	require.NoError(t, err)
	for i := range 500 {
		require.NoError(t, m.Set(int64(i), int64(i)))
	}
	cp := *m
	var zero Map[string, record]
	for name, f := range mapCalls(&cp, 1, 100) {
		r := outcome(func() { _ = f() })
		require.NotNil(t, r, "copy: %s did not panic", name)
		assert.Contains(t, fmt.Sprint(r), "objects.Map.", name)
		assert.Contains(t, fmt.Sprint(r), "not inside any open segment", "copy: %s", name)
	}
	for name, f := range mapCalls(&zero, "a", "b") {
		r := outcome(func() { _ = f() })
		require.NotNil(t, r, "Go variable: %s did not panic", name)
		assert.Contains(t, fmt.Sprint(r), "not inside any open segment", "Go variable: %s", name)
	}
	assert.Equal(t, 500, m.Len(), "the original is untouched")
	require.NoError(t, Destroy[Map[int64, int64]](seg, "m"))
	assert.True(t, seg.AllMemoryDeallocated())
}

// A Map in a segment opened read-only: every change is ErrReadOnly (not a
// panic, not a fault), reads work, and nothing changed.
func TestMapReadOnly(t *testing.T) {
	panicOnFault(t)
	path := filepath.Join(t.TempDir(), "ro.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	defer seg.Close()
	m, err := Construct(seg, "m", Map[string, record]{})
	require.NoError(t, err)
	for i := range 100 {
		r, _, err := m.GetOrInsert(mapKeyStr(int64(i)))
		require.NoError(t, err)
		r.ID = int64(i)
		require.NoError(t, r.Name.Set(kText(int64(i), 40)))
	}
	ro, err := mapped.Open(file.Path(path), mapped.OpenReadOnly)
	require.NoError(t, err)
	defer ro.Close()
	rm, err := Find[Map[string, record]](ro, "m")
	require.NoError(t, err)
	hdr := *rm
	present, absent := mapKeyStr(7), "absent"
	for name, f := range map[string]func() error{
		"Set new":              func() error { return rm.Set(absent, record{}) },
		"Set existing":         func() error { return rm.Set(present, record{ID: -1}) },
		"GetOrInsert new":      func() error { _, _, err := rm.GetOrInsert(absent); return err },
		"GetOrInsert existing": func() error { _, _, err := rm.GetOrInsert(present); return err },
		"Delete present":       func() error { _, err := rm.Delete(present); return err },
		"Delete absent":        func() error { _, err := rm.Delete(absent); return err },
		"Clear":                rm.Clear,
		"Destroy":              func() error { return Destroy[Map[string, record]](ro, "m") },
	} {
		var err error
		r := outcome(func() { err = f() })
		require.Nil(t, r, "%s panicked", name)
		assert.ErrorIs(t, err, mapped.ErrReadOnly, name)
	}
	assert.Equal(t, hdr, *rm)
	assert.Equal(t, 100, rm.Len())
	r, ok := rm.Get(present)
	require.True(t, ok)
	assert.Equal(t, int64(7), r.ID)
	assert.Equal(t, kText(7, 40), r.Name.String())
	n := 0
	for range rm.Range(mapKeyStr(10), mapKeyStr(20)) {
		n++
	}
	assert.Positive(t, n)
	require.NoError(t, Destroy[Map[string, record]](seg, "m"))
	assert.True(t, seg.AllMemoryDeallocated())
}

// mapSnapshot is everything a Map[string, record] holds, as a string.
func mapSnapshot(m *Map[string, record]) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v|", *(*[3]uint64)(unsafe.Pointer(m)))
	for k, r := range m.All() {
		fmt.Fprintf(&b, "%q:%d:%q:", k, r.ID, r.Name.String())
		for _, tag := range r.Tags.All() {
			fmt.Fprintf(&b, "%q,", tag.String())
		}
	}
	return b.String()
}

// mapFillLeaf inserts keys more(0), more(1), ... that land in the leaf
// where k would go (and zero values) until an insert of k would split
// that leaf.
func mapFillLeaf[K comparable, V any](t *testing.T, m *Map[K, V], k K, more func(int) K) {
	t.Helper()
	leafOf := func(k K) uint64 {
		o, err := m.op("test")
		require.NoError(t, err)
		var path [maxMapDepth]pathEnt
		d, _, err := o.descend(&k, &path)
		require.NoError(t, err)
		return path[d-1].nd
	}
	for i := 0; i < 1000; i++ {
		if _, splits, _ := mapPredictSet(m, k); splits > 0 {
			return
		}
		if x := more(i); leafOf(x) == leafOf(k) {
			_, _, err := m.GetOrInsert(x)
			require.NoError(t, err)
		}
	}
	t.Fatalf("the leaf of %v did not fill", k)
}

// In a full fixed-size segment a Set or GetOrInsert of a new key that
// splits its leaf or needs a block for its string (and a Set over an
// existing one whose value owns blocks, which rewrites its leaf) is
// ErrNoSpace and leaves the map and the segment's accounting as they
// were; a new key that fits its leaf goes in place, and Clear needs no
// block: both work.
func TestMapNoSpaceLeavesItUnchanged(t *testing.T) {
	panicOnFault(t)
	path := filepath.Join(t.TempDir(), "full.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(256<<10), mapped.WithFixedSize())
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	free0 := seg.FreeMemory()
	m, err := Construct(seg, "m", Map[string, record]{})
	require.NoError(t, err)
	ints, err := Construct(seg, "ints", Map[int64, int64]{})
	require.NoError(t, err)
	for i := range 200 {
		r, _, err := m.GetOrInsert(mapKeyStr(int64(2 * i)))
		require.NoError(t, err)
		r.ID = int64(i)
		require.NoError(t, r.Name.Set(kText(int64(i), 30)))
		require.NoError(t, r.Tags.Append(String{}))
		require.NoError(t, r.Tags.At(0).Set(kText(int64(-i), 25)))
		require.NoError(t, ints.Set(int64(2*i), int64(i)))
	}
	_, err = mapVerify(m, strings.Compare)
	require.NoError(t, err)
	// A new key that fits its leaf goes in place and needs no block
	// unless its string does: fill the leaves where the short keys below
	// go, so that they split. Keys just after k land in k's leaf.
	for _, k := range []string{mapKeyStr(3), mapKeyStr(7)} {
		mapFillLeaf(t, m, k, func(i int) string { return k + strconv.Itoa(i) })
	}
	mapFillLeaf(t, ints, 1, func(i int) int64 { return int64(-1 - i) })
	mapFillLeaf(t, ints, 1000, func(i int) int64 { return int64(1001 + i) })
	roomy := int64(201) // a key whose leaf has room
	for ; ; roomy += 2 {
		if _, splits, _ := mapPredictSet(ints, roomy); splits == 0 {
			break
		}
	}

	release := fillSegment(t, seg)
	before, beforeInts, free := mapSnapshot(m), *ints, seg.FreeMemory()
	intsLen := ints.Len()
	for _, c := range []struct {
		name string
		f    func() error
	}{
		{"Set of a new short key", func() error { return m.Set(mapKeyStr(3), record{ID: 1}) }},
		{"Set of a new long key", func() error { return m.Set(mapKeyStr(5), record{ID: 1}) }},
		{"GetOrInsert of a new key", func() error { _, _, err := m.GetOrInsert(mapKeyStr(7)); return err }},
		{"Set over a key whose value owns strings", func() error { return m.Set(mapKeyStr(4), record{ID: -1}) }},
		{"Set of a new int key", func() error { return ints.Set(1, 1) }},
		{"Set of a new int key at the end", func() error { return ints.Set(1000, 1) }},
	} {
		err := c.f()
		require.ErrorIs(t, err, mapped.ErrNoSpace, c.name)
		assert.Equal(t, before, mapSnapshot(m), "%s left the map as it was", c.name)
		assert.Equal(t, beforeInts, *ints, c.name)
		assert.Equal(t, intsLen, ints.Len(), c.name)
		assert.Equal(t, free, seg.FreeMemory(), c.name)
		require.NoError(t, seg.CheckSanity(), c.name)
		_, err = mapVerify(m, strings.Compare)
		require.NoError(t, err, c.name)
	}
	// A new fixed-size key in a leaf with room takes no block.
	require.NoError(t, ints.Set(roomy, 7))
	v, ok := ints.Get(roomy)
	require.True(t, ok)
	assert.Equal(t, int64(7), *v)
	assert.Equal(t, intsLen+1, ints.Len())
	assert.Equal(t, free, seg.FreeMemory())
	_, err = mapVerify(ints, cmp.Compare[int64])
	require.NoError(t, err)
	// A Delete rewrites the nodes it changes too: it may need a block, and
	// then is ErrNoSpace with the map unchanged.
	for _, k := range []string{mapKeyStr(4), mapKeyStr(100)} {
		ok, err := m.Delete(k)
		if err != nil {
			require.ErrorIs(t, err, mapped.ErrNoSpace)
			assert.Equal(t, before, mapSnapshot(m))
		} else {
			require.True(t, ok)
			before = mapSnapshot(m)
		}
	}
	// A plain value over an existing key is written in place.
	require.NoError(t, ints.Set(10, -10))
	v, _ = ints.Get(10)
	assert.Equal(t, int64(-10), *v)
	// Clear needs no block, and gives the space back.
	require.NoError(t, m.Clear())
	assert.Equal(t, 0, m.Len())
	assert.Greater(t, seg.FreeMemory(), free)
	require.NoError(t, m.Set(mapKeyStr(3), record{ID: 3}))
	release()
	require.NoError(t, ints.Set(1, 1))
	require.NoError(t, seg.CheckSanity())
	require.NoError(t, Destroy[Map[string, record]](seg, "m"))
	require.NoError(t, Destroy[Map[int64, int64]](seg, "ints"))
	assert.True(t, seg.AllMemoryDeallocated())
	assert.Equal(t, free0, seg.FreeMemory())
}

// A NaN key cannot be ordered: Set and GetOrInsert refuse it with
// ErrInvalidKey (also as an element of an array key), reads and Delete
// do not find it, and the map does not change.
func TestMapNaNKeys(t *testing.T) {
	seg := newSeg(t)
	f, err := Construct(seg, "f", Map[float64, int64]{})
	require.NoError(t, err)
	a, err := Construct(seg, "a", Map[[2]float32, int64]{})
	require.NoError(t, err)
	for i := range 300 {
		require.NoError(t, f.Set(float64(i)-100.5, int64(i)))
		require.NoError(t, a.Set([2]float32{float32(i % 7), float32(i)}, int64(i)))
	}
	fh, ah := *f, *a
	nan := math.NaN()
	assert.ErrorIs(t, f.Set(nan, 1), ErrInvalidKey)
	_, _, err = f.GetOrInsert(nan)
	assert.ErrorIs(t, err, ErrInvalidKey)
	for _, k := range [][2]float32{{float32(nan), 0}, {1, float32(nan)}} {
		assert.ErrorIs(t, a.Set(k, 1), ErrInvalidKey)
		_, _, err = a.GetOrInsert(k)
		assert.ErrorIs(t, err, ErrInvalidKey)
		assert.False(t, a.Has(k))
		ok, err := a.Delete(k)
		assert.NoError(t, err)
		assert.False(t, ok)
	}
	v, ok := f.Get(nan)
	assert.False(t, ok)
	assert.Nil(t, v)
	ok, err = f.Delete(nan)
	assert.NoError(t, err)
	assert.False(t, ok)
	assert.Equal(t, fh, *f)
	assert.Equal(t, ah, *a)
	assert.Equal(t, 300, f.Len())
	// Infinities and signed zeros are ordered keys (-0 and +0 are one).
	require.NoError(t, f.Set(math.Inf(-1), -1))
	require.NoError(t, f.Set(math.Inf(1), 1))
	require.NoError(t, f.Set(math.Copysign(0, -1), 7))
	v, ok = f.Get(0)
	require.True(t, ok)
	assert.Equal(t, int64(7), *v)
	k, _, _ := f.Min()
	assert.True(t, math.IsInf(k, -1))
	k, _, _ = f.Max()
	assert.True(t, math.IsInf(k, 1))
	_, err = mapVerify(f, cmp.Compare[float64])
	require.NoError(t, err)
	require.NoError(t, Destroy[Map[float64, int64]](seg, "f"))
	require.NoError(t, Destroy[Map[[2]float32, int64]](seg, "a"))
	assert.True(t, seg.AllMemoryDeallocated())
}

// Damaged node words: a count beyond the node's capacity, children
// outside the segment or misaligned, a node that is its own child, a
// string key's block outside the segment, a root outside the segment.
// Every method reports mapped.ErrCorrupt (by error, or by a panic
// carrying it) and nothing faults.
func TestMapDamagedNodes(t *testing.T) {
	panicOnFault(t)
	seg := newSeg(t)
	size := uint64(seg.Size())
	ints, err := Construct(seg, "ints", Map[int64, int64]{})
	require.NoError(t, err)
	strs, err := Construct(seg, "strs", Map[string, int64]{})
	require.NoError(t, err)
	for i := range 3000 {
		require.NoError(t, ints.Set(int64(i), int64(i)))
	}
	for i := range 400 {
		require.NoError(t, strs.Set(mapKeyStr(int64(i))+strings.Repeat("!", 20), int64(i)))
	}
	st, err := mapVerify(ints, cmp.Compare[int64])
	require.NoError(t, err)
	require.GreaterOrEqual(t, st.depth, 3)
	io, err := ints.op("test")
	require.NoError(t, err)
	so, err := strs.op("test")
	require.NoError(t, err)

	// damage changes the words ws (pointers into the segment) to the
	// values of bad, runs every method of ints and strs, and puts the
	// words back.
	damage := func(what string, ws []*uint64, bad func(i int, good uint64) uint64, mk func() map[string]func() error) {
		t.Helper()
		good := make([]uint64, len(ws))
		for i, w := range ws {
			good[i] = *w
			*w = bad(i, good[i])
		}
		for name, f := range mk() {
			if name == "Len" || name == "Clear" {
				continue // Len reads only the header; Clear below
			}
			corruptOutcome(t, fmt.Sprintf("%s: %s", what, name), f)
		}
		for i, w := range ws {
			*w = good[i]
		}
	}
	intCalls := func() map[string]func() error { return mapCalls(ints, 1500, 2500) }
	strCalls := func() map[string]func() error { return mapCalls(strs, mapKeyStr(5), mapKeyStr(9)) }
	rootChildren := func(o *mapOp[int64, int64], nd uint64) []*uint64 {
		n, leaf, err := o.node(nd)
		require.NoError(t, err)
		require.False(t, leaf)
		var ws []*uint64
		for i := 0; i <= n; i++ {
			ws = append(ws, o.child(nd, i))
		}
		return ws
	}
	rootHdr := (*uint64)(io.at(ints.root))
	damage("root count beyond capacity", []*uint64{rootHdr}, func(_ int, g uint64) uint64 { return g | 0xffff }, intCalls)
	damage("root count of 65", []*uint64{rootHdr}, func(_ int, g uint64) uint64 { return g&^0xffff | 65 }, intCalls)
	kids := rootChildren(&io, ints.root)
	damage("children far outside", kids, func(int, uint64) uint64 { return 1 << 50 }, intCalls)
	damage("children past the end", kids, func(int, uint64) uint64 { return size - 8 }, intCalls)
	damage("children misaligned", kids, func(_ int, g uint64) uint64 { return g + 4 }, intCalls)
	damage("children at offset 0", kids, func(int, uint64) uint64 { return 0 }, intCalls)
	damage("children at offset 64", kids, func(int, uint64) uint64 { return 64 }, intCalls)
	damage("children that are the root", kids, func(int, uint64) uint64 { return ints.root }, intCalls)
	// A leaf's count beyond its capacity: every leaf.
	var leaves []*uint64
	var walk func(nd uint64)
	walk = func(nd uint64) {
		n, leaf, err := io.node(nd)
		require.NoError(t, err)
		if leaf {
			leaves = append(leaves, (*uint64)(io.at(nd)))
			return
		}
		for i := 0; i <= n; i++ {
			walk(*io.child(nd, i))
		}
	}
	walk(ints.root)
	damage("leaf counts beyond capacity", leaves, func(_ int, g uint64) uint64 { return g&^0xffff | uint64(io.g.leafCap+1) }, intCalls)
	rootWord := (*uint64)(unsafe.Pointer(&ints.root))
	damage("root far outside", []*uint64{rootWord}, func(int, uint64) uint64 { return 1 << 45 }, intCalls)
	damage("root misaligned", []*uint64{rootWord}, func(_ int, g uint64) uint64 { return g + 1 }, intCalls)

	// String keys: every long key's block word (in every node), and its
	// length, outside the segment.
	var slots []*uint64
	var lens []*uint64
	var walkS func(nd uint64)
	walkS = func(nd uint64) {
		n, leaf, err := so.node(nd)
		require.NoError(t, err)
		for i := range n {
			w := (*[3]uint64)(so.key(nd, i))
			if w[0]&keyInline == 0 {
				lens = append(lens, &w[0])
				slots = append(slots, &w[1])
			}
		}
		if !leaf {
			for i := 0; i <= n; i++ {
				walkS(*so.child(nd, i))
			}
		}
	}
	walkS(strs.root)
	require.NotEmpty(t, slots)
	damage("key blocks outside", slots, func(int, uint64) uint64 { return 1 << 50 }, strCalls)
	damage("key blocks past the end", slots, func(int, uint64) uint64 { return size - 4 }, strCalls)
	damage("key lengths beyond the segment", lens, func(int, uint64) uint64 { return 1 << 39 }, strCalls)
	damage("inline keys longer than a slot", lens, func(int, uint64) uint64 { return keyInline | 100 }, strCalls)

	// Put back, both verify and destroy cleanly.
	_, err = mapVerify(ints, cmp.Compare[int64])
	require.NoError(t, err)
	_, err = mapVerify(strs, strings.Compare)
	require.NoError(t, err)
	require.NoError(t, seg.CheckSanity())

	// Clear and Destroy of a damaged map: ErrCorrupt (what was freed
	// before the damage was met stays freed), no fault.
	for _, kid := range kids {
		*kid = 1 << 50
	}
	corruptOutcome(t, "Clear with children outside", ints.Clear)
	for _, l := range lens {
		*l = 1 << 39
	}
	corruptOutcome(t, "Destroy with key lengths outside", func() error { return Destroy[Map[string, int64]](seg, "strs") })
}
