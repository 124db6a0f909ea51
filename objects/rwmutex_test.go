package objects

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/mapped"
)

type rwFix struct {
	RW   RWMutex
	A, B int64
}

// Readers share, a writer excludes them all; A == B whenever a reader
// looks.
func TestRWMutexExclusion(t *testing.T) {
	seg, _ := syncSeg(t)
	f, err := Construct(seg, "rw", rwFix{})
	require.NoError(t, err)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for w := range 6 {
		wg.Go(func() {
			for range 1000 {
				if w%3 == 0 {
					if assert.NoError(t, f.RW.Lock()) {
						f.A++
						f.B++
						assert.NoError(t, f.RW.Unlock())
					}
					continue
				}
				if assert.NoError(t, f.RW.RLock()) {
					if f.A != f.B {
						bad.Add(1)
					}
					assert.NoError(t, f.RW.RUnlock())
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, bad.Load())
	assert.Equal(t, int64(2000), f.A)
}

// A writer waiting for readers keeps new readers out (writer-preferring);
// it gets the lock once the readers leave.
func TestRWMutexWriterPreferred(t *testing.T) {
	seg, path := syncSeg(t)
	f, err := Construct(seg, "rw", rwFix{})
	require.NoError(t, err)
	other := reopen(t, path, mapped.OpenOnly)
	g, err := Find[rwFix](other, "rw")
	require.NoError(t, err)

	require.NoError(t, f.RW.RLock())
	ok, err := g.RW.TryRLock()
	require.NoError(t, err)
	require.True(t, ok, "readers share")
	require.NoError(t, g.RW.RUnlock())
	wrote := make(chan error, 1)
	go func() { wrote <- g.RW.Lock() }()
	require.Eventually(t, func() bool { return atomic.LoadUint64(&f.RW.w) != 0 }, 5*time.Second, time.Millisecond)
	ok, err = f.RW.TryRLock()
	require.NoError(t, err)
	assert.False(t, ok, "a writer waits: no new reader")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, f.RW.RLockContext(ctx), context.DeadlineExceeded)
	require.NoError(t, f.RW.RUnlock())
	require.NoError(t, <-wrote)
	assert.ErrorIs(t, f.RW.Unlock(), ErrNotHeld, "another open's")
	assert.ErrorIs(t, f.RW.RUnlock(), ErrNotHeld)
	require.NoError(t, g.RW.Unlock())
	ok, err = f.RW.TryLock()
	require.NoError(t, err)
	assert.True(t, ok)
	require.NoError(t, f.RW.Unlock())
}

// An open that closes holding a read hold is a dead reader: released
// silently. One that closes holding the write lock is a dead writer:
// ErrOwnerDied to the next reader.
func TestRWMutexOwnersGoneInProcess(t *testing.T) {
	seg, path := syncSeg(t)
	f, err := Construct(seg, "rw", rwFix{})
	require.NoError(t, err)
	other := reopen(t, path, mapped.OpenOnly)
	g, err := Find[rwFix](other, "rw")
	require.NoError(t, err)
	require.NoError(t, g.RW.RLock())
	require.NoError(t, other.Close())
	require.NoError(t, f.RW.Lock(), "a dead reader is released, silently")
	require.NoError(t, f.RW.Unlock())

	third := reopen(t, path, mapped.OpenOnly)
	h, err := Find[rwFix](third, "rw")
	require.NoError(t, err)
	require.NoError(t, h.RW.Lock())
	require.NoError(t, third.Close())
	assert.ErrorIs(t, f.RW.RLock(), ErrOwnerDied)
	require.NoError(t, f.RW.RUnlock())
	require.NoError(t, f.RW.Lock())
	require.NoError(t, f.RW.Unlock())
}

func TestRWMutexReadOnly(t *testing.T) {
	seg, path := syncSeg(t)
	_, err := Construct(seg, "rw", rwFix{})
	require.NoError(t, err)
	ro := reopen(t, path, mapped.OpenReadOnly)
	f, err := Find[rwFix](ro, "rw")
	require.NoError(t, err)
	assert.ErrorIs(t, f.RW.Lock(), mapped.ErrReadOnly)
	assert.ErrorIs(t, f.RW.RLock(), mapped.ErrReadOnly)
	assert.ErrorIs(t, f.RW.Unlock(), mapped.ErrReadOnly)
	assert.ErrorIs(t, f.RW.RUnlock(), mapped.ErrReadOnly)
	_, err = f.RW.TryLock()
	assert.ErrorIs(t, err, mapped.ErrReadOnly)
	_, err = f.RW.TryRLock()
	assert.ErrorIs(t, err, mapped.ErrReadOnly)
}
