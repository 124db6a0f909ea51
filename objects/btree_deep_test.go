package objects

import (
	"cmp"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

// Deterministic growth and shrinking of Maps whose nodes hold few keys,
// so that splits and merges reach the root many times, with the
// structure verified along the way.

func cmpKey16(a, b [16]int64) int {
	for i := range a {
		if c := cmp.Compare(a[i], b[i]); c != 0 {
			return c
		}
	}
	return 0
}

func key16(i int) [16]int64 {
	var k [16]int64
	k[0], k[15] = int64(i), -int64(i)
	return k
}

// A Map with the largest keys (128 bytes) has the narrowest inner nodes:
// the tree it grows must stay shallow enough that the nodes one call
// changes fit in a lane. Inner nodes of 4 keys made a tree of 10 levels
// at 78,732 keys inserted in order, and every later Set on its right edge
// failed with ErrLaneFull.
func TestMapLargeKeysStayWithinALane(t *testing.T) {
	seg, err := mapped.Open(file.Path(filepath.Join(t.TempDir(), "deep.seg")), mapped.CreateOnly, mapped.WithSize(64<<20))
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	free0 := seg.FreeMemory()
	m, err := Construct(seg, "m", Map[[16]int64, int64]{})
	require.NoError(t, err)
	const n = 100_000
	depth := 0
	for i := range n {
		require.NoError(t, m.Set(key16(i), int64(i)), "Set of key %d", i)
		if i%20_000 == 0 {
			st, err := mapVerify(m, cmpKey16)
			require.NoError(t, err)
			depth = st.depth
		}
	}
	st, err := mapVerify(m, cmpKey16)
	require.NoError(t, err)
	t.Logf("%d keys: %d levels, %d nodes", n, st.depth, st.nodes)
	assert.GreaterOrEqual(t, st.depth, depth)
	// Out from the middle, then from both ends: merges up to the root.
	for i := range n {
		j := (n/2 + i) % n
		ok, err := m.Delete(key16(j))
		require.NoError(t, err, "Delete of key %d", j)
		require.True(t, ok)
		if i%20_000 == 0 {
			_, err := mapVerify(m, cmpKey16)
			require.NoError(t, err)
		}
	}
	assert.Equal(t, 0, m.Len())
	require.NoError(t, Destroy[Map[[16]int64, int64]](seg, "m"))
	require.NoError(t, seg.CheckSanity())
	assert.True(t, seg.AllMemoryDeallocated())
	assert.Equal(t, free0, seg.FreeMemory())
}

// Keys inserted up, down and interleaved, then deleted the same ways:
// the root splits and merges many times, every step verifies.
func TestMapSplitsAndMergesToTheRoot(t *testing.T) {
	seg := newSeg(t)
	free0 := seg.FreeMemory()
	m, err := New[Map[int64, bigVal]](seg) // leaves of 4
	require.NoError(t, err)
	const n = 1500
	orders := map[string][]int64{}
	up := make([]int64, n)
	for i := range up {
		up[i] = int64(i)
	}
	orders["up"] = up
	orders["down"] = slices.Clone(up)
	slices.Reverse(orders["down"])
	inter := make([]int64, 0, n)
	for i := range n / 2 {
		inter = append(inter, int64(i), int64(n-1-i))
	}
	orders["ends"] = inter
	model := map[int64]bigVal{}
	var last treeStats
	var stats mapRunStats
	for _, ins := range []string{"up", "down", "ends"} {
		for _, del := range []string{"up", "down", "ends"} {
			for j, k := range orders[ins] {
				require.NoError(t, m.Set(k, bigOf(k)))
				model[k] = bigOf(k)
				if j%13 == 0 || j == n-1 {
					st := checkFlatMap(t, seg, m, model, cmp.Compare[int64])
					stats.see(last, st)
					last = st
				}
			}
			for j, k := range orders[del] {
				ok, err := m.Delete(k)
				require.NoError(t, err)
				require.True(t, ok)
				delete(model, k)
				if j%13 == 0 || j == n-1 {
					st := checkFlatMap(t, seg, m, model, cmp.Compare[int64])
					stats.see(last, st)
					last = st
				}
			}
		}
	}
	t.Logf("deepest %d levels; the root grew %d times, shrank %d times", stats.maxDepth, stats.rootSplits, stats.rootMerges)
	assert.GreaterOrEqual(t, stats.maxDepth, 3)
	assert.GreaterOrEqual(t, stats.rootSplits, 9)
	assert.GreaterOrEqual(t, stats.rootMerges, 9)
	require.NoError(t, Delete(seg, m))
	assert.True(t, seg.AllMemoryDeallocated())
	assert.Equal(t, free0, seg.FreeMemory())
}
