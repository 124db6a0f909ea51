package mapped

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/internal/journal"
	"github.com/mapstore/mapstore/internal/proctest"
)

func init() {
	// lanekill runs the lane script (laneScript) and kills itself at the
	// point args[1] names; see childLaneKill.
	children["lanekill"] = childLaneKill
}

// The lane fixture: a named object of fxSize bytes, "lanefix", laid out as
//
//	[0, 256)     a byte pattern the script saves, moves and writes over
//	fxVictim     the offset of a live 64-byte block the script frees
//	fxVec        a vector header (block, length 4, capacity 4) whose four
//	             words each hold a live 48-byte block: the script drops it
//	fxStore      a word the script stores into
//	fxNew        a word that gets the block the script allocates
const (
	fxSize   = 512
	fxVictim = 256
	fxVec    = 264
	fxStore  = 288
	fxNew    = 400
	fxMoved  = 64 // the script moves [64, 128) to [96, 160)
	fxWrite  = 200
)

var fxWritten = []byte("written by lane!")

// fxShape is what the vector header at fxVec owns: a block of words,
// each owning a block.
var fxShape = Shape{}.Vector(0, 8, Shape{}.Block(0))

type laneFix struct {
	s    *Segment
	obj  []byte
	orig []byte // obj when the fixture was made
}

func newLaneFix(t *testing.T, s *Segment) *laneFix {
	t.Helper()
	n, err := s.CreateNamed("lanefix", false, NameSpec{Count: fxSize, ElemSize: 1}, func(obj []byte) {
		for i := range obj {
			obj[i] = byte(i*7 + 1)
		}
	})
	require.NoError(t, err)
	f := &laneFix{s: s, obj: n.Obj}
	victim, err := s.Allocate(64)
	require.NoError(t, err)
	f.put(fxVictim, f.offOf(victim))
	vec, err := s.Allocate(32)
	require.NoError(t, err)
	for i := range 4 {
		b, err := s.Allocate(48)
		require.NoError(t, err)
		binary.LittleEndian.PutUint64(vec[8*i:], f.offOf(b))
	}
	f.put(fxVec, f.offOf(vec))
	f.put(fxVec+8, 4)
	f.put(fxVec+16, 4)
	f.put(fxStore, 0)
	f.put(fxNew, 0)
	f.orig = bytes.Clone(f.obj)
	return f
}

// findLaneFix finds the fixture in another process's open of the segment.
func findLaneFix(s *Segment) (*laneFix, error) {
	n, err := s.LookupNamed("lanefix", false)
	if err != nil {
		return nil, err
	}
	return &laneFix{s: s, obj: n.Obj}, nil
}

func (f *laneFix) offOf(b []byte) uint64 {
	return uint64(uintptr(unsafe.Pointer(&b[0])) - uintptr(f.s.h.base))
}
func (f *laneFix) word(i int) uint64       { return binary.LittleEndian.Uint64(f.obj[i:]) }
func (f *laneFix) put(i int, v uint64)     { binary.LittleEndian.PutUint64(f.obj[i:], v) }
func (f *laneFix) at(i int) unsafe.Pointer { return unsafe.Pointer(&f.obj[i]) }

// laneScript runs, in l, one entry of every kind, each with the change it
// covers, calling stop(k) after the k-th (1-based) entry is recorded:
//
//	1 Save [0,64), then overwrite it with 0xEE
//	2 Save the fxNew word
//	3 Allocate 100 bytes (filled with 0xAB), its offset stored at fxNew
//	4 Free the victim block
//	5 Store 0x1234 at fxStore
//	6 Move [64,128) to [96,160)
//	7 Write fxWritten at fxWrite
//	8 Drop the vector at fxVec
func (f *laneFix) laneScript(l *Lane, stop func(k int)) error {
	if err := l.Save(f.at(0), 64); err != nil {
		return err
	}
	for i := range 64 {
		f.obj[i] = 0xEE
	}
	stop(1)
	if err := l.Save(f.at(fxNew), 8); err != nil {
		return err
	}
	stop(2)
	b, err := l.Allocate(100)
	if err != nil {
		return err
	}
	for i := range b {
		b[i] = 0xAB
	}
	f.put(fxNew, f.offOf(b))
	stop(3)
	if err := l.Free(unsafe.Add(f.s.h.base, f.word(fxVictim))); err != nil {
		return err
	}
	stop(4)
	if err := l.Store((*uint64)(f.at(fxStore)), 0x1234); err != nil {
		return err
	}
	stop(5)
	if err := l.Move(f.at(fxMoved+32), f.at(fxMoved), 64); err != nil {
		return err
	}
	stop(6)
	if err := l.Write(f.at(fxWrite), fxWritten); err != nil {
		return err
	}
	stop(7)
	if err := l.Drop(f.at(fxVec), 1, 24, fxShape); err != nil {
		return err
	}
	stop(8)
	return nil
}

// committed is obj as the script leaves it once its lane commits (new is
// the block it allocated).
func (f *laneFix) committed(new uint64) []byte {
	want := bytes.Clone(f.orig)
	for i := range 64 {
		want[i] = 0xEE
	}
	copy(want[fxMoved+32:fxMoved+96], f.orig[fxMoved:fxMoved+64])
	copy(want[fxWrite:], fxWritten)
	binary.LittleEndian.PutUint64(want[fxNew:], new)
	binary.LittleEndian.PutUint64(want[fxStore:], 0x1234)
	binary.LittleEndian.PutUint64(want[fxVec:], 0) // the drop zeroes the owning word
	return want
}

// freeWordAt frees the block whose offset the fixture word at i holds.
func (f *laneFix) freeWordAt(t *testing.T, i int) {
	t.Helper()
	require.NoError(t, f.s.freeWord(uintptr(f.offOf(f.obj[i:])), 0, false))
}

// checkRolledBack checks that obj is as before the script and that every
// block of the fixture is live (and nothing else), by freeing them all
// and the name: then no memory is in use.
func (f *laneFix) checkRolledBack(t *testing.T) {
	t.Helper()
	require.Equal(t, f.orig, f.obj, "every saved byte restored, no redo entry run")
	require.NoError(t, f.s.CheckSanity())
	vec := f.word(fxVec)
	for i := range 4 {
		require.NoError(t, f.s.freeWord(uintptr(vec)+uintptr(8*i), 0, false), "the vector's block %d is live", i)
	}
	f.freeWordAt(t, fxVec)
	f.freeWordAt(t, fxVictim)
	require.NoError(t, f.s.RemoveNamed("lanefix", false, nil))
	assert.True(t, f.s.AllMemoryDeallocated(), "the lane's allocation was freed, nothing else was")
	require.NoError(t, f.s.CheckSanity())
}

// checkCommitted checks that obj is as the committed script leaves it,
// that its allocation is live and that the blocks it freed are gone.
func (f *laneFix) checkCommitted(t *testing.T) {
	t.Helper()
	new := f.word(fxNew)
	require.NotZero(t, new, "the allocation stands")
	require.Equal(t, f.committed(new), f.obj, "the saved changes stand and every redo entry ran")
	require.NoError(t, f.s.CheckSanity())
	b := unsafe.Slice((*byte)(unsafe.Add(f.s.h.base, new)), 100)
	assert.Equal(t, bytes.Repeat([]byte{0xAB}, 100), b, "the allocated block holds what was written")
	f.freeWordAt(t, fxNew)
	require.NoError(t, f.s.RemoveNamed("lanefix", false, nil))
	assert.True(t, f.s.AllMemoryDeallocated(), "the victim and the vector's blocks were freed, the new block was not")
	require.NoError(t, f.s.CheckSanity())
}

func TestLaneAbortRestoresExactly(t *testing.T) {
	s := newShmSeg(t)
	f := newLaneFix(t, s)
	l, err := s.BeginLane()
	require.NoError(t, err)
	require.NoError(t, f.laneScript(&l, func(int) {}))
	assert.NotEqual(t, f.orig, f.obj)
	l.Abort()
	f.checkRolledBack(t)
}

func TestLaneCommitAppliesEverything(t *testing.T) {
	s := newShmSeg(t)
	f := newLaneFix(t, s)
	l, err := s.BeginLane()
	require.NoError(t, err)
	require.NoError(t, f.laneScript(&l, func(int) {}))
	// Before the commit, the redo entries have not run.
	assert.Zero(t, f.word(fxStore))
	assert.Equal(t, f.orig[fxWrite:fxWrite+len(fxWritten)], f.obj[fxWrite:fxWrite+len(fxWritten)])
	assert.NotZero(t, f.word(fxVec))
	require.NoError(t, l.Commit())
	f.checkCommitted(t)
	// The lane is free again.
	for i := range s.h.geo.nLanes {
		assert.Zero(t, s.h.get(mLaneOwners+uintptr(i)*8), "lane %d owner", i)
		assert.Zero(t, s.h.get(s.h.geo.lanes+uintptr(i)*laneBytes), "lane %d state", i)
	}
}

// A move whose source and destination overlap, either way, moves as
// copy does.
func TestLaneMoveOverlapping(t *testing.T) {
	s := newShmSeg(t)
	blk, err := s.Allocate(64 << 10)
	require.NoError(t, err)
	for _, c := range []struct{ dst, src, n int }{{100, 0, 5000}, {0, 100, 5000}, {8, 0, 60000}, {0, 8, 60000}, {300, 300, 10}} {
		for i := range blk {
			blk[i] = byte(i * 13)
		}
		want := bytes.Clone(blk)
		copy(want[c.dst:c.dst+c.n], want[c.src:c.src+c.n])
		l, err := s.BeginLane()
		require.NoError(t, err)
		require.NoError(t, l.Move(unsafe.Pointer(&blk[c.dst]), unsafe.Pointer(&blk[c.src]), c.n))
		require.NoError(t, l.Commit())
		require.True(t, bytes.Equal(want, blk), "move %+v", c)
	}
}

func TestLaneFull(t *testing.T) {
	s := newShmSeg(t)
	f := newLaneFix(t, s)
	l, err := s.BeginLane()
	require.NoError(t, err)
	saved := 0
	for ; ; saved += 32 {
		err := l.Save(f.at(saved%256), 32)
		if err != nil {
			require.ErrorIs(t, err, ErrLaneFull)
			break
		}
		for i := range 32 {
			f.obj[saved%256+i] ^= 0xFF
		}
		require.Less(t, saved, laneLog, "a lane holds at most laneLog bytes")
	}
	assert.Greater(t, saved, laneLog/2, "most of the lane's record was usable")
	require.ErrorIs(t, l.Write(f.at(0), make([]byte, laneLog)), ErrLaneFull)
	// Fill what is left with the smallest entries (16 bytes): then an
	// Allocate has no room for its entry, and allocates nothing.
	for l.Free(unsafe.Add(s.h.base, f.word(fxVictim))) == nil {
	}
	inUse := s.h.get(mInUse)
	_, err = l.Allocate(64)
	assert.ErrorIs(t, err, ErrLaneFull)
	assert.Equal(t, inUse, s.h.get(mInUse), "an Allocate with no room in the lane allocates nothing")
	l.Abort()
	f.checkRolledBack(t)
}

// A Lane used after Commit or Abort, or never begun, panics with a message
// that says so, whichever method is called.
func TestLaneUsedAfterEndPanics(t *testing.T) {
	s := newShmSeg(t)
	f := newLaneFix(t, s)
	const msg = "mapstore: a Lane used after Commit or Abort, or never begun"
	ended := map[string]func() Lane{
		"committed": func() Lane {
			l, err := s.BeginLane()
			require.NoError(t, err)
			require.NoError(t, l.Commit())
			return l
		},
		"aborted": func() Lane {
			l, err := s.BeginLane()
			require.NoError(t, err)
			l.Abort()
			return l
		},
		"zero": func() Lane { return Lane{} },
	}
	for how, mk := range ended {
		calls := map[string]func(l *Lane){
			"Save":     func(l *Lane) { _ = l.Save(f.at(0), 8) },
			"Allocate": func(l *Lane) { _, _ = l.Allocate(64) },
			"Free":     func(l *Lane) { _ = l.Free(unsafe.Add(s.h.base, f.word(fxVictim))) },
			"Store":    func(l *Lane) { _ = l.Store((*uint64)(f.at(fxStore)), 1) },
			"Move":     func(l *Lane) { _ = l.Move(f.at(8), f.at(0), 8) },
			"Write":    func(l *Lane) { _ = l.Write(f.at(0), []byte("x")) },
			"Drop":     func(l *Lane) { _ = l.Drop(f.at(fxVec), 1, 24, fxShape) },
			"Commit":   func(l *Lane) { _ = l.Commit() },
		}
		for name, call := range calls {
			l := mk()
			assert.PanicsWithValue(t, msg, func() { call(&l) }, "%s after the lane was %s", name, how)
		}
		l := mk()
		assert.NotPanics(t, func() { l.Abort() }, "Abort after the lane was %s", how)
	}
	f.checkRolledBack(t)
}

// Lane.Begin claims into a Lane of the caller's, as BeginLane does; a
// Lane ended by Commit or Abort begins again; one in use panics, and is
// left as it was.
func TestLaneBeginInto(t *testing.T) {
	b, _ := newShm(t)
	s := mustOpen(t, b, CreateOnly)
	f := newLaneFix(t, s)
	var l Lane
	for round := range 3 {
		require.NoError(t, l.Begin(s))
		require.NoError(t, l.Save(f.at(0), 8))
		*(*uint64)(f.at(0)) = uint64(round + 1)
		if round == 1 {
			assert.PanicsWithValue(t, "mapstore: Lane.Begin on a Lane in use", func() { _ = l.Begin(s) })
			assert.Equal(t, uint64(8+16), l.n, "the Lane in use keeps its record")
			l.Abort()
			assert.Equal(t, uint64(1), *(*uint64)(f.at(0)), "the abort put the word back")
			continue
		}
		require.NoError(t, l.Commit())
	}
	assert.Equal(t, uint64(3), *(*uint64)(f.at(0)))
	assert.False(t, s.lanesInFlight())
	ro := mustOpen(t, b, OpenReadOnly)
	var r Lane
	assert.ErrorIs(t, r.Begin(ro), ErrReadOnly)
}

// Lanes taken by live owners are not recovered by an Open.
func TestLaneOfLiveOwnerIsLeftAlone(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly)
		f := newLaneFix(t, s)
		l, err := s.BeginLane()
		require.NoError(t, err)
		require.NoError(t, f.laneScript(&l, func(int) {}))
		s2 := mustOpen(t, b, OpenOnly)
		assert.NotContains(t, strings.Join(s2.RecoveryReport().Actions, "\n"), "lane")
		assert.Equal(t, byte(0xEE), f.obj[0], "the live owner's changes stay")
		require.NoError(t, l.Commit())
		f.checkCommitted(t)
	})
}

// childLaneKill: args spec how arg. It finds the fixture and
//
//	stop K       runs the script and kills itself after its K-th entry
//	stoplock K   the same, holding the segment lock when it dies
//	redo K       runs the script, commits, and kills itself before the
//	             redo entry of index K
//	redolock K   the same, holding the segment lock when it dies
//	recover K    opens the segment (which recovers lanes of dead owners)
//	             and kills itself before the recovery's entry of index K
//	claimall     claims every lane, each saving and changing a word of
//	             the fixture, and kills itself
//
// It says "survived" and exits 1 if it got to the end alive.
func childLaneKill(args []string) int {
	how := args[1]
	k := -1
	if len(args) > 2 {
		k, _ = strconv.Atoi(args[2])
	}
	var seg *Segment
	die := func() {
		if strings.HasSuffix(how, "lock") {
			childLock(seg)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	if how == "recover" {
		laneStepHook = func(_ bool, i int, _ uint64) {
			if i == k {
				die()
			}
		}
	}
	seg = childOpen(args[0])
	f, err := findLaneFix(seg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	switch how {
	case "stop", "stoplock", "redo", "redolock":
		l, err := seg.BeginLane()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		stop := func(i int) {
			if i == k && strings.HasPrefix(how, "stop") {
				die()
			}
		}
		if err := f.laneScript(&l, stop); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		laneStepHook = func(redo bool, i int, _ uint64) {
			if redo && i == k {
				die()
			}
		}
		if err := l.Commit(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	case "claimall":
		for i := range seg.h.geo.nLanes {
			l, err := seg.BeginLane()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			if err := l.Save(f.at(8*i), 8); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			f.put(8*i, ^f.word(8*i))
		}
		die()
	}
	fmt.Println("survived")
	return 1
}

// runLaneKill runs childLaneKill and requires it to have killed itself.
func runLaneKill(t *testing.T, spec string, args ...string) {
	t.Helper()
	runLaneKill2(t, "lanekill", spec, args...)
}

// runLaneKill2 runs child name and requires it to have killed itself.
func runLaneKill2(t *testing.T, name, spec string, args ...string) {
	t.Helper()
	c := proctest.Start(t, name, append([]string{spec}, args...)...)
	require.Equal(t, -1, c.Wait(), "the child killed itself; stderr: %s", c.Stderr())
}

// laneActions is what the recovery report of s says about lanes.
func laneActions(s *Segment) string {
	var out []string
	for _, a := range s.RecoveryReport().Actions {
		if strings.Contains(a, "lane") {
			out = append(out, a)
		}
	}
	return strings.Join(out, "\n")
}

// A process killed after any number of entries of its lane, before the
// commit, is rolled back by the next Open: every saved byte back, the
// block it allocated freed, none of its frees, stores, moves, writes or
// drops done.
func TestLaneKilledBeforeCommitIsRolledBackAtOpen(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		for _, k := range []int{1, 3, 8} {
			s, err := Open(b, OpenOrCreate)
			require.NoError(t, err)
			f := newLaneFix(t, s)
			require.NoError(t, s.Close())
			runLaneKill(t, spec, "stop", strconv.Itoa(k))
			s, err = Open(b, OpenOnly)
			require.NoError(t, err)
			assert.Contains(t, laneActions(s), "rolled back the operation of lane", "killed after entry %d", k)
			f2, err := findLaneFix(s)
			require.NoError(t, err)
			f2.orig = f.orig
			f2.checkRolledBack(t)
			require.NoError(t, s.Close())
		}
	})
}

// A process killed after its lane's commit, before any redo entry or in
// the middle of them, has its operation finished by the next Open.
func TestLaneKilledAfterCommitIsFinishedAtOpen(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		for _, k := range []int{0, 3, 5, 7} { // entries 0-2 are undo entries: 3 is the first free
			s, err := Open(b, OpenOrCreate)
			require.NoError(t, err)
			f := newLaneFix(t, s)
			require.NoError(t, s.Close())
			runLaneKill(t, spec, "redo", strconv.Itoa(k))
			s, err = Open(b, OpenOnly)
			require.NoError(t, err)
			assert.Contains(t, laneActions(s), "finished the committed operation of lane", "killed before redo entry %d", k)
			f2, err := findLaneFix(s)
			require.NoError(t, err)
			f2.orig = f.orig
			f2.checkCommitted(t)
			require.NoError(t, s.Close())
		}
	})
}

// A recovery killed part way (the recovering process dies holding the
// segment lock) is recovered again by the next Open, to the same end:
// undo and redo are idempotent.
func TestLaneRecoveryKilledIsRecoveredAgain(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		cases := []struct {
			first []string // how the operation dies
			k     int      // the recovery's entry before which it dies
			done  bool     // the operation was committed: recovery finishes it
		}{
			{[]string{"stop", "8"}, 1, false}, // the allocation freed, the saves not yet restored
			{[]string{"stop", "8"}, 0, false}, // all but the first save undone
			{[]string{"redo", "3"}, 6, true},  // free, store and move redone, write and drop not
			{[]string{"redo", "4"}, 7, true},  // all but the drop
		}
		for _, c := range cases {
			s, err := Open(b, OpenOrCreate)
			require.NoError(t, err)
			f := newLaneFix(t, s)
			require.NoError(t, s.Close())
			runLaneKill(t, spec, c.first...)
			runLaneKill(t, spec, "recover", strconv.Itoa(c.k))
			s, err = Open(b, OpenOnly)
			require.NoError(t, err)
			f2, err := findLaneFix(s)
			require.NoError(t, err)
			f2.orig = f.orig
			if c.done {
				assert.Contains(t, laneActions(s), "finished the committed operation of lane", "%v", c)
				f2.checkCommitted(t)
			} else {
				assert.Contains(t, laneActions(s), "rolled back the operation of lane", "%v", c)
				f2.checkRolledBack(t)
			}
			require.NoError(t, s.Close())
		}
	})
}

// A process that dies holding the segment lock and a lane is found by a
// survivor's next operation (a lock takeover), which recovers the lane
// too, before or after its commit.
func TestLaneOfDeadLockOwnerIsRecoveredByTakeover(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly)
		for _, args := range [][]string{{"stoplock", "8"}, {"redolock", "5"}} {
			f := newLaneFix(t, s)
			before := len(s.RecoveryReport().Actions)
			runLaneKill(t, spec, args...)
			blk, err := s.Allocate(5000) // a large block: waits for the lock, finds its owner dead
			require.NoError(t, err)
			require.NoError(t, s.Deallocate(blk))
			actions := strings.Join(s.RecoveryReport().Actions[before:], "\n")
			if args[0] == "stoplock" {
				assert.Contains(t, actions, "rolled back the operation of lane", args)
				f.checkRolledBack(t)
			} else {
				assert.Contains(t, actions, "finished the committed operation of lane", args)
				f.checkCommitted(t)
			}
		}
	})
}

// Lanes all taken by a process that died: a survivor's BeginLane finds
// them, recovers them and claims one.
func TestLanesAllTakenByDeadProcessAreRecoveredByBeginLane(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly)
		f := newLaneFix(t, s)
		runLaneKill(t, spec, "claimall")
		n := s.h.geo.nLanes
		for i := range n {
			require.NotZero(t, s.h.get(mLaneOwners+uintptr(i)*8), "lane %d is claimed by the dead child", i)
		}
		require.NotEqual(t, f.orig[:8*n], f.obj[:8*n])
		l, err := s.BeginLane()
		require.NoError(t, err)
		assert.Equal(t, n, strings.Count(laneActions(s), "rolled back the operation of lane"))
		assert.Equal(t, f.orig, f.obj, "each dead lane's word restored")
		l.Abort()
		f.checkRolledBack(t)
	})
}

func init() {
	// lanefast: args spec alloc|free. It begins a lane and, holding the
	// segment lock, half-does the small-block fast path of the lane's
	// allocation (alloc) or of its committed free of the fixture's victim
	// (free), whose reference word is the lane entry's, then dies.
	children["lanefast"] = childLaneFast
}

func childLaneFast(args []string) int {
	seg := childOpen(args[0])
	f, err := findLaneFix(seg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	l, err := seg.BeginLane()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	h := seg.h
	c := classOf[64/16]
	if args[1] == "alloc" {
		// Lane.Allocate's entry, published; then allocFast cut short after
		// its intent, the bit and the reference word.
		e, _ := l.entry(laneAlloc, 0, 2)
		*h.w(e + 8) = 0
		l.publish(e, 0, 2)
		childLock(seg)
		run := h.get(mClasses + uintptr(c)*8)
		bm := h.w(uintptr(run << pageShift))
		b := uint64(bits.TrailingZeros64(^*bm))
		h.intend(fastAlloc, run, b, e+8)
		*bm |= 1 << b
		*h.w(e + 8) = run<<pageShift + classes[c].start + b*64
	} else {
		// A committed free of the victim; its redo's freeFast cut short
		// after its intent and the bit.
		if err := l.Free(unsafe.Add(h.base, f.word(fxVictim))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		journal.StoreOrdered(l.state(), l.n|laneCommitted)
		e := l.off + 8
		off := *h.w(e + 8)
		childLock(seg)
		page := off >> pageShift
		cell, _ := classes[c].cellOf(off - page<<pageShift)
		h.intend(0, page, cell, e+8)
		*h.w(uintptr(page<<pageShift + cell/64*8)) &^= 1 << (cell % 64)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// A process killed inside the small-block fast path of a lane's
// allocation or free, whose reference word is in the lane's record, is
// recovered by the next Open: the fast path's intent is rolled back,
// then the lane (rolled back before the commit, finished after it).
func TestLaneFastPathKilledIsRecovered(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		for _, how := range []string{"alloc", "free"} {
			s, err := Open(b, OpenOrCreate)
			require.NoError(t, err)
			f := newLaneFix(t, s)
			require.NoError(t, s.Close())
			runLaneKill2(t, "lanefast", spec, how)
			s, err = Open(b, OpenOnly)
			require.NoError(t, err, how)
			actions := laneActions(s) + "\n" + strings.Join(s.RecoveryReport().Actions, "\n")
			assert.Contains(t, actions, "rolled back an interrupted small-block", how)
			f2, err := findLaneFix(s)
			require.NoError(t, err)
			f2.orig = f.orig
			if how == "alloc" {
				assert.Contains(t, actions, "rolled back the operation of lane", how)
				f2.checkRolledBack(t)
			} else {
				assert.Contains(t, actions, "finished the committed operation of lane", how)
				require.Equal(t, f.orig, f2.obj)
				require.NoError(t, s.CheckSanity())
				vec := f2.word(fxVec)
				for i := range 4 {
					require.NoError(t, s.freeWord(uintptr(vec)+uintptr(8*i), 0, false))
				}
				f2.freeWordAt(t, fxVec)
				require.NoError(t, s.RemoveNamed("lanefix", false, nil))
				assert.True(t, s.AllMemoryDeallocated(), "the victim was freed once")
			}
			require.NoError(t, s.Close())
		}
	})
}

// A survivor that stays attached repairs a dead process's lane without an
// Open: at once with Recover, or with its next lane claim once
// foreignCheck has passed since it last looked.
func TestSurvivorRecoversDeadLanes(t *testing.T) {
	forKinds(t, func(t *testing.T, b backing.Backing, spec string) {
		s := mustOpen(t, b, CreateOnly)

		f := newLaneFix(t, s)
		runLaneKill(t, spec, "stop", "8")
		require.NotEqual(t, f.orig, f.obj, "the child changed the fixture and died in its lane")
		require.NoError(t, s.Recover())
		assert.Contains(t, laneActions(s), "rolled back the operation of lane")
		f.checkRolledBack(t)

		f = newLaneFix(t, s)
		runLaneKill(t, spec, "redo", "3")
		before := len(s.RecoveryReport().Actions)
		s.lanesChecked.Store(0) // as if it last looked long ago
		l, err := s.BeginLane()
		require.NoError(t, err)
		l.Abort()
		assert.Contains(t, strings.Join(s.RecoveryReport().Actions[before:], "\n"), "finished the committed operation of lane")
		f.checkCommitted(t)
	})
}

// A lane never ended (its caller panicked without Abort) does not hold
// Close for ever: Close gives up waiting, and the next Open rolls it back
// as the lane of a process that is gone.
func TestCloseDoesNotWaitForAnAbandonedLane(t *testing.T) {
	b, _ := newFile(t)
	s := mustOpen(t, b, CreateOnly)
	f := newLaneFix(t, s)
	l, err := s.BeginLane()
	require.NoError(t, err)
	require.NoError(t, l.Save(f.at(0), 8))
	f.put(0, ^f.word(0))
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		// The segment is not marked closed, and Close says why.
		require.ErrorContains(t, err, "left attached for recovery: lane 0 is claimed")
	case <-time.After(30 * time.Second):
		t.Fatal("Close waited for a lane that never ends")
	}
	s2 := mustOpen(t, b, OpenOnly)
	assert.Contains(t, laneActions(s2), "rolled back the operation of lane")
	f2, err := findLaneFix(s2)
	require.NoError(t, err)
	assert.Equal(t, f.orig[:8], f2.obj[:8], "the abandoned lane's change was undone")
}

// A panic in the middle of a commit's redo: the deferred Abort must not
// undo a call that stands; the lane is left to recovery, which the next
// Open (after this open is closed) finishes.
func TestAbortAfterCommitLeavesTheLaneToRecovery(t *testing.T) {
	b, _ := newFile(t)
	s := mustOpen(t, b, CreateOnly)
	f := newLaneFix(t, s)
	laneStepHook = func(redo bool, k int, _ uint64) {
		if redo && k == 3 {
			panic("cut short in the redo")
		}
	}
	defer func() { laneStepHook = nil }()
	func() {
		defer func() { assert.Equal(t, "cut short in the redo", recover()) }()
		l, err := s.BeginLane()
		require.NoError(t, err)
		defer l.Abort()
		require.NoError(t, f.laneScript(&l, func(int) {}))
		_ = l.Commit()
	}()
	laneStepHook = nil
	require.Error(t, s.Close(), "the lane left to recovery keeps the segment from being marked closed")
	s2 := mustOpen(t, b, OpenOnly)
	assert.Contains(t, laneActions(s2), "finished the committed operation of lane")
	f2, err := findLaneFix(s2)
	require.NoError(t, err)
	f2.orig = f.orig
	f2.checkCommitted(t)
}
