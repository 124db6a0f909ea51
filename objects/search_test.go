package objects

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/mapped"
)

// TestCountBelowAVX512 checks the vector count against lowerWord's binary
// search, for every count of keys up to 64, keys at either end of the
// range, keys that are there and keys that are not, signed and unsigned.
func TestCountBelowAVX512(t *testing.T) {
	if !haveAVX512 {
		t.Skip("this machine has no AVX-512: searchWord uses lowerWord")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	ends := []uint64{0, 1, math.MaxUint64, math.MaxUint64 - 1, 1 << 63, 1<<63 - 1}
	for it := range 100_000 {
		n := it % 65
		// A word before the keys, as a node's header is: lowerWord of no
		// keys reads the word before them (and ignores it).
		ws := make([]uint64, 65)[1:]
		for i := range ws {
			ws[i] = rng.Uint64() >> rng.IntN(64)
			if rng.IntN(8) == 0 {
				ws[i] = ends[rng.IntN(len(ends))]
			}
		}
		k := rng.Uint64() >> rng.IntN(64)
		switch rng.IntN(4) {
		case 0:
			k = ends[rng.IntN(len(ends))]
		case 1:
			if n > 0 {
				k = ws[rng.IntN(n)]
			}
		}
		chunks := max((n+7)/8, 1)
		slices.Sort(ws[:n])
		want := lowerWord(unsafe.Pointer(&ws[0]), n, 64, k, false)
		require.Equal(t, want, countBelowAVX512(unsafe.Pointer(&ws[0]), n, k, false, chunks), "unsigned: n %d, k %#x, keys %#x", n, k, ws[:n])
		s := unsafe.Slice((*int64)(unsafe.Pointer(&ws[0])), 64)
		slices.Sort(s[:n])
		want = lowerWord(unsafe.Pointer(&ws[0]), n, 64, int64(k), false)
		require.Equal(t, want, countBelowAVX512(unsafe.Pointer(&ws[0]), n, k, true, chunks), "signed: n %d, k %d, keys %d", n, int64(k), s[:n])
	}
}

// TestWalkAVX512MatchesWalkWord walks maps of uint64 and of int64 keys
// for keys that are there, keys that are not and the ends of the range,
// with walkAVX512 and with walkWord's Go walk, and requires the same
// leaf, place, depth, answer and path.
func TestWalkAVX512MatchesWalkWord(t *testing.T) {
	seg := newSeg(t)
	require.NoError(t, seg.Grow(16<<20))
	uends := []uint64{0, 1, math.MaxUint64, math.MaxUint64 - 1, 1 << 63, 1<<63 - 1}
	ukey := func(r *rand.Rand) uint64 { return r.Uint64() >> r.IntN(64) }
	sends := []int64{0, -1, 1, math.MinInt64, math.MinInt64 + 1, math.MaxInt64, math.MaxInt64 - 1}
	skey := func(r *rand.Rand) int64 { return int64(r.Uint64()) >> r.IntN(64) }
	// Nodes of 8-byte values, and of 4-byte values (leaves smaller than
	// inner nodes).
	t.Run("uint64", func(t *testing.T) {
		walkBothWays(t, seg, "u", ukey, uends, func(k uint64) float64 { return float64(k) })
	})
	t.Run("int64", func(t *testing.T) {
		walkBothWays(t, seg, "s", skey, sends, func(k int64) float64 { return float64(k) })
	})
	t.Run("uint64 to float32", func(t *testing.T) {
		walkBothWays(t, seg, "u4", ukey, uends, func(k uint64) float32 { return float32(k) })
	})
	t.Run("int64 to int32", func(t *testing.T) {
		walkBothWays(t, seg, "s4", skey, sends, func(k int64) int32 { return int32(k) })
	})
}

func walkBothWays[K uint64 | int64, V float64 | float32 | int32](t *testing.T, seg *mapped.Segment, name string, key func(*rand.Rand) K, ends []K, val func(K) V) {
	m, err := Construct(seg, name, Map[K, V]{})
	require.NoError(t, err)
	g, err := mapGeoOf[K, V]()
	require.NoError(t, err)
	if !g.walk.asm {
		t.Skip("this machine has no AVX-512, or the geometry is not walkAVX512's: walkWord walks in Go")
	}
	goWalk := *g
	goWalk.walk.asm = false
	rng := rand.New(rand.NewPCG(5, 6))
	probe := func(k K) {
		var pa, pg [maxMapDepth]pathEnt
		leaf, i, d, res := walkAVX512(seg.Base(), seg.Bound(), m.root, uint64(k), &g.walk, &pa)
		require.Less(t, res, 2, "key %d: the walk gave up", k)
		gl, gi, gd, gfound, bad := walkWord(seg, seg.Base(), &goWalk, m.root, k, &pg)
		require.False(t, bad)
		require.Equal(t, []any{gl, gi, gd, gfound}, []any{leaf, i, d, res == 1}, "key %d", k)
		require.Equal(t, pg[:gd], pa[:d], "key %d: the path", k)
		v, ok := m.Get(k)
		require.Equal(t, gfound, ok)
		if ok {
			require.Equal(t, val(k), *v)
		}
	}
	var keys []K
	for _, n := range []int{1, 31, 32, 1000, 40_000} {
		for len(keys) < n {
			k := key(rng)
			if len(keys) < len(ends) {
				k = ends[len(keys)]
			}
			if _, there := m.Get(k); there {
				continue
			}
			require.NoError(t, m.Set(k, val(k)))
			keys = append(keys, k)
		}
		for _, k := range ends {
			probe(k)
		}
		for range 2000 {
			probe(keys[rng.IntN(len(keys))])
			probe(key(rng))
		}
	}
	// Deleted keys stay in their leaves past the count: never found.
	for _, k := range keys[:2000] {
		ok, err := m.Delete(k)
		require.NoError(t, err)
		require.True(t, ok)
		probe(k)
	}
	for _, k := range keys[:2000] {
		probe(k)
	}

	// What walkAVX512 leaves to walkWord: a node not below the limit,
	// misaligned, with a count over its capacity, a walk too deep.
	unsure := func(what string, nd, limit uint64) {
		t.Helper()
		_, _, _, res := walkAVX512(seg.Base(), limit, nd, uint64(keys[0]), &g.walk, nil)
		require.Equal(t, 2, res, what)
	}
	unsure("a limit below the root's end", m.root, m.root+g.walk.maxSize-1)
	unsure("a misaligned root", m.root+4, seg.Bound())
	// A node that would be a good leaf holding keys[0] but for its
	// misaligned offset.
	var buf [128]uint64
	fake := unsafe.Add(unsafe.Pointer(&buf[0]), 12)
	*(*uint64)(fake) = nodeLeaf | 1
	*(*K)(unsafe.Add(fake, nodeHdr)) = keys[0]
	_, _, _, res0 := walkAVX512(unsafe.Pointer(&buf[0]), uint64(len(buf)*8), 12, uint64(keys[0]), &g.walk, nil)
	require.Equal(t, 2, res0, "a misaligned leaf")
	*(*uint64)(unsafe.Add(fake, -4)) = nodeLeaf | 1
	*(*K)(unsafe.Add(fake, nodeHdr-4)) = keys[0]
	_, _, _, res0 = walkAVX512(unsafe.Pointer(&buf[0]), uint64(len(buf)*8), 8, uint64(keys[0]), &g.walk, nil)
	require.Equal(t, 1, res0, "the same leaf, aligned")
	unsure("a root past the end", seg.Bound(), seg.Bound())
	hdr := (*uint64)(unsafe.Add(seg.Base(), m.root))
	require.Zero(t, *hdr&nodeLeaf, "the root is an inner node")
	good := *hdr
	var lo, hi K
	for _, k := range ends {
		lo, hi = min(lo, k), max(hi, k)
	}
	// The word past the last child of a full root (inside the node's
	// block, whose size class is 512) made a good child, so that only the
	// capacity check stops the walk.
	require.LessOrEqual(t, g.walk.childOff+uint64(g.innerCap+2)*8, uint64(512))
	require.LessOrEqual(t, g.inSize, uintptr(512))
	past := (*uint64)(unsafe.Add(seg.Base(), m.root+g.walk.childOff+uint64(g.innerCap+1)*8))
	pastGood := *past
	*past = *(*uint64)(unsafe.Add(seg.Base(), m.root+g.walk.childOff))
	defer func() { *past = pastGood }()
	for _, n := range []uint64{uint64(g.innerCap + 1), 0xffff} {
		*hdr = good&^0xffff | n
		_, _, _, res := walkAVX512(seg.Base(), seg.Bound(), m.root, uint64(hi), &g.walk, nil)
		require.Equal(t, 2, res, "an inner count of %d, over the capacity", n)
	}
	*hdr = good
	leaf, _, _, res := walkAVX512(seg.Base(), seg.Bound(), m.root, uint64(keys[0]), &g.walk, nil)
	require.Less(t, res, 2)
	lh := (*uint64)(unsafe.Add(seg.Base(), leaf))
	good = *lh
	*lh = good&^0xffff | uint64(g.leafCap+1)
	unsure("a leaf count over the capacity", m.root, seg.Bound())
	*lh = good
	// A root whose first child is the root: a cycle.
	c0 := (*uint64)(unsafe.Add(seg.Base(), m.root+g.walk.childOff))
	good = *c0
	*c0 = m.root
	_, _, _, res = walkAVX512(seg.Base(), seg.Bound(), m.root, uint64(lo), &g.walk, nil)
	require.Equal(t, 2, res, "a walk in a cycle")
	*c0 = good
}

// noVecVal is a value type of its own, so that its Map's geometry is
// built while TestMapWithoutAVX512 says the machine has no AVX-512.
type noVecVal struct{ V int32 }

// TestMapWithoutAVX512 runs a Map as on a machine without AVX-512 (the
// walk in Go, lowerWord's binary search) against a model.
func TestMapWithoutAVX512(t *testing.T) {
	old := haveAVX512
	haveAVX512 = false
	defer func() { haveAVX512 = old }()
	seg := newSeg(t)
	require.NoError(t, seg.Grow(8<<20))
	m, err := Construct(seg, "m", Map[int64, noVecVal]{})
	require.NoError(t, err)
	g, err := mapGeoOf[int64, noVecVal]()
	require.NoError(t, err)
	require.False(t, g.walk.asm)
	model := map[int64]noVecVal{}
	rng := rand.New(rand.NewPCG(7, 8))
	for step := range 30_000 {
		k := int64(rng.IntN(20_000)) - 10_000
		if step%50 == 0 {
			k = []int64{math.MinInt64, math.MaxInt64, 0, -1}[rng.IntN(4)]
		}
		if rng.IntN(3) == 0 {
			ok, err := m.Delete(k)
			require.NoError(t, err)
			_, there := model[k]
			require.Equal(t, there, ok)
			delete(model, k)
			continue
		}
		v := noVecVal{int32(step)}
		require.NoError(t, m.Set(k, v))
		model[k] = v
	}
	checkMap(t, m, model)
}
