package mapped

import (
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/mapstore/mapstore/backing"
)

// resident counts the pages of b that are in memory for this process.
func resident(t *testing.T, b []byte) int {
	t.Helper()
	vec := make([]byte, (len(b)+pageSize-1)/pageSize)
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	require.Zero(t, e, "mincore: %v", e)
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// Prefault faults a block's pages in, in the background, and changes
// none of its bytes. (On a file, mincore reports the page cache, which
// the file's creation filled: residency is checked on shared memory.)
func TestPrefaultPopulatesWithoutChanging(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		shmem := strings.HasPrefix(spec, "shm:")
		s := mustOpen(t, b, CreateOnly, WithSize(32<<20))
		s.h.fresh = nil // Prefault alone (see TestFreshPagesPrefaulted)
		blk, err := s.Allocate(8 << 20)
		require.NoError(t, err)
		pages := len(blk) / pageSize
		for i := 0; i < len(blk); i += 64 * pageSize {
			blk[i] = byte(i>>12) | 1
		}
		if shmem {
			require.Less(t, resident(t, blk), pages/2, "the block is mostly untouched")
		}
		s.Prefault(unsafe.Pointer(&blk[0]), len(blk))
		deadline := time.Now().Add(10 * time.Second)
		for resident(t, blk) < pages && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		assert.Equal(t, pages, resident(t, blk), "every page faulted in")
		for s.prefaulting() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		for i := 0; i < len(blk); i++ {
			want := byte(0)
			if i%(64*pageSize) == 0 {
				want = byte(i>>12) | 1
			}
			if blk[i] != want {
				require.Equal(t, want, blk[i], "byte %d", i)
			}
		}
		require.NoError(t, s.CheckSanity())
	})
}

// Prefault is a hint: small ranges, memory outside the segment and a
// closed open are ignored, without a fault or an error.
func TestPrefaultIgnoresWhatItCannotUse(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		shmem := strings.HasPrefix(spec, "shm:")
		s, err := Open(b, CreateOnly, WithSize(32<<20))
		require.NoError(t, err)
		s.h.fresh = nil // Prefault alone (see TestFreshPagesPrefaulted)
		blk, err := s.Allocate(4 << 20)
		require.NoError(t, err)
		small, err := s.Allocate(4096)
		require.NoError(t, err)
		s.Prefault(unsafe.Pointer(&small[0]), len(small))
		assert.False(t, s.prefaulting(), "under a megabyte: nothing to do")
		if shmem {
			assert.Less(t, resident(t, blk), 16)
		}
		outside := make([]byte, 2<<20)
		s.Prefault(unsafe.Pointer(&outside[0]), len(outside))
		s.Prefault(unsafe.Pointer(&blk[0]), 64<<20) // runs past the segment
		assert.False(t, s.prefaulting(), "outside the segment: nothing to do")
		p := unsafe.Pointer(&blk[0])
		require.NoError(t, s.Close())
		s.Prefault(p, 4<<20)
		s.prefault.mu.Lock()
		assert.Empty(t, s.prefault.pending)
		s.prefault.mu.Unlock()
	})
}

// waitPrefault waits for this open's prefault goroutine to finish.
func waitPrefault(t *testing.T, s *Segment) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.prefaulting() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.False(t, s.prefaulting(), "the prefault finished")
}

// PrefaultAhead keeps ahead of the writer: it starts where the progress
// word says the writer is, half a megabyte past it (the writer faults
// those pages itself as it goes), skips what the writer reaches while it
// runs (the mid-range check), and does nothing when the writer is at the
// end. (Residency is checked on
// shared memory; see TestPrefaultPopulatesWithoutChanging.)
func TestPrefaultAheadStaysAheadOfTheWriter(t *testing.T) {
	b, _ := newShm(t)
	s := mustOpen(t, b, CreateOnly, WithSize(64<<20))
	s.h.fresh = nil // PrefaultAhead alone (see TestFreshPagesPrefaulted)
	const size = 8 << 20
	blk, err := s.Allocate(size)
	require.NoError(t, err)
	pw, err := s.Allocate(8)
	require.NoError(t, err)
	progress := (*uint64)(unsafe.Pointer(&pw[0]))
	const unit = 16
	*progress = (size / 2) / unit // the writer is half way
	require.Zero(t, resident(t, blk), "a fresh block")
	s.PrefaultAhead(unsafe.Pointer(&blk[0]), size, progress, unit)
	waitPrefault(t, s)
	assert.Zero(t, resident(t, blk[:size/2+prefaultChunk/2]), "nothing behind the writer or within half a megabyte of it")
	assert.Equal(t, (size/2-prefaultChunk/2)/pageSize, resident(t, blk[size/2+prefaultChunk/2:]), "everything from there on")

	// A writer at (or, from a bad word, past) the end: nothing to do.
	blk2, err := s.Allocate(size)
	require.NoError(t, err)
	for _, at := range []uint64{size / unit, size/unit + 1, 1 << 62} {
		*progress = at
		s.PrefaultAhead(unsafe.Pointer(&blk2[0]), size, progress, unit)
		waitPrefault(t, s)
		assert.Zero(t, resident(t, blk2), "writer at %d", at)
	}

	// Bad arguments: a progress word outside the segment, a unit of 0.
	var outside uint64
	s.PrefaultAhead(unsafe.Pointer(&blk2[0]), size, &outside, unit)
	*progress = 0
	s.PrefaultAhead(unsafe.Pointer(&blk2[0]), size, progress, 0)
	assert.False(t, s.prefaulting(), "nothing started")
}

// Pages past the furthest this open took from the page heap are faulted
// in ahead, in the background: prefaultWindow of them, within the
// segment, unchanged (zero), and again as the heap grows past them; none
// by a read-only open. (Residency is checked on shared memory.)
func TestFreshPagesPrefaulted(t *testing.T) {
	b, _ := newShm(t)
	s := mustOpen(t, b, CreateOnly, WithSize(64<<20))
	span := unsafe.Slice((*byte)(s.h.base), s.Size())
	blk, err := s.Allocate(2 << 20)
	require.NoError(t, err)
	waitPrefault(t, s)
	end := uintptr(unsafe.Pointer(&blk[0])) - uintptr(s.h.base) + uintptr(len(blk))
	end = (end + pageSize - 1) &^ (pageSize - 1)
	ahead := span[end : end+prefaultWindow]
	assert.Equal(t, prefaultWindow/pageSize, resident(t, ahead), "the window past the block")
	assert.Less(t, resident(t, span[end+prefaultWindow:]), 16, "nothing past the window")
	for i, c := range ahead {
		if c != 0 {
			require.Zero(t, c, "byte %d past the block", i)
		}
	}
	// A block past the window: the window moves past it.
	big, err := s.Allocate(20 << 20)
	require.NoError(t, err)
	waitPrefault(t, s)
	bend := uintptr(unsafe.Pointer(&big[0])) - uintptr(s.h.base) + uintptr(len(big))
	bend = (bend + pageSize - 1) &^ (pageSize - 1)
	assert.Equal(t, prefaultWindow/pageSize, resident(t, span[bend:bend+prefaultWindow]), "the window past the new end")
	// A block near the segment's end: the window stops at the end.
	rest := s.Size() - int64(bend) - prefaultWindow/2
	_, err = s.Allocate(int(rest))
	require.NoError(t, err)
	waitPrefault(t, s)
	assert.Equal(t, uint64(s.Size()), s.freshAhead.Load(), "asked up to the segment's end, no further")
	require.NoError(t, s.CheckSanity())

	// A read-only open takes nothing from the heap and faults nothing.
	b2, _ := newShm(t)
	w := mustOpen(t, b2, CreateOnly, WithSize(32<<20))
	require.NoError(t, w.Close())
	r := mustOpen(t, b2, OpenReadOnly)
	assert.Nil(t, r.h.fresh)
	assert.False(t, r.prefaulting())
}

// The fresh pages' ranges are guesses: a range a caller asks for (a
// vector's growth) goes before them in the queue, and a fresh range
// yields to one that arrives while it runs.
func TestPrefaultAskedBeforeFresh(t *testing.T) {
	var pf prefaulter
	r := func(off uint64, fresh bool) prefaultRange { return prefaultRange{off: off, n: 1 << 20, fresh: fresh} }
	pf.push(r(1, true))
	assert.False(t, pf.asked(), "only a guess waits")
	pf.push(r(2, false))
	pf.push(r(3, false))
	pf.push(r(4, true))
	assert.True(t, pf.asked())
	var order []uint64
	for _, p := range pf.pending {
		order = append(order, p.off)
	}
	assert.Equal(t, []uint64{2, 3, 1, 4}, order)

	// A fresh range running when a caller asks: the caller's is done
	// first (a megabyte, seen whole while the 48 MB guess is not), then
	// the rest of the fresh one.
	b, _ := newShm(t)
	s := mustOpen(t, b, CreateOnly, WithSize(80<<20))
	s.h.fresh = nil
	blk, err := s.Allocate(56 << 20)
	require.NoError(t, err)
	base := uintptr(unsafe.Pointer(&blk[0])) - uintptr(s.h.base)
	s.prefault.mu.Lock()
	s.prefault.push(prefaultRange{off: uint64(base), n: 48 << 20, fresh: true})
	s.prefault.running = true
	s.prefault.mu.Unlock()
	go s.prefaultLoop()
	for resident(t, blk[:1<<20]) == 0 {
		time.Sleep(50 * time.Microsecond) // the guess has begun
	}
	asked := blk[52<<20 : 53<<20]
	s.Prefault(unsafe.Pointer(&asked[0]), len(asked))
	for resident(t, asked) < len(asked)/pageSize {
		time.Sleep(50 * time.Microsecond)
	}
	assert.Less(t, resident(t, blk[:48<<20]), (48<<20)/pageSize, "the guess yielded to the range asked for, before it was done")
	waitPrefault(t, s)
	assert.Equal(t, (48<<20)/pageSize, resident(t, blk[:48<<20]), "and was finished after it")
}
