package mapped

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/internal/proctest"
)

// A lane with undo entries only (saves, allocations) commits by emptying
// its record as it releases: no committed state, no redo pass. A child
// runs such lanes over and over, each saving and changing two words of a
// pair (a, b) to (i, ^i) and, now and then, allocating a block whose
// offset it records in a third saved word, and is killed at random. After
// each kill every pair must hold a word and its complement (the lane in
// flight rolled back, or stood), the segment be sane, and the blocks the
// third words name be the only ones besides the fixture's: none leaked.

func init() { children["lanesaveonly"] = childLaneSaveOnly }

const soPairs = 8 // pairs of words, then soPairs block words

func childLaneSaveOnly(args []string) int {
	seg := childOpen(args[0])
	n, err := seg.LookupNamed("pairs", false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(&n.Obj[0])), 3*soPairs)
	fmt.Println("ready")
	for i := uint64(1); ; i++ {
		p := i % soPairs
		l, err := seg.BeginLane()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		a, b := &words[2*p], &words[2*p+1]
		if err := l.Save(unsafe.Pointer(a), 8); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		*a = i
		if err := l.Save(unsafe.Pointer(b), 8); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		*b = ^i
		if c := &words[2*soPairs+p]; *c == 0 && i%5 == 0 {
			blk, err := l.Allocate(64)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			if err := l.Save(unsafe.Pointer(c), 8); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			*c = uint64(uintptr(unsafe.Pointer(&blk[0])) - uintptr(seg.h.base))
		}
		if err := l.Commit(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
}

func TestSIGKILLDuringSaveOnlyLanes(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s, err := Open(b, CreateOnly, WithSize(4<<20))
		require.NoError(t, err)
		free0 := s.FreeMemory()
		_, err = s.CreateNamed("pairs", false, NameSpec{Count: 3 * soPairs * 8, ElemSize: 1}, func(obj []byte) {
			for p := range soPairs {
				binary.LittleEndian.PutUint64(obj[16*p+8:], ^uint64(0)) // (0, ^0)
			}
		})
		require.NoError(t, err)
		require.NoError(t, s.Close())
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
		rolled := 0
		for kill := range 100 {
			c := proctest.Start(t, "lanesaveonly", spec)
			c.Expect("ready")
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Microsecond)
			c.Kill()
			s, err := Open(b, OpenOnly)
			require.NoError(t, err)
			for _, a := range s.RecoveryReport().Actions {
				if strings.Contains(a, "rolled back the operation of lane") {
					rolled++
				}
				assert.NotContains(t, a, "finished the committed operation", "a save-only lane is never committed in its record")
			}
			require.NoError(t, s.CheckSanity(), "kill %d", kill)
			n, err := s.LookupNamed("pairs", false)
			require.NoError(t, err)
			words := unsafe.Slice((*uint64)(unsafe.Pointer(&n.Obj[0])), 3*soPairs)
			for p := range soPairs {
				require.Equal(t, ^words[2*p], words[2*p+1], "kill %d: pair %d", kill, p)
			}
			require.NoError(t, s.Close())
		}
		t.Logf("100 kills; %d lanes rolled back", rolled)
		assert.Positive(t, rolled, "some kills landed inside a lane")
		s, err = Open(b, OpenOnly)
		require.NoError(t, err)
		defer s.Close()
		n, err := s.LookupNamed("pairs", false)
		require.NoError(t, err)
		words := unsafe.Slice((*uint64)(unsafe.Pointer(&n.Obj[0])), 3*soPairs)
		for _, off := range words[2*soPairs:] {
			if off != 0 {
				require.NoError(t, s.Deallocate(unsafe.Slice((*byte)(unsafe.Add(s.h.base, off)), 64)))
			}
		}
		require.NoError(t, s.RemoveNamed("pairs", false, nil))
		assert.Equal(t, free0, s.FreeMemory(), "every block the lanes allocated is recorded: none leaked")
		assert.True(t, s.AllMemoryDeallocated())
	})
}
