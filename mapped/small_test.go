package mapped

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The seed's scenarios use 64 KiB segments; Boost's fresh fixed 64 KiB
// segment holds 816 blocks of 64 bytes, or one of 65,288 bytes. Ours must
// hold at least 816 such blocks and, on its own, one of 48 KiB, fresh and
// again after any churn (nothing stranded).
const (
	smallSeg        = 64 << 10
	smallBlocks64   = 816
	smallLargeBlock = 48 << 10
)

// fill64 allocates 64-byte blocks until the segment is full and returns
// them.
func fill64(t *testing.T, seg *Segment) [][]byte {
	var bs [][]byte
	for {
		b, err := seg.Allocate(64)
		if errors.Is(err, ErrNoSpace) {
			return bs
		}
		require.NoError(t, err)
		bs = append(bs, b)
	}
}

func checkSmallTargets(t *testing.T, seg *Segment, when string) {
	t.Helper()
	bs := fill64(t, seg)
	assert.GreaterOrEqual(t, len(bs), smallBlocks64, "%s: 64-byte blocks in a fixed 64 KiB segment", when)
	for _, b := range bs {
		require.NoError(t, seg.Deallocate(b))
	}
	require.True(t, seg.AllMemoryDeallocated(), when)
	big, err := seg.Allocate(smallLargeBlock)
	if assert.NoError(t, err, "%s: one block of %d bytes (free memory %d)", when, smallLargeBlock, seg.FreeMemory()) {
		require.NoError(t, seg.Deallocate(big))
	}
	require.NoError(t, seg.CheckSanity())
}

func TestSmallFixedSegmentHoldsWhatBoostDoes(t *testing.T) {
	seg := newShmSeg(t, WithSize(smallSeg), WithFixedSize())
	checkSmallTargets(t, seg, "fresh")

	// Churn: every size class and large blocks, random frees, then free
	// everything and check again.
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 5 {
		var live [][]byte
		for range 2000 {
			if len(live) > 0 && rng.IntN(3) == 0 {
				k := rng.IntN(len(live))
				require.NoError(t, seg.Deallocate(live[k]))
				live[k] = live[len(live)-1]
				live = live[:len(live)-1]
				continue
			}
			n := 1 + rng.IntN(2048)
			if rng.IntN(10) == 0 {
				n = 2049 + rng.IntN(12000)
			}
			b, err := seg.Allocate(n)
			if errors.Is(err, ErrNoSpace) {
				continue
			}
			require.NoError(t, err)
			live = append(live, b)
		}
		for _, b := range live {
			require.NoError(t, seg.Deallocate(b))
		}
		checkSmallTargets(t, seg, "after churn round "+string(rune('1'+round)))
	}
}
