package mapped

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/mapstore/mapstore/backing/file"
)

// TestCachesAcrossOpensProperties is a state machine over two writable
// opens of one segment in this process (two seats, two sets of
// magazines): blocks are allocated through either and freed through
// either, an open closes and reopens (its magazines given back), a
// block is freed twice (refused). After every step FreeMemory is exact,
// and at the end CheckSanity holds and freeing everything leaves the
// segment as it began.
func TestCachesAcrossOpensProperties(t *testing.T) {
	dir := t.TempDir()
	n := 0
	rapid.Check(t, func(t *rapid.T) {
		n++
		b := file.Path(filepath.Join(dir, fmt.Sprintf("p%d.seg", n)))
		first, err := Open(b, CreateOnly, WithSize(2<<20), WithFixedSize())
		require.NoError(t, err)
		second, err := Open(b, OpenOnly)
		require.NoError(t, err)
		opens := []*Segment{first, second}
		defer func() {
			for _, s := range opens {
				_ = s.Close()
			}
		}()
		free0 := first.FreeMemory()
		type block struct {
			h    Handle
			size int64
		}
		var live []block
		var used int64
		pick := rapid.IntRange(0, 1)
		t.Repeat(map[string]func(*rapid.T){
			"Allocate": func(t *rapid.T) {
				s := opens[pick.Draw(t, "open")]
				blk, err := s.Allocate(rapid.IntRange(1, 2048).Draw(t, "n"))
				if err != nil {
					require.ErrorIs(t, err, ErrNoSpace)
					return
				}
				h, err := s.Handle(blk)
				require.NoError(t, err)
				live = append(live, block{h, int64(cap(blk))})
				used += int64(cap(blk))
			},
			"Free": func(t *rapid.T) {
				if len(live) == 0 {
					t.Skip("nothing live")
				}
				i := rapid.IntRange(0, len(live)-1).Draw(t, "i")
				s := opens[pick.Draw(t, "open")]
				blk, err := s.Block(live[i].h)
				require.NoError(t, err)
				require.NoError(t, s.Deallocate(blk))
				if rapid.Bool().Draw(t, "twice") {
					require.ErrorIs(t, opens[pick.Draw(t, "other")].Deallocate(blk), ErrInvalidHandle)
				}
				used -= live[i].size
				live[i] = live[len(live)-1]
				live = live[:len(live)-1]
			},
			"Reopen": func(t *rapid.T) {
				i := pick.Draw(t, "open")
				require.NoError(t, opens[i].Close())
				s, err := Open(b, OpenOnly)
				require.NoError(t, err)
				opens[i] = s
			},
			"": func(t *rapid.T) {
				require.Equal(t, free0-used, opens[0].FreeMemory())
				require.Equal(t, free0-used, opens[1].FreeMemory())
			},
		})
		require.NoError(t, opens[0].CheckSanity())
		for _, l := range live {
			blk, err := opens[1].Block(l.h)
			require.NoError(t, err)
			require.NoError(t, opens[1].Deallocate(blk))
		}
		require.True(t, opens[0].AllMemoryDeallocated())
		require.Equal(t, free0, opens[0].FreeMemory())
		require.NoError(t, opens[1].CheckSanity())
	})
}
