package objects

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/mapped"
)

func TestSemaphore(t *testing.T) {
	seg, path := syncSeg(t)
	s, err := Construct(seg, "sem", Semaphore{})
	require.NoError(t, err)
	ok, err := s.TryAcquire()
	require.NoError(t, err)
	assert.False(t, ok, "no units")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, s.AcquireContext(ctx), context.DeadlineExceeded)
	assert.ErrorIs(t, s.Release(0), mapped.ErrInvalidSize)

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				assert.NoError(t, s.Acquire())
			}
		})
	}
	for range 400 {
		require.NoError(t, s.Release(1))
	}
	wg.Wait()
	assert.Zero(t, s.Available())
	require.NoError(t, s.Release(3))
	assert.Equal(t, 3, s.Available())

	// Units held by an open that goes away are reported once, not given back.
	other := reopen(t, path, mapped.OpenOnly)
	g, err := Find[Semaphore](other, "sem")
	require.NoError(t, err)
	require.NoError(t, g.Acquire())
	require.NoError(t, g.Acquire())
	require.NoError(t, other.Close())
	n, err := s.Orphaned()
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	n, err = s.Orphaned()
	require.NoError(t, err)
	assert.Zero(t, n, "reported once")
	assert.Equal(t, 1, s.Available())

	ro := reopen(t, path, mapped.OpenReadOnly)
	r, err := Find[Semaphore](ro, "sem")
	require.NoError(t, err)
	assert.ErrorIs(t, r.Acquire(), mapped.ErrReadOnly)
	assert.ErrorIs(t, r.Release(1), mapped.ErrReadOnly)
}
