package shm_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/backing/shm"
	"github.com/mapstore/mapstore/internal/region"
)

func TestValidate(t *testing.T) {
	good := []string{"a", "/a", "MySharedMemory", strings.Repeat("x", shm.NameMax), "/" + strings.Repeat("x", shm.NameMax), "with space", "dots.are.ok"}
	for _, n := range good {
		assert.NoError(t, shm.Validate(n), "%q", n)
	}
	bad := []string{"", "/", "a/b", "/a/b", "//a", "nul\x00", strings.Repeat("x", shm.NameMax+1), ".", "..", "/.."}
	for _, n := range bad {
		err := shm.Validate(n)
		require.ErrorIs(t, err, backing.ErrInvalidName, "%q", n)
		_, err = shm.Named(n).Open(region.Create, 0o600)
		require.ErrorIs(t, err, backing.ErrInvalidName, "%q", n)
		assert.ErrorIs(t, shm.Remove(n), backing.ErrInvalidName, "%q", n)
	}
}

func TestCreateListRemove(t *testing.T) {
	name := fmt.Sprintf("mapstore-shmtest-%d", os.Getpid())
	t.Cleanup(func() { _ = shm.Remove(name) })
	r, err := shm.Named("/"+name).Open(region.Create, 0o600)
	require.NoError(t, err)
	assert.True(t, r.Created())
	assert.False(t, r.Durable(), "shm has no disk behind it")
	require.NoError(t, r.Publish())
	require.NoError(t, r.Close())

	r, err = shm.Named(name).Open(region.Create, 0o600)
	require.NoError(t, err)
	err = r.Publish()
	require.ErrorIs(t, err, backing.ErrExists)
	assert.Contains(t, err.Error(), name)
	require.NoError(t, r.Close())

	names, err := shm.List()
	require.NoError(t, err)
	assert.Contains(t, names, name)

	require.NoError(t, shm.Remove(name))
	err = shm.Remove(name)
	require.ErrorIs(t, err, backing.ErrNotFound)
	assert.Contains(t, err.Error(), "shm:"+name)
	_, err = shm.Named(name).Open(0, 0)
	require.ErrorIs(t, err, backing.ErrNotFound)
}

func TestGrowPastTmpfsIsErrNoSpace(t *testing.T) {
	name := fmt.Sprintf("mapstore-shmfull-%d", os.Getpid())
	t.Cleanup(func() { _ = shm.Remove(name) })
	r, err := shm.Named(name).Open(region.Create, 0o600)
	require.NoError(t, err)
	defer r.Close()
	require.NoError(t, r.Publish())
	require.NoError(t, r.Resize(1<<20))
	// More than the whole tmpfs: fallocate refuses at once, and the size
	// stays as it was (ftruncate alone would have succeeded and SIGBUSed later).
	err = r.Resize(1 << 50)
	require.ErrorIs(t, err, backing.ErrNoSpace)
	assert.Contains(t, err.Error(), name)
	size, err := r.Size()
	require.NoError(t, err)
	assert.Equal(t, int64(1<<20), size)
}
