package file_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/afero"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/internal/region"
)

func TestOpenCreateRemove(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.seg")
	_, err := file.Path(p).Open(0, 0)
	require.ErrorIs(t, err, backing.ErrNotFound)
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), p)

	// A new backing is seen by nobody until it is published.
	r, err := file.Path(p).Open(region.Create, 0o600)
	require.NoError(t, err)
	assert.True(t, r.Created())
	assert.True(t, r.Durable())
	_, err = os.Stat(p)
	require.ErrorIs(t, err, os.ErrNotExist, "not before Publish")
	require.NoError(t, r.Publish())
	require.NoError(t, r.Close())
	_, err = os.Stat(p)
	require.NoError(t, err)
	// A second one cannot be published over it; closing it leaves nothing.
	r, err = file.Path(p).Open(region.Create, 0o600)
	require.NoError(t, err)
	require.ErrorIs(t, r.Publish(), backing.ErrExists)
	require.NoError(t, r.Close())
	ents, err := os.ReadDir(filepath.Dir(p))
	require.NoError(t, err)
	assert.Len(t, ents, 1, "no temporary file left behind")

	require.NoError(t, file.Remove(p))
	require.ErrorIs(t, file.Remove(p), backing.ErrNotFound)
	_, err = file.Path("").Open(0, 0)
	require.ErrorIs(t, err, backing.ErrInvalidName)
}

func TestDirectoryIsNotRegular(t *testing.T) {
	dir := t.TempDir()
	for _, fl := range []region.Flags{0, region.ReadOnly} {
		_, err := file.Path(dir).Open(fl, 0o600)
		require.ErrorIs(t, err, backing.ErrNotRegular, "flags %d", fl)
		assert.Contains(t, err.Error(), dir)
	}
}

func TestMemMapFsHasNoDescriptor(t *testing.T) {
	fs := afero.NewMemMapFs()
	_, err := file.Path("x.seg", file.WithFs(fs)).Open(region.Create, 0o600)
	require.ErrorIs(t, err, backing.ErrNoDescriptor)
	assert.Contains(t, err.Error(), "x.seg")
	ents, _ := afero.ReadDir(fs, ".")
	assert.Empty(t, ents, "a refused create leaves nothing behind")
}

func TestBasePathFsIsUnwrapped(t *testing.T) {
	dir := t.TempDir()
	fs := afero.NewBasePathFs(afero.NewOsFs(), dir)
	b := file.Path("/inner.seg", file.WithFs(fs))
	r, err := b.Open(region.Create, 0o600)
	require.NoError(t, err)
	require.NoError(t, r.Resize(8192))
	mem, err := r.Map(1<<20, region.MapShared)
	require.NoError(t, err)
	mem[8191] = 42
	require.NoError(t, r.Publish())
	require.NoError(t, r.Close())
	data, err := os.ReadFile(filepath.Join(dir, "inner.seg"))
	require.NoError(t, err)
	assert.Equal(t, byte(42), data[8191])
	require.NoError(t, b.Remove())
}

func TestReadOnlyFsRefusesWrites(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ro.seg")
	require.NoError(t, os.WriteFile(p, make([]byte, 4096), 0o600))
	fs := afero.NewReadOnlyFs(afero.NewOsFs())
	_, err := file.Path(p, file.WithFs(fs)).Open(0, 0)
	require.Error(t, err)
	assert.Contains(t, err.Error(), p)
	r, err := file.Path(p, file.WithFs(fs)).Open(region.ReadOnly, 0)
	require.NoError(t, err)
	require.NoError(t, r.Close())
}

func TestOFDLocksBetweenOpens(t *testing.T) {
	p := filepath.Join(t.TempDir(), "l.seg")
	a, err := file.Path(p).Open(region.Create, 0o600)
	require.NoError(t, err)
	defer a.Close()
	require.NoError(t, a.Publish())
	b, err := file.Path(p).Open(0, 0)
	require.NoError(t, err)
	const off = int64(1) << 60
	ok, err := a.Lock(off, true, false)
	require.NoError(t, err)
	require.True(t, ok)
	held, err := b.Held(off)
	require.NoError(t, err)
	assert.True(t, held, "two opens in one process are two owners")
	ok, err = b.Lock(off, true, false)
	require.NoError(t, err)
	assert.False(t, ok)
	require.NoError(t, a.Close()) // closing releases the lock, as death does
	held, err = b.Held(off)
	require.NoError(t, err)
	assert.False(t, held)
	require.NoError(t, b.Close())
}
