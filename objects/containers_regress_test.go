package objects

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regressions found by the property tests.

// An Insert that fits the capacity keeps it, however many elements it
// inserts: one too large to move in place within a lane record used to
// double the capacity on every call, so that repeated inserts of 33 or
// more int64s grew the vector (and the segment) exponentially.
func TestVectorInsertWithinCapacityKeepsCapacity(t *testing.T) {
	seg := newSeg(t)
	v, err := Construct(seg, "v", Vector[int64]{})
	require.NoError(t, err)
	require.NoError(t, v.Reserve(1000))
	c := v.Cap()
	var model []int64
	xs := make([]int64, 40)
	for k := range 20 {
		for i := range xs {
			xs[i] = int64(k*100 + i)
		}
		require.NoError(t, v.Insert(len(model)/2, xs...))
		model = slices.Insert(model, len(model)/2, xs...)
		require.Equal(t, c, v.Cap(), "insert %d of %d elements into %d of capacity %d", k, len(xs), len(model)-len(xs), c)
	}
	assert.Equal(t, model, v.Slice())
	require.NoError(t, Destroy[Vector[int64]](seg, "v"))
	assert.True(t, seg.AllMemoryDeallocated())
	require.NoError(t, seg.CheckSanity())
}
