package objects

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

// Containers change in a copy-on-write open as in a writable one (their
// lanes allocate and free under the open's private lock), and the file
// keeps what it held.
func TestContainersInCopyOnWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cow.seg")
	w, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	h, err := Construct(w, "h", HashMap[uint64, float64]{})
	require.NoError(t, err)
	require.NoError(t, h.Set(1, 1))
	_, err = Construct(w, "v", Vector[int64]{})
	require.NoError(t, err)
	_, err = Construct(w, "l", List[int64]{})
	require.NoError(t, err)
	_, err = Construct(w, "s", String{})
	require.NoError(t, err)
	require.NoError(t, w.Close())

	c, err := mapped.Open(file.Path(path), mapped.OpenCopyOnWrite)
	require.NoError(t, err)
	defer c.Close()
	ch, err := Find[HashMap[uint64, float64]](c, "h")
	require.NoError(t, err)
	for k := uint64(2); k <= 500; k++ { // rebuilds
		require.NoError(t, ch.Set(k, float64(k)))
	}
	cv, err := Find[Vector[int64]](c, "v")
	require.NoError(t, err)
	for i := range int64(2000) { // regrows
		require.NoError(t, cv.Append(i))
	}
	cl, err := Find[List[int64]](c, "l")
	require.NoError(t, err)
	for i := range int64(100) {
		_, err := cl.PushBack(i)
		require.NoError(t, err)
	}
	for cl.Len() > 50 {
		require.NoError(t, cl.Remove(cl.Front()))
	}
	cs, err := Find[String](c, "s")
	require.NoError(t, err)
	require.NoError(t, cs.Set("a value long enough to need a block of its own"))
	assert.Equal(t, 500, ch.Len())
	assert.Equal(t, 2000, cv.Len())
	assert.Equal(t, 50, cl.Len())
	require.NoError(t, c.CheckSanity())

	r, err := mapped.Open(file.Path(path), mapped.OpenReadOnly)
	require.NoError(t, err)
	defer r.Close()
	rh, err := Find[HashMap[uint64, float64]](r, "h")
	require.NoError(t, err)
	assert.Equal(t, 1, rh.Len(), "the file's map is as it was")
	rv, err := Find[Vector[int64]](r, "v")
	require.NoError(t, err)
	assert.Zero(t, rv.Len())
}
