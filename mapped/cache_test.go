package mapped

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/internal/envelope"
	"github.com/mapstore/mapstore/internal/proctest"
)

// Tests of the per-process block caches (cache.go).

func init() {
	children["cachechurn"] = childCacheChurn
	children["cachefree"] = childCacheFree
}

// cacheSeats lists the seats whose cache word is set.
func cacheSeats(s *Segment) []int {
	var seats []int
	for seat := range envelope.MaxSeats {
		if atomic.LoadUint64(s.h.w(mCaches+uintptr(8*seat))) != 0 {
			seats = append(seats, seat)
		}
	}
	return seats
}

func TestCachesOnlyInLargeWritableOpens(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s, err := Open(b, CreateOnly)
		require.NoError(t, err)
		require.NotNil(t, s.mags, "a writable open of a large-geometry segment has caches")
		ro := mustOpen(t, b, OpenReadOnly)
		assert.Nil(t, ro.mags, "read-only: none")
		require.NoError(t, s.Close())
		cow := mustOpen(t, b, OpenCopyOnWrite)
		assert.Nil(t, cow.mags, "copy-on-write: none")
	})
	small := mustOpen(t, parseSpec("file:"+filepath.Join(t.TempDir(), "small.seg")), CreateOnly, WithSize(64<<10), WithFixedSize())
	assert.Nil(t, small.mags, "a small segment has no caches")
}

// After warming up, small allocations and frees take no lock at all.
func TestCachedPairsTakeNoLock(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s, err := Open(b, CreateOnly)
		require.NoError(t, err)
		size0 := s.Size()
		// Grow the segment with small blocks, and free them: the cells
		// the magazines then hold lie past the size this open began with.
		var grown [][]byte
		for range 40000 {
			blk, err := s.Allocate(64)
			require.NoError(t, err)
			grown = append(grown, blk)
		}
		for i := len(grown) - 1; i >= 0; i-- {
			require.NoError(t, s.Deallocate(grown[i]))
		}
		require.Greater(t, s.Size(), size0)
		for range 100 {
			blk, err := s.Allocate(64)
			require.NoError(t, err)
			require.NoError(t, s.Deallocate(blk))
		}
		before, err := s.Info()
		require.NoError(t, err)
		for range 100000 {
			blk, err := s.Allocate(64)
			require.NoError(t, err)
			require.NoError(t, s.Deallocate(blk))
		}
		after, err := s.Info()
		require.NoError(t, err)
		// A goroutine that moves to another P makes that P's magazine
		// (once): at most one lock per P.
		assert.LessOrEqual(t, after.LockAcquisitions-before.LockAcquisitions, uint64(runtime.GOMAXPROCS(0)), "1e5 cached pairs took the segment lock")
		require.NoError(t, s.CheckSanity())
		require.NoError(t, s.Close())

		// Without caches, each allocation and each free takes it.
		s = mustOpen(t, b, OpenOnly, withoutCaches())
		before, err = s.Info()
		require.NoError(t, err)
		for range 1000 {
			blk, err := s.Allocate(64)
			require.NoError(t, err)
			require.NoError(t, s.Deallocate(blk))
		}
		after, err = s.Info()
		require.NoError(t, err)
		assert.GreaterOrEqual(t, after.LockAcquisitions-before.LockAcquisitions, uint64(2000))
	})
}

// A block freed twice is refused the second time (it is in a cache), and
// Block refuses it; after its cache gave it back and another refill took
// it again, the same holds.
func TestCachedDoubleFreeRefused(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly)
		x, err := s.Allocate(100)
		require.NoError(t, err)
		xh, err := s.Handle(x)
		require.NoError(t, err)
		require.NoError(t, s.Deallocate(x))
		err = s.Deallocate(x)
		require.ErrorIs(t, err, ErrInvalidHandle)
		assert.Contains(t, err.Error(), fmt.Sprintf("offset %d", xh.Offset()))
		_, err = s.Block(xh)
		require.ErrorIs(t, err, ErrInvalidHandle)
		require.NoError(t, s.CheckSanity())

		// Churn the class so that x goes back to the heap and through
		// refills, then free it again: refused wherever it is.
		var held [][]byte
		for range 300 {
			blk, err := s.Allocate(100)
			require.NoError(t, err)
			held = append(held, blk)
		}
		for _, blk := range held {
			if &blk[0] != &x[0] {
				require.NoError(t, s.Deallocate(blk))
			}
		}
		mine := false
		for _, blk := range held {
			mine = mine || &blk[0] == &x[0]
		}
		if mine {
			require.NoError(t, s.Deallocate(x), "x was handed out again: this free is its owner's")
		}
		require.ErrorIs(t, s.Deallocate(x), ErrInvalidHandle)
		require.NoError(t, s.CheckSanity())
		require.True(t, s.AllMemoryDeallocated())
	})
}

// FreeMemory and AllMemoryDeallocated stay exact with cells in caches: a
// random mix of sizes, and every block freed at the end.
func TestCachedAccountingExact(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly, WithSize(8<<20)) // no growth: FreeMemory's capacity stays
		free0 := s.FreeMemory()
		rng := rand.New(rand.NewPCG(17, 17))
		var live [][]byte
		var usable int64
		for round := range 20 {
			for range 500 {
				if len(live) > 0 && rng.IntN(3) == 0 {
					i := rng.IntN(len(live))
					usable -= int64(cap(live[i]))
					require.NoError(t, s.Deallocate(live[i]))
					live[i] = live[len(live)-1]
					live = live[:len(live)-1]
					continue
				}
				blk, err := s.Allocate(1 + rng.IntN(2048))
				require.NoError(t, err)
				usable += int64(cap(blk))
				live = append(live, blk)
			}
			require.Equal(t, free0-usable, s.FreeMemory(), "round %d", round)
			require.NoError(t, s.CheckSanity(), "round %d", round)
		}
		for _, blk := range live {
			require.NoError(t, s.Deallocate(blk))
		}
		assert.Equal(t, free0, s.FreeMemory())
		assert.True(t, s.AllMemoryDeallocated())
		cached, err := s.h.cachedBytes()
		require.NoError(t, err)
		assert.Positive(t, cached, "the caches hold cells, counted free")
	})
}

// Goroutines on every P allocate and free at once; the counts come out
// exact.
func TestCachedGoroutines(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly, WithSize(8<<20))
		free0 := s.FreeMemory()
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(g), 3))
				var mine [][]byte
				for i := range 20000 {
					if len(mine) > 50 || (len(mine) > 0 && rng.IntN(2) == 0) {
						blk := mine[len(mine)-1]
						mine = mine[:len(mine)-1]
						if binaryWord(blk) != uint64(g)<<32|uint64(len(blk)) {
							errs <- fmt.Errorf("goroutine %d: block changed under it", g)
							return
						}
						if err := s.Deallocate(blk); err != nil {
							errs <- err
							return
						}
						continue
					}
					blk, err := s.Allocate(8 + rng.IntN(500))
					if err != nil {
						errs <- err
						return
					}
					setWord(blk, uint64(g)<<32|uint64(len(blk)))
					mine = append(mine, blk)
					if i%1000 == 0 {
						time.Sleep(time.Microsecond) // move between Ps
					}
				}
				for _, blk := range mine {
					if err := s.Deallocate(blk); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		assert.Equal(t, free0, s.FreeMemory())
		assert.True(t, s.AllMemoryDeallocated())
		require.NoError(t, s.CheckSanity())
	})
}

func binaryWord(b []byte) uint64 { return *(*uint64)(unsafe.Pointer(&b[0])) }
func setWord(b []byte, v uint64) { *(*uint64)(unsafe.Pointer(&b[0])) = v }

// Close gives back what the open's caches hold: the segment is quiet and
// nothing is allocated.
func TestCloseEmptiesCaches(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s, err := Open(b, CreateOnly, WithSize(8<<20))
		require.NoError(t, err)
		free0 := s.FreeMemory()
		var live [][]byte
		for i := range 2000 {
			blk, err := s.Allocate(16 + i%2000)
			require.NoError(t, err)
			live = append(live, blk)
		}
		for _, blk := range live {
			require.NoError(t, s.Deallocate(blk))
		}
		require.NotEmpty(t, cacheSeats(s))
		require.NoError(t, s.Close())
		s = mustOpen(t, b, OpenOnly)
		assert.Empty(t, s.RecoveryReport().Actions, "closed cleanly: nothing to recover")
		assert.Empty(t, cacheSeats(s))
		assert.True(t, s.AllMemoryDeallocated())
		assert.Equal(t, free0, s.FreeMemory())
	})
}

// An allocation that finds no space gets back what the caches hold: in a
// fixed segment filled with small blocks and emptied again, the largest
// block the free pages allow still fits.
func TestCachesGiveBackWhenSpaceRunsOut(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, _ string) {
		s := mustOpen(t, b, CreateOnly, WithSize(1<<20), WithFixedSize())
		free0 := s.FreeMemory()
		var live [][]byte
		for {
			blk, err := s.Allocate(2000)
			if errors.Is(err, ErrNoSpace) {
				break
			}
			require.NoError(t, err)
			live = append(live, blk)
		}
		for _, blk := range live {
			require.NoError(t, s.Deallocate(blk))
		}
		cached, err := s.h.cachedBytes()
		require.NoError(t, err)
		require.Positive(t, cached)
		require.Equal(t, free0, s.FreeMemory())
		big, err := s.Allocate(int(free0))
		require.NoError(t, err, "every free page, the cached ones included")
		require.NoError(t, s.Deallocate(big))
		require.NoError(t, s.CheckSanity())
		assert.True(t, s.AllMemoryDeallocated())
	})
}

// childCacheFree frees the blocks whose handles are in the file args[1],
// allocates args[3] blocks of random small sizes, writes their handles to
// args[2], and closes.
func childCacheFree(args []string) int {
	s := childOpen(args[0])
	data, err := os.ReadFile(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for _, f := range strings.Fields(string(data)) {
		h, err := ParseHandle(f)
		if err == nil {
			var blk []byte
			if blk, err = s.Block(h); err == nil {
				err = s.Deallocate(blk)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	n, _ := strconv.Atoi(args[3])
	rng := rand.New(rand.NewPCG(uint64(n), 5))
	var out strings.Builder
	for range n {
		blk, err := s.Allocate(1 + rng.IntN(2048))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		h, _ := s.Handle(blk)
		fmt.Fprintln(&out, h)
	}
	if err := os.WriteFile(args[2], []byte(out.String()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("done")
	return 0
}

// Blocks allocated by one process and freed by another, both ways, round
// after round: the accounting is exact after each.
func TestCachedBlocksFreedByAnotherProcess(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly, WithSize(4<<20))
		free0 := s.FreeMemory()
		dir := t.TempDir()
		rng := rand.New(rand.NewPCG(5, 5))
		for round := range 6 {
			var out strings.Builder
			for range 1000 {
				blk, err := s.Allocate(1 + rng.IntN(2048))
				require.NoError(t, err)
				h, _ := s.Handle(blk)
				fmt.Fprintln(&out, h)
			}
			in, back := filepath.Join(dir, fmt.Sprintf("in%d", round)), filepath.Join(dir, fmt.Sprintf("back%d", round))
			require.NoError(t, os.WriteFile(in, []byte(out.String()), 0o644))
			c := proctest.Start(t, "cachefree", spec, in, back, "1000")
			c.Expect("done")
			require.Zero(t, c.Wait(), c.Stderr())
			data, err := os.ReadFile(back)
			require.NoError(t, err)
			fs := strings.Fields(string(data))
			require.Len(t, fs, 1000)
			for _, f := range fs {
				h, err := ParseHandle(f)
				require.NoError(t, err)
				blk, err := s.Block(h)
				require.NoError(t, err)
				require.NoError(t, s.Deallocate(blk))
			}
			require.Equal(t, free0, s.FreeMemory(), "round %d", round)
			require.True(t, s.AllMemoryDeallocated(), "round %d", round)
			require.NoError(t, s.CheckSanity(), "round %d", round)
			require.Equal(t, []int{s.env.Seat()}, cacheSeats(s), "only this open's caches stay")
		}
	})
}

// cacheLedgerWords is the size of childCacheChurn's ledger: large enough
// to be a large block (so that it is no cell of its own).
const cacheLedgerWords = 1024

// childCacheChurn churns small blocks from two goroutines, each with half
// of the ledger named "cledger": a word is 0 or the handle of a live
// block of the child's. A block is allocated, then recorded; a record is
// cleared, then its block freed: the ledger never names a freed block,
// and a kill leaves at most one live block per goroutine that it does not
// name. With args[2] (a cacheHook step) the child stops, pinned, at that
// step, says "holding" and spins until it is killed; "drain" closes the
// segment after some churn to get there.
func childCacheChurn(args []string) int {
	s := childOpen(args[0])
	ledger, err := s.LookupNamed("cledger", false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	seed := parseSeed(args[1])
	stop := ""
	if len(args) > 2 {
		stop = args[2]
	}
	var once sync.Once
	if stop != "" {
		cacheHook = func(where string) {
			if where == stop {
				once.Do(func() { fmt.Println("holding") })
				for atomic.LoadUint32(&spinForever) == 0 {
					// Pinned, maybe: no sleep, no yield, until the kill.
				}
			}
		}
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(&ledger.Obj[0])), cacheLedgerWords)
	fmt.Println("ready")
	var wg sync.WaitGroup
	fail := make(chan error, 2)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			half := words[g*cacheLedgerWords/2 : (g+1)*cacheLedgerWords/2]
			for n := 0; stop != "drain" || n < 20000; n++ {
				i := rng.IntN(len(half))
				if v := atomic.LoadUint64(&half[i]); v != 0 {
					atomic.StoreUint64(&half[i], 0)
					blk, err := s.Block(Handle(v))
					if err == nil {
						err = s.Deallocate(blk)
					}
					if err != nil {
						fail <- err
						return
					}
					continue
				}
				blk, err := s.Allocate(1 + rng.IntN(2048))
				if err != nil {
					fail <- err
					return
				}
				h, _ := s.Handle(blk)
				atomic.StoreUint64(&half[i], uint64(h))
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-fail:
		fmt.Fprintln(os.Stderr, err)
		return 1
	default:
	}
	_ = s.Close() // "drain" stops in here
	fmt.Fprintln(os.Stderr, "closed without reaching", stop)
	return 1
}

var spinForever uint32

// liveCells lists every live cell of the heap (cached ones included).
func liveCells(h *heap) []uint64 {
	var out []uint64
	managed := h.managed()
	for p := uint64(0); p < managed; p++ {
		w0 := h.get(h.desc(p))
		if dKind(w0) != kRun {
			continue
		}
		cl := geomOf(w0)
		for cell := range cl.ncells {
			if h.get(uintptr(p<<pageShift+cell/64*8))&(1<<(cell%64)) != 0 {
				out = append(out, p<<pageShift+cl.start+cell*cl.size)
			}
		}
	}
	return out
}

// reconcileCacheChurn recovers after a killed churn child: its caches are
// given back, every live cell is the ledger's (or the name directory's),
// but for at most two the child had not recorded, which are freed here.
func reconcileCacheChurn(t *testing.T, s *Segment, ledger []uint64) {
	t.Helper()
	require.NoError(t, s.Recover())
	for _, seat := range cacheSeats(s) {
		require.Equal(t, s.env.Seat(), seat, "the dead child's caches are given back")
	}
	named := map[uint64]bool{}
	for _, v := range ledger {
		if v != 0 {
			named[uint64(Handle(v).Offset())] = true
		}
	}
	var stray []uint64
	require.NoError(t, s.read("reconcile", func() error {
		dir := s.h.get(mDirTable)
		cached := map[uint64]bool{}
		if err := s.h.walkCaches(nil, func(_ int, _, _, cell uint64) error {
			cached[cell] = true
			return nil
		}); err != nil {
			return err
		}
		for _, off := range liveCells(s.h) {
			if !named[off] && off != dir && !cached[off] {
				stray = append(stray, off)
			}
			delete(named, off)
		}
		return nil
	}))
	assert.Empty(t, named, "the ledger names only live blocks")
	if len(stray) > 2 {
		for _, off := range stray {
			sz, err := s.h.blockSize(off)
			t.Logf("stray %d size %d err %v marked %v cached %v", off, sz, err, s.h.marked(off), s.h.cachedAt(off))
		}
		t.Logf("report: %s", strings.Join(s.RecoveryReport().Actions, "\n"))
	}
	require.LessOrEqual(t, len(stray), 2, "at most one unrecorded block per goroutine")
	for _, off := range stray {
		require.NoError(t, s.deallocateAt(off))
	}
	require.NoError(t, s.CheckSanity())
}

// The caches under SIGKILL: a child churns small blocks from two
// goroutines through its caches and is killed at random moments; then at
// each batch step (a magazine made, a refill, a flush cell by cell and
// journaled, a magazine freed at Close), held there. After each kill the
// survivor recovers: the dead child's caches are given back, each cut
// short batch move rolled back, and every block is accounted for; at the
// end, destroying everything leaves the segment as it began.
func TestSIGKILLDuringCachedChurn(t *testing.T) {
	kills := orShort(60, 15)
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly, WithSize(4<<20))
		free0 := s.FreeMemory()
		n, err := s.CreateNamed("cledger", false, NameSpec{Count: cacheLedgerWords, ElemSize: 8, Align: 8}, nil)
		require.NoError(t, err)
		ledger := unsafe.Slice((*uint64)(unsafe.Pointer(&n.Obj[0])), cacheLedgerWords)
		rng := rand.New(rand.NewPCG(23, 23))
		for range kills {
			c := proctest.Start(t, "cachechurn", spec, strconv.FormatUint(rng.Uint64(), 10))
			c.Expect("ready")
			time.Sleep(time.Duration(500+rng.IntN(3000)) * time.Microsecond)
			c.Kill()
			reconcileCacheChurn(t, s, ledger)
		}
		acts := strings.Join(s.RecoveryReport().Actions, "\n")
		assert.Contains(t, acts, "cached blocks of the process that died in seat")

		// Each step, held until the kill.
		for _, step := range []struct{ where, want string }{
			{"make", "rolled back an interrupted allocation"},
			{"refill", "rolled back an interrupted allocation"},
			{"flush", "cached blocks of the process that died"},
			{"flushslow", "rolled back an interrupted deallocation"},
			{"drain", "rolled back an interrupted deallocation"},
		} {
			before := len(s.RecoveryReport().Actions)
			c := proctest.Start(t, "cachechurn", spec, strconv.FormatUint(rng.Uint64(), 10), step.where)
			c.Expect("ready")
			c.Expect("holding")
			c.Kill()
			reconcileCacheChurn(t, s, ledger)
			acts := strings.Join(s.RecoveryReport().Actions[before:], "\n")
			assert.Contains(t, acts, step.want, step.where)
		}
		for i, v := range ledger {
			if v != 0 {
				ledger[i] = 0
				require.NoError(t, s.deallocateAt(uint64(Handle(v).Offset())))
			}
		}
		require.NoError(t, s.RemoveNamed("cledger", false, nil))
		assert.Equal(t, free0, s.FreeMemory())
		assert.True(t, s.AllMemoryDeallocated())
		require.NoError(t, s.CheckSanity())
	})
}
