package objects

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/mapped"
)

type condFix struct {
	Mu   Mutex
	C    Cond
	Jobs int64
}

func TestCondSignalBroadcastContext(t *testing.T) {
	seg, path := syncSeg(t)
	f, err := Construct(seg, "c", condFix{})
	require.NoError(t, err)
	f.C.L.Set(&f.Mu)
	f.C.Signal() // nobody waits: nothing happens
	f.C.Broadcast()

	done := make(chan error, 4)
	for range 4 {
		go func() {
			err := f.Mu.Lock()
			for err == nil && f.Jobs == 0 {
				err = f.C.Wait()
			}
			if err == nil {
				err = f.Mu.Unlock()
			}
			done <- err
		}()
	}
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, f.Mu.Lock())
	f.Jobs = 1
	f.C.Broadcast()
	require.NoError(t, f.Mu.Unlock())
	for range 4 {
		require.NoError(t, <-done)
	}

	require.NoError(t, f.Mu.Lock())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, f.C.WaitContext(ctx), context.DeadlineExceeded)
	require.NoError(t, f.Mu.Unlock(), "WaitContext locked L again")

	ro := reopen(t, path, mapped.OpenReadOnly)
	g, err := Find[condFix](ro, "c")
	require.NoError(t, err)
	assert.ErrorIs(t, g.C.Wait(), mapped.ErrReadOnly)
	assert.ErrorIs(t, g.C.Wait(), mapped.ErrReadOnly)
}

func TestCondNilL(t *testing.T) {
	seg, _ := syncSeg(t)
	f, err := Construct(seg, "c", condFix{})
	require.NoError(t, err)
	assert.Panics(t, func() { _ = f.C.Wait() })
}
