package mapped

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mapstore/mapstore/internal/envelope"
	"github.com/mapstore/mapstore/internal/journal"
	"github.com/mapstore/mapstore/recovery"
)

func newHeap(e *envelope.Envelope) *heap {
	base := e.Base()
	g := geometryOf(atomic.LoadUint64((*uint64)(unsafe.Add(base, mGeometry))))
	return &heap{
		base:  base,
		geo:   g,
		j:     journal.At(base, g.journal, g.journalLen),
		fixed: e.Flags()&envelope.FlagFixedSize != 0,
		grow:  e.Grow,
		size:  e.Size,
		max:   e.MaxSize(),
		ckey:  cacheKey(e.UUID()),
	}
}

// initManager lays out the manager in a new segment (envelope.Params.Init).
func initManager(e *envelope.Envelope) error {
	newHeap(e).format(e.Size())
	return e.SetRootsLocked(func(r *[envelope.NumRoots]uint64) { r[rootManager] = mgrOff })
}

// checkManager refuses, before an open changes anything, a segment whose
// manager this build cannot read, or whose manager's fields do not fit
// the segment (envelope.Params.Check). A segment closed cleanly that
// nobody holds must have nothing half done.
func checkManager(e *envelope.Envelope, _ envelope.Header) error {
	h := newHeap(e)
	if !e.Idle() {
		// Processes may be attached, in the middle of operations: read the
		// fixed fields between them. The words validateWords reads are
		// checked by recovery once it knows nobody is (recoverManager).
		return h.validateStable(e.Size)
	}
	if err := h.validate(e.Size); err != nil {
		return err
	}
	// The segment lock may still be held: a process that only read under
	// it changes nothing, so its open never marked the segment in use, and
	// a power loss can leave the page with the lock word on the disk
	// without the page of its seat. A writable open releases such a lock
	// (seatClaimed); nothing else may be half done.
	if err := quietExceptLock(e.Mem()); err != nil {
		return fmt.Errorf("closed cleanly, yet %w", corrupt("%v", err))
	}
	return h.validateWords()
}

// validate checks the manager's format and fixed fields (the descriptor
// table and the pages it covers) against the segment's size, so that no
// access through the table can leave the mapped, backed range. It reads
// a few words: cheap enough for every open.
//
// sizeOf gives the segment's size; it is called after the table's words
// are read, so that a growth published meanwhile (the size first, the
// table after) cannot make a size older than the table.
func (h *heap) validate(sizeOf func() int64) error {
	if m := h.get(mMagic); m != mgrMagic {
		if m&(1<<48-1) == mgrMagic&(1<<48-1) {
			// "MSHEAP" and two other digits: another build's format.
			var got, ours [8]byte
			binary.LittleEndian.PutUint64(got[:], m)
			binary.LittleEndian.PutUint64(ours[:], mgrMagic)
			return fmt.Errorf("segment manager format %q, this build reads %q: %w", got[6:], ours[6:], ErrVersion)
		}
		return &envelope.Fatal{Err: fmt.Errorf("no segment manager at offset %d: %w", mgrOff, ErrCorrupt)}
	}
	if g := h.get(mGeometry); g >= uint64(len(geometries)) {
		return &envelope.Fatal{Err: corrupt("segment manager geometry %d is not one this build knows", g)}
	}
	t, tcap, managed := atomic.LoadUint64(h.w(mTable)), atomic.LoadUint64(h.w(mTableCap)), atomic.LoadUint64(h.w(mManaged))
	size := sizeOf()
	inArea := h.geo.table0 != 0 && t == h.geo.table0 && tcap == h.geo.tcap0
	switch {
	case !inArea && (t < h.geo.lo || t%pageSize != 0 || tcap%256 != 0) || tcap > uint64(size) || t+tcap*descLen > uint64(size):
		return corrupt("descriptor table at %d for %d pages does not fit the segment's %d bytes", t, tcap, size)
	case managed > tcap || managed<<pageShift > uint64(size) || managed < h.geo.lo>>pageShift:
		return corrupt("manager covers %d pages, the segment has %d and the table %d", managed, size>>pageShift, tcap)
	}
	return nil
}

// validateStable is validate for a segment other processes may be
// changing: the descriptor table moves under the segment lock (incorporate)
// and a read without it can see its words half changed. A pass stands (the
// words it read were each valid, and operations read them under the lock);
// a failure is confirmed by reading as an optimistic reader does, between
// writers' operations, checking the lock word did not change meanwhile. It
// waits (a millisecond or so) while a writer holds the lock, and takes the
// failure as it is once it has waited 20 ms (a writer that died holding
// the lock changes nothing more).
func (h *heap) validateStable(size func() int64) error {
	err := h.validate(size)
	if err == nil {
		return nil
	}
	w := lockWord(h)
	for try := 0; ; try++ {
		v := atomic.LoadUint64(w)
		if v&lockOwnerMask != 0 && try < 200 {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		err := h.validate(size)
		if err == nil || try >= 200 || atomic.LoadUint64(w)&^lockWaiters == v&^lockWaiters {
			return err
		}
	}
}

// validateWords checks the words every operation starts from (counters,
// list heads, the name index, the fast-path intent record) against the
// managed pages. They change under the segment lock, so it runs only when
// no process can be in the middle of an operation: on a segment closed
// cleanly, or in recovery when nobody alive holds it.
func (h *heap) validateWords() error {
	managed := h.managed()
	if h.get(mCapacity) > managed*pageSize || h.get(mInUse) > h.get(mCapacity) {
		return corrupt("capacity %d and in-use %d bytes do not fit %d managed pages", h.get(mCapacity), h.get(mInUse), managed)
	}
	mask := h.get(mBinMask)
	for b := uint64(0); b < numBins; b++ {
		if head := h.get(binHead(b)); head >= managed || (head != 0) != (mask&(1<<b) != 0) {
			return corrupt("free-span bin %d: head page %d (of %d managed), mask bit %v", b, head, managed, mask&(1<<b) != 0)
		}
	}
	for c := range uint64(len(classes)) {
		if head := h.get(classHead(c)); head >= managed {
			return corrupt("size class %d: head page %d, beyond the %d managed", classes[c].size, head, managed)
		}
	}
	dt, groups, err := h.dirTable()
	if err != nil {
		return err
	}
	if count, tombs := h.get(mDirCount), h.get(mDirTombs); (dt == 0 && count|tombs != 0) || count+tombs > groups*groupSlots {
		return corrupt("name directory counts %d names and %d tombstones for an index of %d groups", count, tombs, groups)
	}
	if h.geo == &geometries[0] {
		for seat := range envelope.MaxSeats {
			if m := h.get(mCaches + uintptr(8*seat)); m != 0 && (m < h.geo.lo || m%pageSize != 0 || m>>pageShift >= managed) {
				return corrupt("block cache word of seat %d names offset %d, not a page of the managed memory", seat, m)
			}
		}
	}
	if v := h.get(mFast); v&fastUnused != 0 {
		return corrupt("fast-path intent record %#x has bits set that no record uses", v)
	}
	return h.validateLanes()
}

func lockWord(h *heap) *uint64 { return h.w(mLock) }

// rollBack replays the journal of an operation a dead process left in
// flight and says so in rep.
func (h *heap) rollBack(size int64, who string, add func(string, ...any)) error {
	alloc, was, err := h.rollBackFast(size)
	if err != nil {
		return err
	}
	if was {
		what := "deallocation"
		if alloc {
			what = "allocation"
		}
		add("rolled back an interrupted small-block %s of %s", what, who)
	}
	op, n, err := h.j.Replay(mgrOff, uintptr(size))
	if err != nil {
		return err
	}
	if op != 0 {
		name := opNames[op]
		if name == "" {
			name = fmt.Sprintf("operation %d", op)
		}
		add("rolled back an interrupted %s of %s (%d words restored)", name, who, n)
	}
	return nil
}

// recoverManager runs under the meta lock when an open found dead
// processes (envelope.Params.Recover): if one of them held the segment
// lock, its operation is rolled back and the lock released. After an
// unclean shutdown the whole manager is checked.
func recoverManager(e *envelope.Envelope, rep *recovery.Report) error {
	h := newHeap(e)
	if err := h.validateStable(e.Size); err != nil {
		return err
	}
	w := lockWord(h)
	v := atomic.LoadUint64(w)
	owner := int(v&lockOwnerMask) - 1
	dead := false
	if owner >= 0 {
		alive, err := e.SeatAlive(owner)
		if err != nil {
			return err
		}
		dead = !alive
	}
	// A live process may take the lock and begin an operation at any
	// moment: the journal is only ours to read and replay when its owner
	// is dead, or when nobody is alive at all.
	if !dead && (owner >= 0 || !rep.UncleanShutdown) {
		return nil
	}
	op, _, err := h.j.Pending()
	if err != nil {
		return err
	}
	if dead || op != 0 || h.fastPending() {
		who := "a process"
		if owner >= 0 {
			who = fmt.Sprintf("process %d (seat %d)", e.SeatPID(owner), owner)
		}
		if err := h.rollBack(e.Size(), who, rep.Addf); err != nil {
			return err
		}
		if dead {
			releaseStale(w, v)
			rep.Addf("released the segment lock held by %s", who)
		}
	}
	if rep.UncleanShutdown {
		if err := h.checkSanity(e.Size()); err != nil {
			return err
		}
		rep.Addf("checked the allocator and the name directory: consistent")
	}
	return nil
}

// releaseStale releases the lock word at w, which holds v and names an
// owner that is gone, and wakes every sleeper.
func releaseStale(w *uint64, v uint64) {
	if atomic.CompareAndSwapUint64(w, v, v&^0xff+lockSeqOne) {
		futexWake((*uint32)(unsafe.Pointer(w)), 1<<30)
	}
}

// seatClaimed is recovery.Params.Claimed: this open just took seat, under
// the meta lock. A segment lock that names the seat, or a seat that is
// free, is stale (its earlier occupant is gone without releasing it, and a
// dead occupant's operation was rolled back when its seat was reaped; a
// seat is marked attached before its process takes the lock and freed
// after it lets go): release it, so that this process never waits on a
// lock it does not hold and believes alive.
func seatClaimed(e *envelope.Envelope, seat int, rep *recovery.Report) error {
	h := newHeap(e)
	w := lockWord(h)
	v := atomic.LoadUint64(w)
	owner := int(v&lockOwnerMask) - 1
	if owner < 0 {
		return nil
	}
	if owner != seat {
		if alive, err := e.SeatAlive(owner); err != nil || alive {
			return err
		}
	}
	who := fmt.Sprintf("an earlier occupant of seat %d", owner)
	if err := h.rollBack(e.Size(), who, rep.Addf); err != nil {
		return err
	}
	releaseStale(w, v)
	rep.Addf("released the segment lock left held by %s", who)
	return nil
}

// attachManager sets up this open's view of the manager.
func (s *Segment) attachManager() error {
	e := s.env
	roots := e.Found().Roots
	if roots[rootManager] != mgrOff {
		return fmt.Errorf("%s: root %d is %d, not the manager's offset %d: %w", s.b.Name(), rootManager, roots[rootManager], mgrOff, ErrCorrupt)
	}
	h := newHeap(e)
	damage := e.Damage()
	if damage == nil {
		damage = h.validateStable(e.Size)
	}
	if damage != nil {
		if s.mode != OpenReadOnly {
			return fmt.Errorf("%s: %w", s.b.Name(), damage)
		}
		// Opened for inspection: every call that would walk the segment's
		// structures says what is wrong instead.
		s.noteCorrupt(damage)
	}
	u := e.UUID()
	s.tag = uint64(u[0]) | uint64(u[1])<<8 | uint64(u[2])<<16
	if s.tag == 0 {
		s.tag = 1
	}
	s.h = h
	s.lo = h.geo.lo
	if s.mode != OpenReadOnly && s.mode != OpenCopyOnWrite {
		h.fresh = s.freshPages // a private copy's prefault would copy the pages
	}
	if seat := e.Seat(); seat >= 0 {
		s.laneMe = uint64(seat+1) | e.SeatAttachID(seat)<<8
	} else {
		s.laneMe = 0xff // a private copy: no seat, and no other process sees it
	}
	s.lk.word = lockWord(h)
	s.lk.me = uint64(e.Seat() + 1)
	s.lk.private = s.mode == OpenCopyOnWrite
	s.lk.takeover = s.takeover
	s.lk.stop = &s.state
	switch s.mode {
	case OpenReadOnly:
		s.state.Or(stReadOnly)
	case OpenOnly, OpenOrCreate, CreateOnly:
		s.state.Or(stNotInUse)
	}
	if s.mode == OpenCopyOnWrite {
		// The private copy may hold an operation in flight in another
		// process: roll it back here, in the copy only.
		if v := atomic.LoadUint64(s.lk.word); v&lockOwnerMask != 0 {
			if err := h.rollBack(e.Size(), "a process that holds the segment", s.report.Addf); err != nil {
				return err
			}
			*s.lk.word = v &^ 0xff
		}
	}
	return nil
}

// takeover is segLock.takeover: under the meta lock (so that no open's
// recovery and no other waiter does the same at once) it takes the lock
// from a dead owner and rolls back the owner's operation.
func (s *Segment) takeover(v uint64, owner int) bool {
	won := false
	_ = s.env.Locked(func() error {
		if atomic.LoadUint64(s.lk.word) != v {
			return nil
		}
		if alive, err := s.env.SeatAlive(owner); err != nil || alive {
			return nil
		}
		if !atomic.CompareAndSwapUint64(s.lk.word, v, s.lk.next(v)|lockWaiters) {
			return nil
		}
		won = true
		who := fmt.Sprintf("process %d (seat %d), which died holding the segment lock", s.env.SeatPID(owner), owner)
		s.repMu.Lock()
		defer s.repMu.Unlock()
		if err := s.h.rollBack(s.env.Size(), who, s.report.Addf); err != nil {
			// The half-done operation stays: nothing may run on top of it.
			// The waiter's call fails (lockOnly sees the state), and every
			// later one says why.
			s.report.Addf("could not roll back the operation of %s: %v", who, err)
			s.noteCorrupt(fmt.Errorf("could not roll back the operation of %s: %w", who, err))
			return nil
		}
		if err := s.recoverLanesHeld(s.report.Addf); err != nil {
			s.report.Addf("could not recover the lanes of dead processes: %v", err)
			s.noteCorrupt(fmt.Errorf("could not recover the lanes of dead processes: %w", err))
		}
		return nil
	})
	return won
}
