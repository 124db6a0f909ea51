package objects

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHashMapAgainstModel(t *testing.T) {
	seg := newSeg(t)
	free0 := seg.FreeMemory()
	h, err := Construct(seg, "h", HashMap[int64, int64]{})
	require.NoError(t, err)
	model := map[int64]int64{}
	rng := rand.New(rand.NewPCG(5, 6))
	check := func() {
		require.Equal(t, len(model), h.Len())
		seen := 0
		for k, v := range h.All() {
			want, ok := model[k]
			require.True(t, ok, "key %d not in the model", k)
			require.Equal(t, want, *v)
			seen++
		}
		require.Equal(t, len(model), seen)
		require.NoError(t, seg.CheckSanity())
	}
	for step := range 30000 {
		k := int64(rng.IntN(4000))
		switch rng.IntN(8) {
		case 0, 1, 2, 3:
			require.NoError(t, h.Set(k, int64(step)))
			model[k] = int64(step)
		case 4:
			p, ins, err := h.GetOrInsert(k)
			require.NoError(t, err)
			_, had := model[k]
			require.Equal(t, !had, ins)
			*p++
			model[k]++
		case 5:
			v, ok := h.Get(k)
			want, had := model[k]
			require.Equal(t, had, ok)
			if ok {
				require.Equal(t, want, *v)
			}
		default:
			ok, err := h.Delete(k)
			require.NoError(t, err)
			_, had := model[k]
			require.Equal(t, had, ok)
			delete(model, k)
		}
		if step%3000 == 0 {
			check()
		}
	}
	check()
	require.NoError(t, h.Clear())
	assert.Equal(t, 0, h.Len())
	require.NoError(t, h.Set(1, 1))
	require.NoError(t, Destroy[HashMap[int64, int64]](seg, "h"))
	assert.True(t, seg.AllMemoryDeallocated())
	assert.Equal(t, free0, seg.FreeMemory())
}

func TestHashMapNested(t *testing.T) {
	seg := newSeg(t)
	h, err := Construct(seg, "h", HashMap[int64, Map[string, Vector[int64]]]{})
	require.NoError(t, err)
	// Thousands of blocks: 400 inner maps (nodes and key blocks), and a
	// vector in most of their entries.
	for i := range 400 {
		inner, _, err := h.GetOrInsert(int64(i))
		require.NoError(t, err)
		for j := range i % 7 {
			vec, _, err := inner.GetOrInsert(fmt.Sprintf("a key long enough to own a block %d", j))
			require.NoError(t, err)
			for x := range j * 10 {
				require.NoError(t, vec.Append(int64(x)))
			}
		}
	}
	inner, ok := h.Get(13)
	require.True(t, ok)
	assert.Equal(t, 6, inner.Len())
	vec, ok := inner.Get("a key long enough to own a block 5")
	require.True(t, ok)
	assert.Equal(t, 50, vec.Len())
	for i := 0; i < 400; i += 3 {
		ok, err := h.Delete(int64(i))
		require.NoError(t, err)
		require.True(t, ok)
	}
	require.NoError(t, seg.CheckSanity())
	require.NoError(t, Destroy[HashMap[int64, Map[string, Vector[int64]]]](seg, "h"))
	assert.True(t, seg.AllMemoryDeallocated())
}

func TestHashMapStringKeysNoAlloc(t *testing.T) {
	seg := newSeg(t)
	h, err := Construct(seg, "h", HashMap[string, int64]{})
	require.NoError(t, err)
	for i := range 1000 {
		require.NoError(t, h.Set(fmt.Sprintf("key number %d, long or short", i), int64(i)))
	}
	k := "key number 77, long or short"
	v, ok := h.Get(k)
	require.True(t, ok)
	assert.Equal(t, int64(77), *v)
	assert.Equal(t, 0.0, testing.AllocsPerRun(100, func() { h.Has(k) }))
	require.NoError(t, Destroy[HashMap[string, int64]](seg, "h"))
	assert.True(t, seg.AllMemoryDeallocated())
}

// The hash is part of the segment's format: pinned, so that a change is
// seen (segments written before it would be unreadable).
func TestHashIsStable(t *testing.T) {
	g64, err := mapGeoOf[uint64, int64]()
	require.NoError(t, err)
	gf, err := mapGeoOf[float64, int64]()
	require.NoError(t, err)
	u := uint64(12345)
	zero, negZero := 0.0, math.Copysign(0, -1)
	assert.Equal(t, gf.hashFixed(unsafePtr(&zero)), gf.hashFixed(unsafePtr(&negZero)), "-0 and 0 are one key")
	got := []uint64{hashBytes(nil), hashBytes([]byte("a")), hashBytes([]byte("mapstore, a stable hash")), g64.hashFixed(unsafePtr(&u))}
	want := []uint64{0xb800bd6c02472607, 0x8b4b371748f69740, 0xb163223c3094d7b8, 0xe40323bc5c6db831}
	for i := range got {
		assert.Equal(t, fmt.Sprintf("%#x", want[i]), fmt.Sprintf("%#x", got[i]), "hash %d", i)
	}
}
