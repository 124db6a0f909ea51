package objects

import (
	"context"
	"errors"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/internal/proctest"
	"github.com/mapstore/mapstore/mapped"
)

// A process whose first change to the segment is a Broadcast (the
// condition changed with an atomic store, L not held, as Cond allows):
// the waiter in another process wakes. The wake-up must not depend on
// whether the signalling open has changed anything before.
func TestCondBroadcastFromFreshOpen(t *testing.T) {
	forSyncKinds(t, func(t *testing.T, spec string) {
		_, fx := syncFixture(t, spec)
		require.NoError(t, fx.Mu.Lock())
		waited := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			var err error
			for atomic.LoadInt64(&fx.Tokens) == 0 && err == nil {
				err = fx.Cond.WaitContext(ctx)
			}
			waited <- err
		}()
		time.Sleep(20 * time.Millisecond) // the waiter sleeps
		c := proctest.Start(t, "sync", "broadcast", spec)
		c.Expect("done")
		require.Equal(t, 0, c.Wait(), c.Stderr())
		require.NoError(t, <-waited, "the Broadcast woke the waiter")
		require.NoError(t, fx.Mu.Unlock())
	})
}

// endsMidCall is a context that ends while the call given it is at work:
// its first Err is nil, the ones after are Canceled (as a deadline that
// passes while the call recovers what a dead owner left).
type endsMidCall struct {
	context.Context
	cancel context.CancelFunc
	n      atomic.Int32
}

func newEndsMidCall() *endsMidCall {
	ctx, cancel := context.WithCancel(context.Background())
	return &endsMidCall{Context: ctx, cancel: cancel}
}

func (c *endsMidCall) Err() error {
	if c.n.Add(1) > 1 {
		c.cancel()
	}
	return c.Context.Err()
}

// A writer killed holding the RWMutex; the next locker, reader or writer,
// takes it over but its context ends meanwhile. The death is reported all
// the same: to that call (which then holds the lock) or to the next one.
func TestRWMutexOwnerDiedNotLostToContext(t *testing.T) {
	for _, next := range []string{"reader", "writer"} {
		t.Run(next, func(t *testing.T) {
			forSyncKinds(t, func(t *testing.T, spec string) {
				_, fx := syncFixture(t, spec)
				c := proctest.Start(t, "sync", "hold", spec, "rw-write")
				c.Expect("locked")
				c.Kill()
				lockCtx, lock, unlock := fx.RW.RLockContext, fx.RW.RLock, fx.RW.RUnlock
				if next == "writer" {
					lockCtx, lock, unlock = fx.RW.LockContext, fx.RW.Lock, fx.RW.Unlock
				}
				ctx := newEndsMidCall()
				defer ctx.cancel()
				err := lockCtx(ctx)
				if errors.Is(err, ErrOwnerDied) {
					require.NoError(t, unlock())
					return
				}
				require.ErrorIs(t, err, context.Canceled)
				require.ErrorIs(t, lock(), ErrOwnerDied, "the next locker is told of the dead writer")
				require.NoError(t, unlock())
			})
		})
	}
}

// Init in a segment opened read-only is ErrReadOnly, as every other
// method there: it used to store into the read-only mapping and fault.
func TestSemaphoreInitReadOnly(t *testing.T) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	seg, path := syncSeg(t)
	s, err := Construct(seg, "sem", Semaphore{})
	require.NoError(t, err)
	ro := reopen(t, path, mapped.OpenReadOnly)
	r, err := Find[Semaphore](ro, "sem")
	require.NoError(t, err)
	require.NotPanics(t, func() { err = r.Init(3) })
	require.ErrorIs(t, err, mapped.ErrReadOnly)
	require.Zero(t, s.Available())
	require.NoError(t, s.Init(2))
	require.Equal(t, 2, s.Available())
}

// A writer killed while it waited for a reader to leave: a TryLock that
// takes its claim over but finds the reader still there does not get the
// lock, so it is not told ErrOwnerDied either (that says the caller holds
// the lock); the report stays for the locker that gets it.
func TestRWMutexTryLockOwnerDiedOnlyWithTheLock(t *testing.T) {
	forSyncKinds(t, func(t *testing.T, spec string) {
		_, fx := syncFixture(t, spec)
		require.NoError(t, fx.RW.RLock())
		c := proctest.Start(t, "sync", "hold", spec, "rw-write")
		for atomic.LoadUint64(&fx.RW.w) == 0 {
			time.Sleep(time.Millisecond) // the child claims the lock and waits for our reader
		}
		c.Kill()
		ok, err := fx.RW.TryLock()
		require.False(t, ok, "a reader holds it")
		require.NoError(t, err, "no lock, no ErrOwnerDied")
		require.NoError(t, fx.RW.RUnlock())
		ok, err = fx.RW.TryLock()
		require.True(t, ok)
		require.ErrorIs(t, err, ErrOwnerDied, "the locker that gets it is told")
		require.NoError(t, fx.RW.Unlock())
	})
}
