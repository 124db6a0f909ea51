package mapped

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/internal/proctest"
)

// childChurn: args spec id rounds. Two goroutines each keep up to 64 live
// blocks tagged with (id, goroutine, serial), check the tags before
// freeing, and free everything at the end.
func childChurn(args []string) int {
	seg := childOpen(args[0])
	id, _ := strconv.Atoi(args[1])
	rounds, _ := strconv.Atoi(args[2])
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(id), uint64(g)))
			var live [][]byte
			tagOf := func(b []byte) byte { return b[0] }
			check := func(b []byte) error {
				t := tagOf(b)
				for i, c := range b {
					if c != t {
						return fmt.Errorf("proc %d/%d: block %p byte %d is %d, want %d", id, g, &b[0], i, c, t)
					}
				}
				return nil
			}
			for r := 0; r < rounds; r++ {
				if len(live) < 64 && (len(live) == 0 || rng.IntN(2) == 0) {
					b, err := seg.Allocate(1 + rng.IntN(3000))
					if err != nil {
						errs <- err
						return
					}
					tag := byte(id*16 + g*4 + r%4 + 1)
					for i := range b {
						b[i] = tag
					}
					live = append(live, b)
					continue
				}
				i := rng.IntN(len(live))
				if err := check(live[i]); err != nil {
					errs <- err
					return
				}
				if err := seg.Deallocate(live[i]); err != nil {
					errs <- err
					return
				}
				live[i] = live[len(live)-1]
				live = live[:len(live)-1]
			}
			for _, b := range live {
				if err := check(b); err != nil {
					errs <- err
					return
				}
				if err := seg.Deallocate(b); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := seg.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("done")
	return 0
}

func TestMultiProcessChurn(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly, WithSize(64<<10))
		var cs []*proctest.Child
		for id := 1; id <= 3; id++ {
			cs = append(cs, proctest.Start(t, "churn", spec, strconv.Itoa(id), "20000"))
		}
		for _, c := range cs {
			c.Expect("done")
			require.Equal(t, 0, c.Wait(), c.Stderr())
		}
		require.NoError(t, s.CheckSanity())
		assert.True(t, s.AllMemoryDeallocated(), "no lost block")
		assert.Equal(t, int64(s.h.get(mCapacity)), s.FreeMemory(), "every page free again")
		assert.Greater(t, s.Size(), int64(64<<10), "the churn grew the segment while all were attached")
	})
}

// childLock takes seg's lock for a child that will die holding it.
func childLock(seg *Segment) {
	if err := seg.lockOnly("test"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

// holdUntilKilled says "holding" and waits for the parent's SIGKILL.
func holdUntilKilled() int {
	fmt.Println("holding")
	time.Sleep(time.Hour)
	return 0
}

func childHoldLock(args []string) int {
	seg := childOpen(args[0])
	childLock(seg)
	seg.h.j.Begin(opAllocate)
	// Half an allocation: counters and a class head changed, nothing else.
	seg.h.add(mInUse, 4096)
	seg.h.set(mClasses+8, 12345)
	return holdUntilKilled()
}

func TestDeadLockOwnerIsTakenOverAndRolledBack(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly)
		free0 := s.FreeMemory()
		c := proctest.Start(t, "holdlock", spec)
		c.Expect("holding")
		c.Kill()
		// The survivor's next operation waits, finds the owner dead, takes
		// the lock over and rolls the half-done allocation back.
		blk, err := s.Allocate(100)
		require.NoError(t, err)
		require.NoError(t, s.Deallocate(blk))
		require.NoError(t, s.CheckSanity())
		assert.Equal(t, free0, s.FreeMemory())
		actions := strings.Join(s.RecoveryReport().Actions, "\n")
		assert.Contains(t, actions, "rolled back an interrupted allocation")
		assert.Contains(t, actions, "died holding the segment lock")

		// Same again, but a fresh Open is the first to notice.
		c = proctest.Start(t, "holdlock", spec)
		c.Expect("holding")
		c.Kill()
		s2, err := Open(b, OpenOnly)
		require.NoError(t, err)
		defer s2.Close()
		rep := s2.RecoveryReport()
		assert.Len(t, rep.DeadProcesses, 1)
		assert.Contains(t, strings.Join(rep.Actions, "\n"), "rolled back an interrupted allocation")
		require.NoError(t, s2.CheckSanity())
		assert.Equal(t, free0, s2.FreeMemory())
		require.NoError(t, s.CheckSanity(), "the survivor agrees")
	})
}

func childHoldFast(args []string) int {
	seg := childOpen(args[0])
	hd, _ := ParseHandle(args[2])
	off, err := seg.resolve(hd)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	childLock(seg)
	h := seg.h
	c := classOf[64/16]
	if args[1] == "alloc" {
		// Intent published, bit set and the reference written; the
		// descriptor's live count and the in-use total not yet.
		run := h.get(mClasses + uintptr(c)*8)
		bm := h.w(uintptr(run << pageShift))
		b := uint64(bits.TrailingZeros64(^*bm))
		h.intend(fastAlloc, run, b, uintptr(off))
		*bm |= 1 << b
		*h.w(uintptr(off)) = uint64(seg.handle(run<<pageShift + classes[c].start + b*64))
	} else {
		// Intent published, bit cleared, live count and in-use total
		// changed; the reference word not cleared.
		page := off >> pageShift
		cell, _ := classes[c].cellOf(off - page<<pageShift)
		h.intend(0, page, cell, 0)
		*h.w(uintptr(page<<pageShift + cell/64*8)) &^= 1 << (cell % 64)
		*h.w(h.desc(page)) -= 1 << 16
		*h.w(mInUse) -= 64
	}
	return holdUntilKilled()
}

// A process killed in the middle of a fast-path (intent record) small
// allocation or free is rolled back by the next lock waiter: the bitmap,
// the run's live count, the in-use total and the reference word are as
// they were before.
func TestDeadFastPathOwnerIsRolledBack(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly)
		ref, err := s.Allocate(8)
		require.NoError(t, err)
		clear(ref)
		refH, _ := s.Handle(ref)
		keep, err := s.Allocate(64) // the class's run exists and is not full
		require.NoError(t, err)
		victim, err := s.Allocate(64)
		require.NoError(t, err)
		victimH, _ := s.Handle(victim)
		free0 := s.FreeMemory()

		for _, mode := range []string{"alloc", "free"} {
			arg := refH.String()
			if mode == "free" {
				arg = victimH.String()
			}
			c := proctest.Start(t, "holdfast", spec, mode, arg)
			c.Expect("holding")
			c.Kill()
			// The survivor's next operation takes the lock over and rolls back.
			require.Equal(t, free0, s.FreeMemory(), mode)
			require.NoError(t, s.CheckSanity(), mode)
			assert.Zero(t, binary.LittleEndian.Uint64(ref), "the reference word is restored")
			_, err := s.Block(victimH)
			require.NoError(t, err, "the victim is still live")
			assert.Contains(t, strings.Join(s.RecoveryReport().Actions, "\n"), "rolled back an interrupted small-block "+map[string]string{"alloc": "allocation", "free": "deallocation"}[mode])
		}
		require.NoError(t, s.Deallocate(victim))
		require.NoError(t, s.Deallocate(keep))
		require.NoError(t, s.Deallocate(ref))
		require.True(t, s.AllMemoryDeallocated())
		require.NoError(t, s.CheckSanity())
	})
}

// childSmallChurn allocates and frees small blocks through the ledger
// named ledger_<id> until it is killed: nearly every operation takes the
// fast path.
func childSmallChurn(args []string) int {
	seg := childOpen(args[0])
	ledger, err := seg.LookupNamed("ledger_"+args[1], false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	seed := parseSeed(args[2])
	rng := rand.New(rand.NewPCG(seed, 1))
	fmt.Println("ready")
	for {
		i := rng.IntN(ledgerWords)
		ref := ledger.Handle + Handle(8*i)
		if binary.LittleEndian.Uint64(ledger.Obj[8*i:]) == 0 {
			if _, err := seg.AllocateInto(ref, 1+rng.IntN(200)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		} else if err := seg.DeallocateFrom(ref); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
}

// The fast path under SIGKILL: a child churns small blocks, the survivor
// kills it at a random moment and is the one to take the lock over, so
// its report counts every rollback. It kills until it has seen several
// fast-path rollbacks (at least 200 kills in all), checking after each
// kill that every block is accounted for.
func TestSIGKILLDuringSmallBlockChurn(t *testing.T) {
	minKills, wantFast := orShort(200, 40), orShort(3, 1)
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly, WithSize(256<<10))
		_, err := s.CreateNamed("ledger_1", false, NameSpec{Count: ledgerWords, ElemSize: 8, Align: 8}, nil)
		require.NoError(t, err)
		rng := rand.New(rand.NewPCG(11, 11))
		fast, kills := 0, 0
		for ; kills < 5000 && (kills < minKills || fast < wantFast); kills++ {
			c := proctest.Start(t, "smallchurn", spec, "1", strconv.FormatUint(rng.Uint64(), 10))
			c.Expect("ready")
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Microsecond)
			c.Kill()
			verifyKilled(t, s)
			fast = strings.Count(strings.Join(s.RecoveryReport().Actions, "\n"), "small-block")
		}
		acts := strings.Join(s.RecoveryReport().Actions, "\n")
		t.Logf("%d kills: %d fast-path and %d journaled rollbacks", kills, fast, strings.Count(acts, "rolled back an interrupted")-fast)
		require.GreaterOrEqual(t, fast, wantFast, "no kill landed inside a fast-path operation")
	})
}

// Kill test. Each child has a ledger: a named array of ledgerWords words
// in which AllocateInto and DeallocateFrom keep its blocks' handles, so
// that the survivor knows every block, whatever instant the kill hit.
// Children also create and remove names "k<id>_<j>" whose value is a
// function of the name.
const ledgerWords = 48

func nameValue(name string, i int) uint64 { return nameHash(name, false) + uint64(i) }

// indexChurnNames is how many names childIndexChurn cycles through: the
// index grows from 8 to 64 groups on the way up (rebuilds at 49, 98 and
// 196 names) and is freed with the last name on the way down.
const indexChurnNames = 300

func childIndexChurn(args []string) int {
	seg := childOpen(args[0])
	rng := rand.New(rand.NewPCG(parseSeed(args[1]), 3))
	fmt.Println("ready")
	for {
		order := rng.Perm(indexChurnNames)
		for _, j := range order {
			name := fmt.Sprintf("x_%d", j)
			count := int64(1 + j%3)
			_, err := seg.CreateNamed(name, false, NameSpec{Count: count, ElemSize: 8, Align: 8}, func(obj []byte) {
				for i := range int(count) {
					binary.LittleEndian.PutUint64(obj[i*8:], nameValue(name, i))
				}
			})
			if err != nil && !errors.Is(err, ErrExists) {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		for _, j := range rng.Perm(indexChurnNames) {
			if err := seg.RemoveNamed(fmt.Sprintf("x_%d", j), false, nil); err != nil && !errors.Is(err, ErrNotFound) {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
	}
}

func parseSeed(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}

// The name index under SIGKILL: a child fills and empties the directory
// (index rebuilds on the way up, the index freed with the last name on the
// way down), killed at random moments. After each kill every name is
// whole or absent, sanity holds and every block is accounted for; over
// the run the index must have been seen at several sizes, so kills landed
// among rebuilds.
func TestSIGKILLDuringIndexRebuilds(t *testing.T) {
	kills := orShort(200, 40)
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly, WithSize(256<<10))
		rng := rand.New(rand.NewPCG(13, 13))
		sizes := map[uint64]bool{}
		for range kills {
			c := proctest.Start(t, "indexchurn", spec, strconv.FormatUint(rng.Uint64(), 10))
			c.Expect("ready")
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
			c.Kill()
			verifyKilled(t, s)
			sizes[s.h.get(mDirCap)] = true
		}
		journaled := strings.Count(strings.Join(s.RecoveryReport().Actions, "\n"), "rolled back an interrupted named")
		t.Logf("%d kills, %d of them inside a named insert or remove; index sizes seen after them (groups; 0 = no index): %v", kills, journaled, sizes)
		require.GreaterOrEqual(t, len(sizes), 3, "kills did not land at different index sizes")
		// The journaled rollback path must have been taken, often: were an
		// undo record's publishing store dropped (see journal.StoreOrdered),
		// no kill would find one.
		require.GreaterOrEqual(t, journaled, kills/4, "kills did not land inside journaled operations")
	})
}

func childKillChurn(args []string) int {
	seg := childOpen(args[0])
	id, _ := strconv.Atoi(args[1])
	seed := parseSeed(args[2])
	ledger, err := seg.LookupNamed("ledger_"+args[1], false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rng := rand.New(rand.NewPCG(seed, uint64(id)))
	fmt.Println("ready")
	for op := 0; ; op++ {
		if rng.IntN(3) == 0 {
			name := fmt.Sprintf("k%d_%d", id, rng.IntN(32))
			count := int64(1 + rng.IntN(40))
			_, err := seg.CreateNamed(name, false, NameSpec{Count: count, ElemSize: 8, Align: 8}, func(obj []byte) {
				for i := 0; i < int(count); i++ {
					binary.LittleEndian.PutUint64(obj[i*8:], nameValue(name, i))
				}
			})
			if err == nil {
				continue
			}
			if err := seg.RemoveNamed(name, false, nil); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			continue
		}
		i := rng.IntN(ledgerWords)
		ref := ledger.Handle + Handle(8*i)
		if binary.LittleEndian.Uint64(ledger.Obj[8*i:]) == 0 {
			size := 1 + rng.IntN(3000)
			if rng.IntN(10) == 0 {
				size = 4097 + rng.IntN(20000)
			}
			if _, err := seg.AllocateInto(ref, size); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		} else if err := seg.DeallocateFrom(ref); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
}

// liveBlocks walks the descriptors and returns every live block's offset
// and usable size (the walk CheckSanity trusts).
func (h *heap) liveBlocks() map[uint64]uint64 {
	out := map[uint64]uint64{}
	managed := h.get(mManaged)
	for p := uint64(0); p < managed; {
		w := h.get(h.desc(p))
		switch dKind(w) {
		case kFree, kLarge:
			if dKind(w) == kLarge {
				out[p<<pageShift] = dPages(w) * pageSize
			}
			p += dPages(w)
		case kRun:
			cl := &classes[dClass(w)]
			for s := uint64(0); s < cl.ncells; s++ {
				if h.get(uintptr(p<<pageShift+s/64*8))&(1<<(s%64)) != 0 {
					out[p<<pageShift+cl.start+s*cl.size] = cl.size
				}
			}
			p += cl.pages
		default:
			p++
		}
	}
	return out
}

// verifyKilled checks the segment after kills: sanity, every ledger
// handle a live block, every child name complete, and the set of live
// blocks exactly what the survivor can account for. It holds the segment
// lock throughout, so children still running wait.
func verifyKilled(t *testing.T, s *Segment) {
	t.Helper()
	_ = s.FreeMemory() // takes the lock: a dead owner is taken over here
	s.lk.lock()
	defer s.lk.unlock()
	h := s.h
	require.NoError(t, h.checkSanity(s.env.Size()))
	expect := map[uint64]bool{}
	if t := h.get(mDirTable); t != 0 {
		expect[t] = true
	}
	for _, v := range h.slots(h.get(mDirTable), h.get(mDirCap)) {
		rec := v & slotOffMask
		expect[rec] = true
		name, ok := h.recName(rec, h.get(mManaged)<<pageShift)
		require.True(t, ok, "record at %d", rec)
		_, _, _, ok = h.view(rec, h.get(uintptr(rec)))
		require.True(t, ok, "record of %q does not fit in the segment", name)
		n := s.namedAt(rec, name)
		if strings.HasPrefix(name, "ledger_") {
			for i := 0; i < ledgerWords; i++ {
				if v := binary.LittleEndian.Uint64(n.Obj[8*i:]); v != 0 {
					off, err := s.resolve(Handle(v))
					require.NoError(t, err)
					_, err = h.blockSize(off)
					require.NoError(t, err, "%s[%d] holds %d", name, i, v)
					expect[off] = true
				}
			}
			continue
		}
		for i := 0; i < int(n.Count); i++ {
			require.Equal(t, nameValue(name, i), binary.LittleEndian.Uint64(n.Obj[8*i:]), "%s[%d] is incomplete", name, i)
		}
	}
	live := h.liveBlocks()
	var sum uint64
	for off, size := range live {
		require.True(t, expect[off], "block at %d (%d bytes) is live but nobody knows it: leaked", off, size)
		sum += size
	}
	for off := range expect {
		_, ok := live[off]
		require.True(t, ok, "block at %d is known but not live", off)
	}
	require.Equal(t, h.get(mCapacity)-sum, h.get(mCapacity)-h.get(mInUse), "FreeMemory is exact")
}

func TestSIGKILLDuringAllocatorAndDirectoryChurn(t *testing.T) {
	kills := orShort(240, 40)
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly, WithSize(256<<10))
		const procs = 2
		for id := 1; id <= procs; id++ {
			_, err := s.CreateNamed(fmt.Sprintf("ledger_%d", id), false, NameSpec{Count: ledgerWords, ElemSize: 8, Align: 8}, nil)
			require.NoError(t, err)
		}
		rng := rand.New(rand.NewPCG(7, 7))
		running := map[int]*proctest.Child{}
		var reports []string // what the fresh opens did
		start := func(id int) {
			c := proctest.Start(t, "killchurn", spec, strconv.Itoa(id), strconv.FormatUint(rng.Uint64(), 10))
			c.Expect("ready")
			running[id] = c
		}
		for id := 1; id <= procs; id++ {
			start(id)
		}
		for k := 0; k < kills/2; k++ {
			for id := 1; id <= procs; id++ {
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				running[id].Kill()
				if k%2 == 0 {
					// The survivor notices (lock takeover) while the other child runs.
					verifyKilled(t, s)
				}
				start(id)
			}
			if k%10 == 9 {
				// A fresh open, with one child alive and possibly one just killed.
				running[1].Kill()
				s2, err := Open(b, OpenOnly)
				require.NoError(t, err)
				verifyKilled(t, s2)
				reports = append(reports, s2.RecoveryReport().Actions...)
				require.NoError(t, s2.Close())
				start(1)
			}
		}
		for id := 1; id <= procs; id++ {
			running[id].Kill()
		}
		verifyKilled(t, s)
		require.NoError(t, s.Close())
		s3 := mustOpen(t, b, OpenOnly)
		assert.NotEmpty(t, s3.RecoveryReport().DeadProcesses)
		verifyKilled(t, s3)
		acts := strings.Join(append(append(reports, s.RecoveryReport().Actions...), s3.RecoveryReport().Actions...), "\n")
		journaled := strings.Count(acts, "rolled back an interrupted") - strings.Count(acts, "small-block")
		t.Logf("this process rolled back %d journaled and %d fast-path (small-block) operations", journaled, strings.Count(acts, "small-block"))
		t.Logf("%d kills; report of the last open:\n%s", kills, s3.RecoveryReport())
	})
}
