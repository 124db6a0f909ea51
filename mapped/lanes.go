package mapped

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mapstore/mapstore/internal/envelope"
	"github.com/mapstore/mapstore/internal/journal"
)

// Lanes: crash-atomic changes made outside the segment lock.
//
// The segment lock's journal covers the allocator and the name directory.
// A change to a structure of the caller's (a container in objects) that
// touches more than one word runs in a lane instead: a record, in the
// manager area, that belongs to the one operation that claimed it, so that
// two processes changing two structures never wait for each other. A lane
// holds undo entries (bytes saved before they change, blocks allocated)
// that a rollback applies, and redo entries (blocks to free, stores,
// moves, nested storage to free) that run once the operation commits and
// that recovery finishes if its process dies during them.
//
// Lane owner words (mLaneOwners, maxLanes words in the manager's first
// page, where an open already looks; the geometry says how many lanes
// there are, and the words past them stay 0):
//
//	0              free
//	seat+1 | id<<8 claimed by the process attached in seat with attach id
//	               id (the seat's attach id; a seat reused by another
//	               process has another)
//
// A lane (laneBytes at the geometry's lanes + i*laneBytes):
//
//	0   state: log bytes in use (bits 0-31), committed (bit 63)
//	8   log: entries, each a multiple of 8 bytes:
//	    word 0: kind (bits 0-7), done (bit 8), data bytes (bits 32-63)
//	    then by kind (offsets are segment offsets):
//	      save   target; the saved bytes                      (undo)
//	      alloc  block (0 until the allocation is done)         (undo)
//	      free   block (0 once freed)                           (redo)
//	      store  target word; value                             (redo)
//	      move   destination; source; bytes; bytes moved so far (redo)
//	      write  destination; the bytes                         (redo)
//	      drop   base; count; stride; the element Shape         (redo)
//
// An entry is written past the state's length, then the length is
// published (journal.StoreOrdered), then the change it covers is made: a
// process killed anywhere leaves either an entry that is not published
// (and no change), or one that is. A lane with undo entries only (saves,
// allocations) commits by emptying its record as it is released: killed
// before, it is rolled back; after, nothing is left to do. Otherwise
// Commit publishes the committed bit;
// then the redo entries run in order, each marked done when it has (a
// free zeroes its word, a drop zeroes each owned word it frees and a move
// counts its progress, so one cut short resumes where it stopped).
//
// Whoever finds the owner dead (a writable Open, a takeover of the
// segment lock, a claim that found every lane taken) recovers the lane
// under the segment lock: before the commit it restores the saved bytes
// in reverse order and frees the allocated blocks; after it, it runs the
// redo entries not done. Either is idempotent: a recovery cut short is
// recovered again.
const (
	mLaneOwners = mgrOff + 1024
	maxLanes    = 8 // owner words; a geometry has up to as many lanes
	laneBytes   = 512
	laneLog     = laneBytes - 8 // bytes of entries a lane holds

	laneCommitted = uint64(1) << 63
	laneLenMask   = 1<<32 - 1
	laneDone      = uint64(1) << 8

	laneSave  = 1
	laneAlloc = 2
	laneFree  = 3
	laneStore = 4
	laneMove  = 5
	laneWrite = 6
	laneDrop  = 7
)

// Lane is one crash-atomic operation outside the segment lock: claim it
// with BeginLane (or Lane.Begin), record each change before making it (Save, Allocate) or
// leave it for the commit (Free, Store, Move, Write, Drop), and end it
// with Commit or Abort. If the process dies before Commit returns, the
// operation is undone (before the commit) or finished (after it) by
// whoever finds the process dead, so that the structures it changed are
// as before it or as after it, and no block leaks.
//
// A Lane is used by one goroutine. Its records are small (about 500
// bytes): save headers and words, not whole arrays; allocate and write
// the new copy of a large structure and Save only what points to it. A
// record that does not fit is ErrLaneFull, and the caller aborts.
type Lane struct {
	s    *Segment
	i    int32   // the lane's index
	redo bool    // a redo entry is recorded: Commit runs the redo pass
	off  uintptr // the lane's offset
	n    uint64  // log bytes in use
}

// ErrLaneFull: a lane's record has no room for the entry; abort the
// operation (or split it).
var ErrLaneFull = fmt.Errorf("lane record full (%d bytes)", laneLog)

// BeginLane claims a free lane for an operation. A segment opened
// read-only is ErrReadOnly, a closed one ErrClosed. While every lane is
// taken it waits; a lane whose owner died is recovered then.
func (s *Segment) BeginLane() (Lane, error) {
	var l Lane
	err := l.Begin(s)
	return l, err
}

// Begin is BeginLane into l, a Lane not in use (its zero value, or one
// that ended). It is the form for hot paths: a Lane returned by value and
// then stored in a variable whose address is taken (as `defer l.Abort()`
// takes it) is copied through memory in a way that stalls the processor
// (stores of its fields, then wider loads across them), about 5 ns a
// call.
func (l *Lane) Begin(s *Segment) error {
	if l.s != nil {
		panic("mapstore: Lane.Begin on a Lane in use")
	}
	if !s.CanChange() {
		if err := s.PrepareChange("begin lane"); err != nil {
			return err
		}
	}
	me := s.laneMe
	start := int(s.laneHint.Load()) // a lane's index, below nLanes
	var since time.Time
	for try := 0; ; try++ {
		n := s.h.geo.nLanes
		start = min(start, n-1)
		foreign := false
		for k := range n {
			i := start + k // start < n, so no division is needed
			if i >= n {
				i -= n
			}
			w := s.h.w(mLaneOwners + uintptr(i)*8)
			if v := atomic.LoadUint64(w); v != 0 {
				foreign = foreign || v != me
				continue
			}
			if !atomic.CompareAndSwapUint64(w, 0, me) {
				continue
			}
			if foreign {
				s.checkForeignLanes()
			}
			// Close sets the state, then waits until no lane names this
			// open: a claim it did not see must see the state (the CAS
			// orders this load after it) and back out.
			if st := s.state.Load(); st&stClosed != 0 {
				journal.StoreOrdered(w, 0)
				return s.stateErr("begin lane", st)
			}
			if k != 0 {
				s.laneHint.Store(uint32(i))
			}
			off := s.h.geo.lanes + uintptr(i)*laneBytes
			journal.StoreOrdered(s.h.w(off), 0)
			l.s, l.i, l.redo, l.off, l.n = s, int32(i), false, off, 0
			return nil
		}
		switch {
		case try < 50:
			runtime.Gosched()
			continue
		case since.IsZero():
			since = time.Now()
		case time.Since(since) > lockPoll:
			// Every lane taken for a while: are their owners alive?
			if err := s.recoverLanes(); err != nil {
				return s.errf("begin lane", err)
			}
			since = time.Now()
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func (l *Lane) state() *uint64 { return l.s.h.w(l.off) }

// live is the lane's segment; a Lane that ended (or never began) is a
// misuse panic that says so.
func (l *Lane) live() *Segment {
	if l.s == nil {
		panic("mapstore: a Lane used after Commit or Abort, or never begun")
	}
	return l.s
}

// entry reserves need bytes of log for an entry of kind and returns its
// offset; the caller fills it and publishes it.
func (l *Lane) entry(kind uint64, data int, words int) (uintptr, error) {
	l.live()
	need := uint64(8*words) + (uint64(data)+7)&^7
	if l.n+need > laneLog {
		return 0, ErrLaneFull
	}
	e := l.off + 8 + uintptr(l.n)
	*l.s.h.w(e) = kind | uint64(data)<<32
	return e, nil
}

func (l *Lane) publish(e uintptr, data int, words int) {
	l.n += uint64(8*words) + (uint64(data)+7)&^7
	journal.StoreOrdered(l.state(), l.n)
}

// inLaneRecords reports whether the word at off lies in the lanes'
// records, where a lane's allocation and free entries hold the reference
// words of the fast path (fast.go).
func (h *heap) inLaneRecords(off uint64) bool {
	lo := uint64(h.geo.lanes)
	return off >= lo && off+8 <= lo+uint64(h.geo.nLanes)*laneBytes
}

// offsetIn is the offset of [p, p+n) in the segment, which it must lie in
// (after the manager's pages); outside, it is a misuse panic: the caller
// passes memory of the segment it changes.
func (s *Segment) offsetIn(p unsafe.Pointer, n uintptr, what string) uint64 {
	a, base := uintptr(p), uintptr(s.h.base)
	size := uintptr(s.env.Size())
	if a < base+uintptr(s.h.geo.lo) || a-base > size || n > size-(a-base) {
		panic(fmt.Sprintf("mapstore: lane %s: %d bytes at %p are not inside segment %s", what, n, p, s.b.Name()))
	}
	return uint64(a - base)
}

// Save records the n bytes at p (in the segment) before the operation
// changes them: an abort or a rollback puts them back.
func (l *Lane) Save(p unsafe.Pointer, n int) error {
	off := l.live().offsetIn(p, uintptr(n), "save")
	e, err := l.entry(laneSave, n, 2)
	if err != nil {
		return err
	}
	*l.s.h.w(e + 8) = off
	if n == 8 && uintptr(p)%8 == 0 {
		*l.s.h.w(e + 16) = *(*uint64)(p) // a word, as most saves are: no call to copy it
	} else {
		copy(unsafe.Slice((*byte)(unsafe.Add(l.s.h.base, e+16)), n), unsafe.Slice((*byte)(p), n))
	}
	l.publish(e, n, 2)
	return nil
}

// Allocate allocates a block of n bytes for the operation, as Allocate
// does: an abort or a rollback frees it; once committed it stays.
func (l *Lane) Allocate(n int) ([]byte, error) {
	if err := checkSize(n); err != nil {
		return nil, l.live().errf("allocate", err)
	}
	e, err := l.entry(laneAlloc, 0, 2)
	if err != nil {
		return nil, err
	}
	*l.s.h.w(e + 8) = 0
	l.publish(e, 0, 2)
	off, usable, err := l.s.allocInto(uint64(n), e+8)
	if err != nil {
		return nil, err
	}
	return l.s.slice(off, n, usable), nil
}

// Free frees the block that starts at p once the operation commits (not
// if it aborts).
func (l *Lane) Free(p unsafe.Pointer) error {
	off := l.live().offsetIn(p, 1, "free")
	e, err := l.entry(laneFree, 0, 2)
	if err != nil {
		return err
	}
	*l.s.h.w(e + 8) = off
	l.publish(e, 0, 2)
	l.redo = true
	return nil
}

// Store stores v in the word at p once the operation commits.
func (l *Lane) Store(p *uint64, v uint64) error {
	off := l.live().offsetIn(unsafe.Pointer(p), 8, "store")
	e, err := l.entry(laneStore, 0, 3)
	if err != nil {
		return err
	}
	*l.s.h.w(e + 8) = off
	*l.s.h.w(e + 16) = v
	l.publish(e, 0, 3)
	l.redo = true
	return nil
}

// Move moves n bytes from src to dst (both in the segment; they may
// overlap) once the operation commits.
func (l *Lane) Move(dst, src unsafe.Pointer, n int) error {
	d := l.live().offsetIn(dst, uintptr(n), "move")
	sr := l.live().offsetIn(src, uintptr(n), "move")
	e, err := l.entry(laneMove, 0, 5)
	if err != nil {
		return err
	}
	h := l.s.h
	*h.w(e + 8), *h.w(e + 16), *h.w(e + 24), *h.w(e + 32) = d, sr, uint64(n), 0
	l.publish(e, 0, 5)
	l.redo = true
	return nil
}

// Write copies b to dst (in the segment) once the operation commits.
func (l *Lane) Write(dst unsafe.Pointer, b []byte) error {
	off := l.live().offsetIn(dst, uintptr(len(b)), "write")
	e, err := l.entry(laneWrite, len(b), 2)
	if err != nil {
		return err
	}
	*l.s.h.w(e + 8) = off
	copy(unsafe.Slice((*byte)(unsafe.Add(l.s.h.base, e+16)), len(b)), b)
	l.publish(e, len(b), 2)
	l.redo = true
	return nil
}

// Drop frees, once the operation commits, the blocks that count elements
// of stride bytes at p own as shape says (the elements themselves stay).
func (l *Lane) Drop(p unsafe.Pointer, count, stride int, shape Shape) error {
	if len(shape) == 0 || count == 0 {
		return nil
	}
	off := l.live().offsetIn(p, uintptr(count*stride), "drop")
	e, err := l.entry(laneDrop, len(shape), 4)
	if err != nil {
		return err
	}
	h := l.s.h
	*h.w(e + 8), *h.w(e + 16), *h.w(e + 24) = off, uint64(count), uint64(stride)
	copy(unsafe.Slice((*byte)(unsafe.Add(h.base, e+32)), len(shape)), shape)
	l.publish(e, len(shape), 4)
	l.redo = true
	return nil
}

// Commit makes the operation stand: it runs the redo entries (frees,
// stores, moves, drops) and releases the lane. An error of a redo entry
// (a block that is not one) is returned after the others ran.
func (l *Lane) Commit() error {
	s := l.live()
	if !l.redo {
		// Undo entries only (saves, allocations): the release's emptying
		// of the record is the commit; a process killed before it is
		// rolled back, after it there is nothing left to do.
		l.release()
		return nil
	}
	journal.StoreOrdered(l.state(), l.n|laneCommitted)
	err := s.laneRedo(l.off, false)
	l.release()
	if err != nil {
		return s.errf("commit", err)
	}
	return nil
}

// Abort undoes the operation: it puts the saved bytes back and frees the
// blocks allocated in it, then releases the lane. After Commit (or
// another Abort) it does nothing, so `defer l.Abort()` right after
// BeginLane undoes a call that a panic cuts short.
func (l *Lane) Abort() {
	if l.s == nil {
		return
	}
	s := l.s
	if atomic.LoadUint64(l.state())&laneCommitted != 0 {
		// Cut short after its commit (a panic in the redo): the call
		// stands, and only its redo may finish it. Left to recovery, as
		// an Abort that failed.
		s.lanesLeft.Or(1 << l.i)
		l.s = nil
		return
	}
	if err := s.laneUndo(l.off, false); err != nil {
		// The lane stays claimed: recovery finishes it once this process
		// is gone. Close does not wait for it.
		s.lanesLeft.Or(1 << l.i)
		l.s = nil
		return
	}
	l.release()
}

func (l *Lane) release() {
	s := l.s
	journal.StoreOrdered(l.state(), 0)
	journal.StoreOrdered(s.h.w(mLaneOwners+uintptr(l.i)*8), 0)
	l.s = nil
}

// lanesInFlight reports whether a lane names this open (one it left to
// recovery aside).
func (s *Segment) lanesInFlight() bool {
	if s.laneMe == 0 {
		return false
	}
	for i := range s.h.geo.nLanes {
		if atomic.LoadUint64(s.h.w(mLaneOwners+uintptr(i)*8)) == s.laneMe && s.lanesLeft.Load()&(1<<i) == 0 {
			return true
		}
	}
	return false
}

// laneWords is the number of words an entry of kind has before its data
// (0: no such kind).
func laneWords(kind uint64) uint64 {
	switch kind {
	case laneSave, laneAlloc, laneFree, laneWrite:
		return 2
	case laneStore:
		return 3
	case laneDrop:
		return 4
	case laneMove:
		return 5
	}
	return 0
}

// validateLanes checks the lane owner words and records: every owner
// names a seat, every record parses. Run where validateWords runs.
func (h *heap) validateLanes() error {
	for i := range maxLanes {
		v := h.get(mLaneOwners + uintptr(i)*8)
		if seat := int(v&0xff) - 1; v != 0 && (seat < 0 || seat >= envelope.MaxSeats || i >= h.geo.nLanes) {
			return corrupt("lane %d: owner word %#x names no seat", i, v)
		}
		if i >= h.geo.nLanes {
			continue
		}
		off := h.geo.lanes + uintptr(i)*laneBytes
		st := h.get(off)
		if v == 0 && st != 0 {
			return corrupt("lane %d is free but its record says %#x", i, st)
		}
		if st&^(laneCommitted|laneLenMask) != 0 {
			return corrupt("lane %d: state %#x has bits set that no record uses", i, st)
		}
		var es laneList
		if err := h.laneEntries(off, st&laneLenMask, &es); err != nil {
			return err
		}
	}
	return nil
}

// laneEntries lists the offsets of the entries of the lane at off, whose
// state says n bytes, in es (nil: only checks them): every length is
// checked against the lane.
func (h *heap) laneEntries(off uintptr, n uint64, es *laneList) error {
	if es != nil {
		es.n = 0
	}
	if n > laneLog {
		return corrupt("lane at %d says %d bytes of record, more than its %d", off, n, laneLog)
	}
	for p := uint64(0); p < n; {
		e := off + 8 + uintptr(p)
		w0 := *h.w(e)
		kind, data := w0&0xff, w0>>32
		words := laneWords(kind)
		if words == 0 {
			return corrupt("lane entry at %d has kind %d", e, kind)
		}
		if (kind != laneSave && kind != laneWrite && kind != laneDrop && data != 0) || data > laneLog {
			return corrupt("lane entry at %d (kind %d) says %d bytes", e, kind, data)
		}
		size := laneEntryBytes(w0)
		if p+size > n {
			return corrupt("lane entry at %d runs past the record's %d bytes", e, n)
		}
		if es != nil {
			es.e[es.n] = e
			es.n++
		}
		p += size
	}
	return nil
}

// laneEntryBytes is the bytes of the entry whose first word is w0 (of a
// kind laneWords knows).
func laneEntryBytes(w0 uint64) uint64 {
	return laneWords(w0&0xff)*8 + (w0>>32+7)&^7
}

// laneList is the entries of a lane: an entry takes at least 16 bytes.
type laneList struct {
	e [laneLog / 16]uintptr
	n int
}

// dataRange reports whether [off, off+n) lies in pages that hold blocks
// (not the envelope, the manager or the descriptor table) below size.
func (h *heap) dataRange(off, n uint64, size int64) bool {
	if off < h.geo.lo || off > uint64(size) || n > uint64(size)-off {
		return false
	}
	managed := h.managed()
	for p := off >> pageShift; p<<pageShift < off+n || p == off>>pageShift; p++ {
		if p >= managed || dKind(h.get(h.desc(p))) == kMeta {
			return false
		}
		if n == 0 {
			break
		}
	}
	return true
}

// laneStepHook, when not nil, is called before each entry that a lane's
// undo (redo false) or redo (redo true) processes, with the entry's
// kind and its index in the record. Tests set it to stop the process at
// a chosen step (an operation or a recovery cut short). It is nil in
// production, where it costs one load and compare per entry.
var laneStepHook func(redo bool, k int, kind uint64)

// laneUndo rolls back the uncommitted lane at off: saved bytes back in
// reverse order, allocated blocks freed. held says the caller holds the
// segment lock (recovery); otherwise each free takes it.
func (s *Segment) laneUndo(off uintptr, held bool) error {
	h := s.h
	st := atomic.LoadUint64(h.w(off))
	var es laneList
	if err := h.laneEntries(off, st&laneLenMask, &es); err != nil {
		return err
	}
	size := s.env.Size()
	for k := es.n - 1; k >= 0; k-- {
		e := es.e[k]
		w0 := *h.w(e)
		if laneStepHook != nil {
			laneStepHook(false, k, w0&0xff)
		}
		switch w0 & 0xff {
		case laneSave:
			t, n := *h.w(e + 8), w0>>32
			if !h.dataRange(t, n, size) {
				return corrupt("lane entry at %d saves %d bytes at %d, outside the segment's blocks", e, n, t)
			}
			copy(unsafe.Slice((*byte)(unsafe.Add(h.base, t)), n), unsafe.Slice((*byte)(unsafe.Add(h.base, e+16)), n))
		case laneAlloc:
			if err := s.freeWord(e+8, 0, held); err != nil {
				return err
			}
		}
	}
	return nil
}

// laneRedo runs the redo entries of the committed lane at off that are
// not done yet, marking each done.
func (s *Segment) laneRedo(off uintptr, held bool) error {
	h := s.h
	st := atomic.LoadUint64(h.w(off))
	n := st & laneLenMask
	if err := h.laneEntries(off, n, nil); err != nil {
		return err
	}
	size := s.env.Size()
	var first error
	// The entries again, as laneEntries found them (a redo changes an
	// entry's done bit and a move's progress, never a kind or a length).
	for k, p := 0, uint64(0); p < n; k++ {
		e := off + 8 + uintptr(p)
		w0 := *h.w(e)
		p += laneEntryBytes(w0)
		if w0&laneDone != 0 {
			continue
		}
		if laneStepHook != nil {
			laneStepHook(true, k, w0&0xff)
		}
		var err error
		switch w0 & 0xff {
		case laneSave, laneAlloc:
			continue // undo entries: nothing to run, nothing to mark
		case laneFree:
			err = s.freeWord(e+8, 0, held)
		case laneStore:
			t := *h.w(e + 8)
			if t%8 != 0 || !h.dataRange(t, 8, size) {
				err = corrupt("lane entry at %d stores at %d, outside the segment's blocks", e, t)
				break
			}
			atomic.StoreUint64(h.w(uintptr(t)), *h.w(e + 16))
		case laneWrite:
			t, n := *h.w(e + 8), w0>>32
			if !h.dataRange(t, n, size) {
				err = corrupt("lane entry at %d writes %d bytes at %d, outside the segment's blocks", e, n, t)
				break
			}
			copy(unsafe.Slice((*byte)(unsafe.Add(h.base, t)), n), unsafe.Slice((*byte)(unsafe.Add(h.base, e+16)), n))
		case laneMove:
			err = s.laneMoveRun(e, size)
		case laneDrop:
			base, count, stride := *h.w(e + 8), *h.w(e + 16), *h.w(e + 24)
			shape := Shape(unsafe.Slice((*byte)(unsafe.Add(h.base, e+32)), w0>>32))
			if count > uint64(size) || stride > uint64(size) || count*stride > uint64(size) || !h.dataRange(base, count*stride, size) {
				err = corrupt("lane entry at %d drops %d elements of %d bytes at %d, outside the segment's blocks", e, count, stride, base)
				break
			}
			d := dropper{s: s, held: held, size: size, steps: uint64(size) / 16}
			err = d.elems(base, count, stride, shape, 0)
		}
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		journal.StoreOrdered(h.w(e), w0|laneDone)
	}
	return first
}

// laneMoveRun runs (or resumes) the move entry at e in chunks no longer
// than the distance between source and destination, so that a chunk's
// source is never overwritten before it is copied, counting its progress
// after each.
func (s *Segment) laneMoveRun(e uintptr, size int64) error {
	h := s.h
	d, sr, n := *h.w(e + 8), *h.w(e + 16), *h.w(e + 24)
	if !h.dataRange(d, n, size) || !h.dataRange(sr, n, size) {
		return corrupt("lane entry at %d moves %d bytes from %d to %d, outside the segment's blocks", e, n, sr, d)
	}
	done := h.w(e + 32)
	gap := max(d, sr) - min(d, sr)
	if gap == 0 {
		return nil
	}
	chunk := min(gap, 1<<16)
	b := func(off, n uint64) []byte { return unsafe.Slice((*byte)(unsafe.Add(h.base, off)), n) }
	for m := *done; m < n; m = *done {
		c := min(chunk, n-m)
		if d < sr {
			copy(b(d+m, c), b(sr+m, c)) // forwards
		} else {
			copy(b(d+n-m-c, c), b(sr+n-m-c, c)) // backwards
		}
		journal.StoreOrdered(done, m+c)
	}
	return nil
}

// recoverLanes rolls back (or finishes) every lane whose owner is dead,
// under the segment lock.
func (s *Segment) recoverLanes() error {
	if !s.deadLanes() && !s.deadCaches() {
		return nil
	}
	if !s.lk.lock() {
		return s.stateErr("recover", s.state.Load())
	}
	defer s.lk.unlock()
	s.repMu.Lock()
	defer s.repMu.Unlock()
	return s.recoverLanesHeld(s.report.Addf)
}

// checkForeignLanes recovers, at most every foreignCheck, the lanes of
// other processes that have died: a survivor that changes containers
// finds a dead process's half-done call within that time, without an
// Open. It runs when a claim saw other processes' lanes taken, and costs
// a liveness test per such lane.
func (s *Segment) checkForeignLanes() {
	now := time.Now().UnixNano()
	last := s.lanesChecked.Load()
	if now-last < int64(foreignCheck) || !s.lanesChecked.CompareAndSwap(last, now) {
		return
	}
	_ = s.recoverLanes() // an error marks the segment (errf); the claim goes on
}

// foreignCheck is how often checkForeignLanes looks.
const foreignCheck = 50 * time.Millisecond

// Recover finds the processes that died with the segment attached and
// undoes, or finishes, what they left half done: the operation of one
// that held the segment lock, and every lane (container call) of theirs,
// as a writable Open does; RecoveryReport says what it did. A survivor
// that knows a process died (a supervisor that saw a worker exit) calls
// it to repair the segment at once; otherwise the next Open, the next
// wait for the segment lock, or a container call within 50 ms of seeing
// the dead process's lane does.
func (s *Segment) Recover() error {
	if err := s.PrepareChange("recover"); err != nil {
		return err
	}
	if !s.lk.lock() { // a dead holder is taken over, and rolled back
		return s.stateErr("recover", s.state.Load())
	}
	s.lk.unlock()
	if err := s.recoverLanes(); err != nil {
		return s.errf("recover", err)
	}
	return nil
}

// deadLanes reports whether a lane is claimed by a process that is gone.
func (s *Segment) deadLanes() bool {
	for i := range s.h.geo.nLanes {
		if v := atomic.LoadUint64(s.h.w(mLaneOwners + uintptr(i)*8)); v != 0 && !s.laneOwnerAlive(v) {
			return true
		}
	}
	return false
}

// laneOwnerAlive reports whether owner word v names a live process: its
// seat is taken by the same attach and held.
func (s *Segment) laneOwnerAlive(v uint64) bool {
	if v == s.laneMe {
		return true // this open's own
	}
	seat := int(v&0xff) - 1
	if seat < 0 || seat >= envelope.MaxSeats {
		return false
	}
	if uint64(seat+1)|s.env.SeatAttachID(seat)<<8 != v {
		return false
	}
	alive, err := s.env.SeatAlive(seat)
	return err != nil || alive // unknown: leave it alone
}

// recoverLanesHeld recovers the lanes of dead owners, with the segment
// lock held, saying what it did with add.
func (s *Segment) recoverLanesHeld(add func(string, ...any)) error {
	h := s.h
	for i := range h.geo.nLanes {
		w := h.w(mLaneOwners + uintptr(i)*8)
		v := atomic.LoadUint64(w)
		if v == 0 || s.laneOwnerAlive(v) {
			continue
		}
		off := h.geo.lanes + uintptr(i)*laneBytes
		st := atomic.LoadUint64(h.w(off))
		who := fmt.Sprintf("lane %d, left by the process of seat %d", i, int(v&0xff)-1)
		if st&laneCommitted != 0 {
			if err := s.laneRedo(off, true); err != nil {
				return fmt.Errorf("finishing %s: %w", who, err)
			}
			add("finished the committed operation of %s", who)
		} else {
			if err := s.laneUndo(off, true); err != nil {
				return fmt.Errorf("rolling back %s: %w", who, err)
			}
			if st&laneLenMask != 0 {
				add("rolled back the operation of %s", who)
			}
		}
		journal.StoreOrdered(h.w(off), 0)
		atomic.StoreUint64(w, 0)
	}
	return s.reclaimDeadCaches(add)
}

// lockLane takes the segment lock for a lane's allocation or free: it
// goes on while Close waits for the lanes in flight (stClosed), but not
// on a segment found corrupt.
func (s *Segment) lockLane() error {
	s.lk.lockAnyway()
	if st := s.state.Load(); st&stCorrupt != 0 {
		s.lk.unlock()
		return s.stateErr("lane", st)
	}
	return nil
}

// allocInto allocates n bytes and stores the block's offset in the word
// at ref, as one crash-atomic step (the word must be 0 before).
func (s *Segment) allocInto(n uint64, ref uintptr) (off, usable uint64, err error) {
	if err := s.lockLane(); err != nil {
		return 0, 0, err
	}
	if n <= maxSmall {
		if off, usable, ok := s.h.allocFast(n, ref, 0); ok {
			s.lk.unlock()
			return off, usable, nil
		}
	}
	err = s.runJournaled(opAllocate, func() (err error) {
		if off, usable, err = s.h.alloc(n, 0); err == nil {
			s.h.set(ref, off)
		}
		return err
	})
	if isNoSpace(err) && s.emptyCaches() {
		return s.allocInto(n, ref)
	}
	if err != nil {
		return 0, 0, s.errf(fmt.Sprintf("allocate %d bytes", n), err)
	}
	return off, usable, nil
}

// freeWord frees the block whose offset the word at ref holds (none if
// 0) and stores val there, as one crash-atomic step. held says the caller
// holds the segment lock.
func (s *Segment) freeWord(ref uintptr, val uint64, held bool) error {
	h := s.h
	off := atomic.LoadUint64(h.w(ref))
	if off == 0 {
		return nil
	}
	if held {
		h.j.Begin(opDeallocate)
		err := h.freeAt(off)
		if err == nil {
			h.set(ref, val)
		}
		if fault := h.takeFault(); fault != nil || err != nil {
			if rerr := h.rollBack(s.env.Size(), "this process", func(string, ...any) {}); rerr != nil {
				return rerr
			}
			if fault != nil {
				return fault
			}
			return err
		}
		h.j.End()
		return nil
	}
	if err := s.lockLane(); err != nil {
		return err
	}
	if h.freeFast(off, ref, val) {
		s.lk.unlock()
		return nil
	}
	return s.runJournaled(opDeallocate, func() error {
		if err := h.freeAt(off); err != nil {
			return err
		}
		h.set(ref, val)
		return nil
	})
}

// RemoveNamedDropping is RemoveNamed for an object whose elements own
// blocks, as shape says (containers inside it): the name is removed and
// the object handed to a lane in one crash-atomic step, then what the
// elements own is freed, then the object. A crash after the first step
// is finished by recovery: the name is either there with everything it
// holds, or gone with all its memory free. An empty shape is RemoveNamed.
func (s *Segment) RemoveNamedDropping(name string, unique bool, check func(Named) error, shape Shape) error {
	if len(shape) == 0 {
		return s.RemoveNamed(name, unique, check)
	}
	var l Lane
	err := l.Begin(s)
	if err != nil {
		return err
	}
	defer l.Abort() // a no-op once it committed; a panic undoes the call
	h := s.h
	// The entries, written but not published: the removal publishes them
	// (and the commit) in its journaled step.
	drop := l.off + 8
	free := drop + 32 + (uintptr(len(shape))+7)&^7
	total := uint64(free+16) - uint64(l.off+8)
	if total > laneLog {
		l.Abort()
		return fmt.Errorf("mapstore: remove %q in %s: the type's shape takes %d bytes: %w", name, s.b.Name(), len(shape), ErrLaneFull)
	}
	err = s.journaled("remove", opRemoveName, func() error {
		so, rec, meta, obj, count, esize, _, st := h.locate(nameHash(name, unique), name, unique, nil)
		switch {
		case st == locTorn:
			return corrupt("the record of name %q at offset %d does not fit the segment", name, rec)
		case so == 0:
			return ErrNotFound
		case check != nil:
			if err := check(s.named(rec, meta, obj, count, esize, name)); err != nil {
				return err
			}
		}
		*h.w(drop) = laneDrop | uint64(len(shape))<<32
		*h.w(drop + 8), *h.w(drop + 16), *h.w(drop + 24) = obj, count, esize
		copy(unsafe.Slice((*byte)(unsafe.Add(h.base, drop+32)), len(shape)), shape)
		*h.w(free) = laneFree
		*h.w(free + 8) = rec
		if err := h.unindex(so, rec, false); err != nil {
			return err
		}
		h.set(l.off, total|laneCommitted)
		return nil
	})
	if err != nil {
		l.Abort()
		switch {
		case s.state.Load()&stClosed != 0:
			return s.errClosed("remove")
		case errors.Is(err, ErrNotFound):
			return s.notFound("remove", name, nil)
		case errors.Is(err, ErrCorrupt):
			return fmt.Errorf("mapstore: remove %q in %s: %w", name, s.b.Name(), s.noteCorrupt(err))
		}
		return err
	}
	l.n = total
	err = s.laneRedo(l.off, false)
	l.release()
	if err != nil {
		return s.errf("remove", err)
	}
	return nil
}

// OwnerID identifies this open to a lock kept in the segment that records
// its holder (objects.Mutex and the others): the word this open's lanes
// carry, seat+1 in bits 0-6, bit 7 clear (the lock's to use), the seat's
// attach id from bit 8 (unique over the segment's life, so that a later
// open in the same seat is another owner). It is 0 for a read-only open,
// which may hold nothing.
func (s *Segment) OwnerID() uint64 {
	if s.mode == OpenReadOnly {
		return 0
	}
	return s.laneMe &^ 0x80 // a private copy's 0xff: no seat, seen by none
}

// OwnerAlive reports whether id, the OwnerID of an open of this segment
// in any process, names an open still attached: its seat is held (the
// kernel drops the hold when the process dies) by the same attach. An id
// whose liveness cannot be tested counts as alive. It costs a system call
// (about 250 ns) unless id is this open's.
func (s *Segment) OwnerAlive(id uint64) bool {
	if id == 0 {
		return false
	}
	if id == s.OwnerID() {
		return true
	}
	return s.laneOwnerAlive(id)
}
