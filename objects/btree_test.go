package objects

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

// checkMap compares m with the model, in order, through All, Get, Len,
// Min and Max, and the segment's sanity.
func checkMap[K int64 | string, V comparable](t *testing.T, m *Map[K, V], model map[K]V) {
	t.Helper()
	keys := make([]K, 0, len(model))
	for k := range model {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	require.Equal(t, len(model), m.Len())
	i := 0
	for k, v := range m.All() {
		require.Less(t, i, len(keys), "more keys than the model")
		require.Equal(t, keys[i], k, "key %d", i)
		require.Equal(t, model[k], *v, "value of %v", k)
		i++
	}
	require.Equal(t, len(keys), i)
	for _, k := range keys {
		v, ok := m.Get(k)
		require.True(t, ok, "%v", k)
		require.Equal(t, model[k], *v)
	}
	if len(keys) > 0 {
		k, _, ok := m.Min()
		require.True(t, ok)
		require.Equal(t, keys[0], k)
		k, _, ok = m.Max()
		require.True(t, ok)
		require.Equal(t, keys[len(keys)-1], k)
	}
}

func TestMapInt64AgainstModel(t *testing.T) {
	seg := newSeg(t)
	free0 := seg.FreeMemory()
	m, err := Construct(seg, "m", Map[int64, float64]{})
	require.NoError(t, err)
	model := map[int64]float64{}
	rng := rand.New(rand.NewPCG(3, 4))
	for step := range 20000 {
		k := int64(rng.IntN(3000))
		switch rng.IntN(10) {
		case 0, 1, 2, 3, 4:
			require.NoError(t, m.Set(k, float64(step)))
			model[k] = float64(step)
		case 5:
			p, ins, err := m.GetOrInsert(k)
			require.NoError(t, err)
			_, had := model[k]
			require.Equal(t, !had, ins)
			*p += 1
			model[k] += 1
		default:
			ok, err := m.Delete(k)
			require.NoError(t, err)
			_, had := model[k]
			require.Equal(t, had, ok)
			delete(model, k)
		}
		if step%2000 == 0 {
			checkMap(t, m, model)
			require.NoError(t, seg.CheckSanity())
		}
	}
	checkMap(t, m, model)
	// Range is half-open.
	var got []int64
	for k := range m.Range(100, 200) {
		got = append(got, k)
	}
	var want []int64
	for k := range model {
		if k >= 100 && k < 200 {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	assert.Equal(t, want, got)
	// Delete everything: the tree shrinks back to nothing.
	for k := range model {
		ok, err := m.Delete(k)
		require.NoError(t, err)
		require.True(t, ok)
	}
	assert.Equal(t, 0, m.Len())
	require.NoError(t, Destroy[Map[int64, float64]](seg, "m"))
	assert.True(t, seg.AllMemoryDeallocated())
	assert.Equal(t, free0, seg.FreeMemory())
}

func TestMapStringKeysAndNestedValues(t *testing.T) {
	seg := newSeg(t)
	people, err := Construct(seg, "people", Map[string, record]{})
	require.NoError(t, err)
	name := func(i int) string {
		if i%3 == 0 {
			return fmt.Sprintf("p%d", i) // inline
		}
		return fmt.Sprintf("a rather long person name number %06d", i)
	}
	for i := range 500 {
		r, ins, err := people.GetOrInsert(name(i))
		require.NoError(t, err)
		require.True(t, ins)
		r.ID = int64(i)
		require.NoError(t, r.Name.Set(fmt.Sprintf("Person %d, with a long display name", i)))
		for j := range i % 4 {
			require.NoError(t, r.Tags.Append(String{}))
			require.NoError(t, r.Tags.At(j).Set(fmt.Sprintf("tag %d of %d, long enough to own a block", j, i)))
		}
	}
	require.NoError(t, seg.CheckSanity())
	r, ok := people.Get(name(7))
	require.True(t, ok)
	assert.Equal(t, int64(7), r.ID)
	assert.Equal(t, "tag 2 of 7, long enough to own a block", r.Tags.At(2).String())
	k7 := name(7)
	assert.Equal(t, 0.0, testing.AllocsPerRun(100, func() { people.Has(k7) }), "a lookup by Go string")
	for i := 0; i < 500; i += 2 {
		ok, err := people.Delete(name(i))
		require.NoError(t, err)
		require.True(t, ok)
	}
	require.NoError(t, people.Set(name(1), record{ID: -1})) // replaces, freeing the old value's storage
	r, _ = people.Get(name(1))
	assert.Equal(t, int64(-1), r.ID)
	assert.Equal(t, 250, people.Len())
	prev := ""
	for k := range people.All() {
		require.Less(t, prev, k)
		prev = k
	}
	require.NoError(t, seg.CheckSanity())
	require.NoError(t, Destroy[Map[string, record]](seg, "people"))
	assert.True(t, seg.AllMemoryDeallocated())
}

func TestMapRefusesNaNAndClears(t *testing.T) {
	seg := newSeg(t)
	m, err := Construct(seg, "f", Map[float64, int64]{})
	require.NoError(t, err)
	assert.ErrorIs(t, m.Set(math.NaN(), 1), ErrInvalidKey)
	for i := range 1000 {
		require.NoError(t, m.Set(float64(i)/3, int64(i)))
	}
	require.NoError(t, m.Clear())
	assert.Equal(t, 0, m.Len())
	_, ok := m.Get(1.0 / 3)
	assert.False(t, ok)
	require.NoError(t, m.Set(2, 2))
	require.NoError(t, Destroy[Map[float64, int64]](seg, "f"))
	assert.True(t, seg.AllMemoryDeallocated())
}

func TestMapRangeWithNaNBoundIsEmpty(t *testing.T) {
	seg := newSeg(t)
	m, err := Construct(seg, "f", Map[float64, int64]{})
	require.NoError(t, err)
	for i := range 100 {
		require.NoError(t, m.Set(float64(i), int64(i)))
	}
	for _, r := range [][2]float64{{math.NaN(), 50}, {10, math.NaN()}} {
		n := 0
		for range m.Range(r[0], r[1]) {
			n++
		}
		assert.Zero(t, n, "Range(%v, %v)", r[0], r[1])
	}
}

// laneRoom, which decides whether an insert goes in place, is what a
// mapped.Lane records: a save that fills it is taken, a byte more is
// ErrLaneFull, whose message names the same size.
func TestMapLaneRoom(t *testing.T) {
	require.Contains(t, mapped.ErrLaneFull.Error(), fmt.Sprintf("(%d bytes)", laneRoom))
	seg, err := mapped.Open(file.Path(filepath.Join(t.TempDir(), "room.seg")), mapped.CreateOnly, mapped.WithSize(256<<10))
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	blk, err := seg.Allocate(laneRoom)
	require.NoError(t, err)
	p := unsafe.Pointer(unsafe.SliceData(blk))
	l, err := seg.BeginLane()
	require.NoError(t, err)
	require.NoError(t, l.Save(p, laneRoom-16)) // an entry: two words, then the bytes
	require.ErrorIs(t, l.Save(p, 1), mapped.ErrLaneFull)
	l.Abort()
	l, err = seg.BeginLane()
	require.NoError(t, err)
	require.ErrorIs(t, l.Save(p, laneRoom-15), mapped.ErrLaneFull)
	l.Abort()
	// The largest in-place insert of a Map[int64, int64] fits.
	g, err := mapGeoOf[int64, int64]()
	require.NoError(t, err)
	moved := 0
	for g.laneSaves(moved+1) <= laneRoom {
		moved++
	}
	assert.Less(t, moved, g.leafCap, "an insert at the start of a nearly full leaf does not fit")
	assert.Greater(t, moved, g.leafCap*3/4, "most inserts fit")
}
