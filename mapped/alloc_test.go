package mapped

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
)

type liveBlock struct {
	off, size uint64 // usable size
	b         []byte
	tag       byte
}

// TestAllocatorAgainstModel runs random allocate / aligned allocate /
// deallocate sequences and checks the model after every step: no two live
// blocks overlap, alignment holds, FreeMemory is exact, CheckSanity is nil,
// and freeing everything gives AllMemoryDeallocated.
func TestAllocatorAgainstModel(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4} {
		forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
			s := mustOpen(t, b, CreateOnly, WithSize(8<<20), WithFixedSize())
			rng := rand.New(rand.NewPCG(seed, 99))
			base := uintptr(s.env.Base())
			capacity := s.FreeMemory()
			require.True(t, s.AllMemoryDeallocated())
			var live []liveBlock
			var inUse uint64
			check := func(step int) {
				require.NoError(t, s.CheckSanity(), "step %d", step)
				require.Equal(t, capacity-int64(inUse), s.FreeMemory(), "step %d", step)
			}
			for step := 0; step < 3000; step++ {
				switch r := rng.IntN(10); {
				case r < 5 || len(live) == 0:
					var n int
					switch rng.IntN(8) {
					case 0:
						n = 2049 + rng.IntN(5*4096)
					case 1:
						n = 1 + rng.IntN(16)
					default:
						n = 1 + rng.IntN(2048)
					}
					align := 0
					var blk []byte
					var err error
					if rng.IntN(4) == 0 {
						align = 1 << rng.IntN(13) // 1 .. 4096
						if rng.IntN(8) == 0 {
							align = 4096 * (1 + rng.IntN(4))
						}
						blk, err = s.AllocateAligned(n, align)
					} else {
						blk, err = s.Allocate(n)
					}
					if err != nil {
						require.ErrorIs(t, err, ErrNoSpace)
						continue
					}
					require.Len(t, blk, n)
					addr := uintptr(unsafe.Pointer(&blk[0]))
					if align > 0 {
						require.Zero(t, addr%uintptr(align), "alignment %d of %d bytes", align, n)
					} else {
						require.Zero(t, addr%16)
					}
					off := uint64(addr - base)
					h, err := s.Handle(blk)
					require.NoError(t, err)
					full, err := s.Block(h)
					require.NoError(t, err)
					size := uint64(len(full))
					require.GreaterOrEqual(t, size, uint64(n))
					for _, o := range live {
						require.False(t, off < o.off+o.size && o.off < off+size, "block %d+%d overlaps %d+%d", off, size, o.off, o.size)
					}
					tag := byte(step)
					for i := range full {
						full[i] = tag
					}
					live = append(live, liveBlock{off, size, full, tag})
					inUse += size
				default:
					i := rng.IntN(len(live))
					o := live[i]
					for _, c := range o.b {
						if c != o.tag {
							require.Failf(t, "block overwritten", "block at %d lost its tag", o.off)
						}
					}
					require.NoError(t, s.Deallocate(o.b))
					live[i] = live[len(live)-1]
					live = live[:len(live)-1]
					inUse -= o.size
				}
				if step%50 == 0 {
					check(step)
				}
			}
			check(-1)
			for _, o := range live {
				require.NoError(t, s.Deallocate(o.b))
			}
			assert.True(t, s.AllMemoryDeallocated())
			assert.Equal(t, capacity, s.FreeMemory())
			require.NoError(t, s.CheckSanity())
		})
	}
}

// TestSpaceOverhead64 measures the allocator's overhead for 1e6 live
// 64-byte blocks: run pages plus their descriptors, against the payload.
// It must stay under 15%.
func TestSpaceOverhead64(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 64 MB")
	}
	s := newShmSeg(t, WithSize(128<<20))
	const n = 1_000_000
	for i := 0; i < n; i++ {
		_, err := s.Allocate(64)
		require.NoError(t, err)
	}
	var runPages uint64
	managed := s.h.get(mManaged)
	for p := uint64(0); p < managed; {
		w := s.h.get(s.h.desc(p))
		switch dKind(w) {
		case kRun:
			runPages += dPages(w)
			p += dPages(w)
		case kFree, kLarge:
			p += dPages(w)
		default:
			p++
		}
	}
	used := runPages * (pageSize + descLen)
	overhead := float64(used-n*64) / float64(n*64)
	t.Logf("1e6 x 64 B: %d run pages, %d bytes with descriptors, overhead %.2f%%", runPages, used, overhead*100)
	assert.Less(t, overhead, 0.15)
	require.NoError(t, s.CheckSanity())
}
