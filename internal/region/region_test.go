package region

import (
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func testRegion(t *testing.T) *Region {
	t.Helper()
	p := filepath.Join(t.TempDir(), "r")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	r := New(p, f, false, true)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// Where the filesystem cannot fallocate (EOPNOTSUPP), growth writes zeros
// over the new range, so that its blocks exist before the mapping touches
// them: ftruncate alone leaves a hole that a full disk turns into SIGBUS.
func TestResizeWithoutFallocateWritesTheBlocks(t *testing.T) {
	calls := 0
	fallocateFunc = func(int, uint32, int64, int64) error { calls++; return syscall.EOPNOTSUPP }
	t.Cleanup(func() { fallocateFunc = unix.Fallocate })
	r := testRegion(t)
	const size = 3<<20 + 4096
	require.NoError(t, r.Resize(size))
	assert.Equal(t, 1, calls)
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(int(r.f.Fd()), &st))
	assert.Equal(t, int64(size), st.Size)
	assert.GreaterOrEqual(t, st.Blocks*512, int64(size), "every byte has a block")
}

// ReadAt reads all it is asked for or says why not: nothing at all past
// the end is io.EOF, a read that ends short io.ErrUnexpectedEOF, and
// after CloseFile os.ErrClosed; each message names the backing.
func TestReadAt(t *testing.T) {
	r := testRegion(t)
	require.NoError(t, r.WriteAt([]byte("0123456789"), 0))
	buf := make([]byte, 4)
	n, err := r.ReadAt(buf, 3)
	require.NoError(t, err)
	assert.Equal(t, 4, n)
	assert.Equal(t, "3456", string(buf))

	n, err = r.ReadAt(buf, 8)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.Equal(t, 2, n)
	assert.Equal(t, "89", string(buf[:n]))

	n, err = r.ReadAt(buf, 10)
	assert.ErrorIs(t, err, io.EOF)
	assert.Zero(t, n)
	assert.ErrorContains(t, err, r.Name())

	require.NoError(t, r.CloseFile())
	_, err = r.ReadAt(buf, 0)
	assert.ErrorIs(t, err, os.ErrClosed)
	assert.ErrorContains(t, err, r.Name())
}
