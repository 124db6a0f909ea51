package objects

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/mapped"
)

// syncSeg creates a file segment for a synchronisation test and returns
// it with its path.
func syncSeg(t *testing.T) (*mapped.Segment, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sync.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(1<<20))
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	return seg, path
}

// reopen opens path again in this process: another open, another owner,
// the segment at another address.
func reopen(t *testing.T, path string, mode mapped.Mode) *mapped.Segment {
	t.Helper()
	seg, err := mapped.Open(file.Path(path), mode)
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Close() })
	return seg
}

type guarded struct {
	Mu    Mutex
	Count int64
}

func TestMutexBasics(t *testing.T) {
	seg, _ := syncSeg(t)
	g, err := Construct(seg, "g", guarded{})
	require.NoError(t, err)
	require.NoError(t, g.Mu.Lock())
	ok, err := g.Mu.TryLock()
	require.NoError(t, err)
	assert.False(t, ok, "held")
	require.NoError(t, g.Mu.Unlock())
	assert.ErrorIs(t, g.Mu.Unlock(), ErrNotHeld, "not held")
	ok, err = g.Mu.TryLock()
	require.NoError(t, err)
	assert.True(t, ok)
	require.NoError(t, g.Mu.Unlock())

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 2000 {
				if assert.NoError(t, g.Mu.Lock()) {
					g.Count++
					assert.NoError(t, g.Mu.Unlock())
				}
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(16000), g.Count)
}

// Another open (another owner) cannot unlock what this one holds; a
// LockContext waiting for it gives up with the context's error.
func TestMutexOtherOwnerAndContext(t *testing.T) {
	seg, path := syncSeg(t)
	g, err := Construct(seg, "g", guarded{})
	require.NoError(t, err)
	other := reopen(t, path, mapped.OpenOnly)
	g2, err := Find[guarded](other, "g")
	require.NoError(t, err)

	require.NoError(t, g.Mu.Lock())
	assert.ErrorIs(t, g2.Mu.Unlock(), ErrNotHeld, "held by another open")
	ok, err := g2.Mu.TryLock()
	require.NoError(t, err)
	assert.False(t, ok)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, g2.Mu.LockContext(ctx), context.DeadlineExceeded)

	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g2.Mu.LockContext(ctx) }()
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)

	go func() { done <- g2.Mu.Lock() }()
	require.NoError(t, g.Mu.Unlock())
	require.NoError(t, <-done, "handed over")
	assert.ErrorIs(t, g.Mu.Unlock(), ErrNotHeld)
	require.NoError(t, g2.Mu.Unlock())
}

// An open that closes while it holds the lock is a dead owner: the next
// locker gets the lock and ErrOwnerDied, once.
func TestMutexOwnerGoneInProcess(t *testing.T) {
	seg, path := syncSeg(t)
	g, err := Construct(seg, "g", guarded{})
	require.NoError(t, err)
	other := reopen(t, path, mapped.OpenOnly)
	g2, err := Find[guarded](other, "g")
	require.NoError(t, err)
	require.NoError(t, g2.Mu.Lock())
	require.NoError(t, other.Close())
	err = g.Mu.Lock()
	assert.ErrorIs(t, err, ErrOwnerDied)
	require.NoError(t, g.Mu.Unlock())
	require.NoError(t, g.Mu.Lock(), "once")
	require.NoError(t, g.Mu.Unlock())

	// TryLock finds the dead owner too.
	third := reopen(t, path, mapped.OpenOnly)
	g3, err := Find[guarded](third, "g")
	require.NoError(t, err)
	require.NoError(t, g3.Mu.Lock())
	require.NoError(t, third.Close())
	ok, err := g.Mu.TryLock()
	assert.True(t, ok)
	assert.ErrorIs(t, err, ErrOwnerDied)
	require.NoError(t, g.Mu.Unlock())
}

func TestMutexReadOnly(t *testing.T) {
	seg, path := syncSeg(t)
	_, err := Construct(seg, "g", guarded{})
	require.NoError(t, err)
	ro := reopen(t, path, mapped.OpenReadOnly)
	g, err := Find[guarded](ro, "g")
	require.NoError(t, err)
	assert.ErrorIs(t, g.Mu.Lock(), mapped.ErrReadOnly)
	assert.ErrorIs(t, g.Mu.LockContext(context.Background()), mapped.ErrReadOnly)
	_, err = g.Mu.TryLock()
	assert.ErrorIs(t, err, mapped.ErrReadOnly)
	assert.ErrorIs(t, g.Mu.Unlock(), mapped.ErrReadOnly)
}

func TestMutexCopyPanics(t *testing.T) {
	var m Mutex
	defer func() {
		r := recover()
		require.NotNil(t, r)
		assert.Contains(t, r.(string), "not inside any open segment")
	}()
	_ = m.Lock()
}

// An unlocked word may keep a former holder's high bits (a plain-store
// Unlock clears only the low half): Lock takes it all the same, on its
// fast path's second try, and keeps a sleeper's bit when it is set.
func TestMutexLockOverAFormerHoldersHighBits(t *testing.T) {
	seg, _ := syncSeg(t)
	m, err := Construct(seg, "m", Mutex{})
	require.NoError(t, err)
	me := ownerOf(seg)
	for _, stale := range []uint64{0x1234_5678 << 32, 0x7fff_ffff << 32, lockWaiters | 0x42<<32} {
		atomic.StoreUint64(&m.w, stale)
		require.Zero(t, holderOf(stale), "unlocked: the low half is 0")
		require.NoError(t, m.Lock())
		assert.Equal(t, me|stale&lockWaiters, atomic.LoadUint64(&m.w), "held by this open, a sleeper's bit kept")
		ok, err := m.TryLock()
		require.NoError(t, err)
		assert.False(t, ok, "held")
		require.NoError(t, m.Unlock())
		assert.Zero(t, holderOf(atomic.LoadUint64(&m.w)), "unlocked again")
	}
}
