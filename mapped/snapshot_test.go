package mapped

import (
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/internal/proctest"
)

// An optimistic reader validates against the lock word's acquisition
// count. The count must not wrap while a reader is stalled: after 2^24
// acquisitions (under a second at today's speed) the reader must still
// see that writers ran.
func TestReadValidationSurvivesManyAcquisitions(t *testing.T) {
	s := newShmSeg(t)
	v, ok := s.lk.readBegin()
	require.True(t, ok)
	for range 1 << 24 {
		s.lk.lock()
		s.lk.unlock()
	}
	assert.False(t, s.lk.readValid(v), "2^24 acquisitions went unnoticed by a reader")
}

// A read-only open cannot take the segment lock, so its reads are
// optimistic: they must validate (no writer ran meanwhile) or run again,
// never return what a half-done change showed them. A child rebuilds the
// name index over and over; a name that is always there must always be
// found, and the structures read must always be whole.
func TestReadOnlyReadsValidate(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly, WithSize(256<<10))
		h := keepAndBlock(t, s)

		ro := mustOpen(t, b, OpenReadOnly)
		c := proctest.Start(t, "indexchurn", spec, "99")
		c.Expect("ready")
		var lookups, misses, blockErrs int
		for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
			for range 1000 {
				n, err := ro.LookupNamed("keep", false)
				lookups++
				if err != nil || n.Obj[0] != 42 {
					misses++
				}
			}
			if _, err := ro.Block(h); err != nil {
				blockErrs++
			}
		}
		c.Kill()
		t.Logf("%d read-only lookups while a writer rebuilt the index", lookups)
		assert.Zero(t, misses, "lookups of a name that is always there failed")
		assert.Zero(t, blockErrs, "Block of a live block failed")
	})
}

// OpenCopyOnWrite gives a consistent snapshot: it is refused (ErrBusy)
// while a writable open is attached, and otherwise copies the segment's
// pages at open, so that changes made later through the file never show
// through pages the copy had not written yet.
func TestCopyOnWriteIsASnapshot(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly)
		var hs []Handle
		for range 50 {
			blk, err := s.Allocate(64)
			require.NoError(t, err)
			blk[0] = 9
			h, _ := s.Handle(blk)
			hs = append(hs, h)
		}
		_, err := Open(b, OpenCopyOnWrite)
		require.ErrorIs(t, err, ErrBusy, "a writer is attached")
		assert.Contains(t, err.Error(), strings.TrimPrefix(b.Name(), "shm:"))
		require.NoError(t, s.Close())

		c := mustOpen(t, b, OpenCopyOnWrite)
		extra, err := c.Allocate(64) // the copy writes one block
		require.NoError(t, err)
		w := mustOpen(t, b, OpenOnly)
		for _, h := range hs[:40] {
			blk, err := w.Block(h)
			require.NoError(t, err)
			require.NoError(t, w.Deallocate(blk))
		}
		require.NoError(t, w.Close())

		require.NoError(t, c.CheckSanity(), "the copy still sees the segment as it was")
		for _, h := range hs {
			blk, err := c.Block(h)
			require.NoError(t, err)
			assert.Equal(t, byte(9), blk[0])
		}
		require.NoError(t, c.Deallocate(extra))
	})
}

// A copy-on-write open runs lanes as a writable one does, on its private
// copy: a lane's allocation, its free after the commit, an abort's free
// of what it allocated. (Its lock is the process's mutex: the lanes' path
// to the segment lock took the mutex through the shared lock's slow path,
// which left it unlocked, and the unlock was a fatal "unlock of unlocked
// mutex".)
func TestCopyOnWriteLanes(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly)
		blk, err := s.Allocate(64)
		require.NoError(t, err)
		blk[0] = 7
		h, _ := s.Handle(blk)
		require.NoError(t, s.Close())

		c := mustOpen(t, b, OpenCopyOnWrite)
		free := c.FreeMemory()
		var l Lane
		require.NoError(t, l.Begin(c))
		nb, err := l.Allocate(128)
		require.NoError(t, err)
		nb[0] = 1
		old, err := c.Block(h)
		require.NoError(t, err)
		require.NoError(t, l.Free(unsafe.Pointer(&old[0])))
		require.NoError(t, l.Commit())
		assert.Less(t, c.FreeMemory(), free, "the copy holds the new block")

		var a Lane
		require.NoError(t, a.Begin(c))
		_, err = a.Allocate(256)
		require.NoError(t, err)
		a.Abort()
		require.NoError(t, c.CheckSanity())
		nh, _ := c.Handle(nb)
		got, err := c.Block(nh)
		require.NoError(t, err)
		assert.Equal(t, byte(1), got[0])

		w := mustOpen(t, b, OpenOnly)
		orig, err := w.Block(h)
		require.NoError(t, err, "the file still holds the block the copy freed")
		assert.Equal(t, byte(7), orig[0])
	})
}
