package objects

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/internal/proctest"
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
