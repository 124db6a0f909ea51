package objects

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
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

// A Wait that Close overtakes returns ErrClosed (the Close documentation:
// calls in flight end with ErrClosed), in a writable and in a
// copy-on-write open, with and without a context. (It re-locked L with
// Mutex.Lock, which finds the segment by address: Close has taken it out
// of the registry by then, and Lock panicked with the misuse message.)
func TestCondWaitOvertakenByClose(t *testing.T) {
	for _, mode := range []mapped.Mode{mapped.OpenOnly, mapped.OpenCopyOnWrite} {
		for _, withCtx := range []bool{false, true} {
			path := filepath.Join(t.TempDir(), "c.seg")
			w, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(1<<20))
			require.NoError(t, err)
			f, err := Construct(w, "c", condFix{})
			require.NoError(t, err)
			f.C.L.Set(&f.Mu)
			require.NoError(t, w.Close())

			s, err := mapped.Open(file.Path(path), mode)
			require.NoError(t, err)
			g, err := Find[condFix](s, "c")
			require.NoError(t, err)
			got := make(chan any, 1)
			waiting := make(chan struct{})
			go func() {
				defer func() {
					if r := recover(); r != nil {
						got <- r
					}
				}()
				if err := g.Mu.Lock(); err != nil {
					got <- err
					return
				}
				close(waiting)
				if withCtx {
					got <- g.C.WaitContext(context.Background())
				} else {
					got <- g.C.Wait()
				}
			}()
			<-waiting
			time.Sleep(20 * time.Millisecond)
			require.NoError(t, s.Close())
			select {
			case r := <-got:
				err, ok := r.(error)
				require.True(t, ok, "mode %v, context %v: Wait panicked: %v", mode, withCtx, r)
				assert.ErrorIs(t, err, mapped.ErrClosed, "mode %v, context %v", mode, withCtx)
			case <-time.After(10 * time.Second):
				t.Fatalf("mode %v, context %v: Wait still waits after Close", mode, withCtx)
			}
		}
	}
}
