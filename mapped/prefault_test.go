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
