package mapped

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/mapstore/mapstore/internal/envelope"
	"github.com/mapstore/mapstore/internal/journal"
	"github.com/mapstore/mapstore/internal/pin"
)

// Per-process block caches: small blocks allocated and freed without the
// segment lock.
//
// A writable open of a segment with the large geometry keeps, for each P
// of its Go runtime (each processor that runs goroutines), a magazine: a
// block of the segment that holds, for each size class, a count and a
// stack of offsets of cells that are free for this process to hand out.
// Allocate pops a cell from the magazine of the P it runs on, Deallocate
// pushes one, with the goroutine pinned to the P (internal/pin) so that no
// other goroutine uses the magazine meanwhile: a few loads and stores, no
// locked instruction, and no cache line another process writes. Cells
// move between a magazine and the page heap in batches under the segment
// lock: half a magazine's capacity when it is empty (refill) or full
// (flush).
//
// The heap counts a cached cell as live (its bitmap bit is set, its run
// counts it, the in-use total holds it); the caches say which live cells
// are free. FreeMemory and AllMemoryDeallocated add the cached bytes back,
// so both stay exact; CheckSanity walks the caches. A cached cell's first
// word holds a marker derived from the segment's UUID and the cell's
// offset, so that a second free of a cell (which would put it in a cache
// twice) is caught: a free that finds the marker looks for the cell in
// every cache, under the lock, and refuses it (ErrInvalidHandle) if it is
// there. A cell popped has its marker cleared.
//
// Crash safety. A pop publishes with one store (the count); a push writes
// the slot, then publishes the count (journal.StoreOrdered): a process
// killed anywhere leaves the cell in the magazine or not, never half. A
// refill is one journaled operation under the segment lock (the cells'
// allocation, their slots, the count); a flush frees cell by cell, each
// free and its count together (the fast path's intent record, or a
// journaled free). The magazines of a process that died stay in the
// segment, owned, counted free and checked, until someone reclaims them
// under the segment lock: the next writable Open, a takeover of the
// segment lock, Recover, a lane claim that finds a dead process's lane,
// the next process to take the dead one's seat, an allocation that would
// otherwise fail, and the last Close. Close of an open empties its own.
//
// Layout. Manager page 0 holds, at mCaches, one word per attached-process
// seat: the offset of the first magazine of the open in that seat (0:
// none). A magazine is a large block of magBytes:
//
//	0    owner: the lane owner word of its open (seat+1 | attach id<<8)
//	8    next magazine of the same open (0: the last)
//	16   the P it serves
//	32   per size class c, at mc[c].at: the count, then mc[c].cap slots
//
// Segments of the small geometry (created at most 512 KiB) have no
// caches: every allocation takes the segment lock, as a 64 KiB segment
// needs its memory more than its speed. Nor do read-only and
// copy-on-write opens.
const (
	mCaches  = mgrOff + 2048 // envelope.MaxSeats words
	magBytes = 2 * pageSize

	magOwner = 0
	magNext  = 8
	magP     = 16
	magHdr   = 32

	// maxMagP bounds the Ps an open keeps magazines for (GOMAXPROCS
	// beyond it: the others take the lock).
	maxMagP = 256
	// maxChain bounds a walk of one seat's magazines.
	maxChain = maxMagP

	// refillRoom is the journal room a refill keeps for one more run's
	// grab (grabCells): its bitmap words (a run of 16-byte cells has 4),
	// its descriptor, the unlink of a run it fills, the in-use total.
	refillRoom = 24
)

// magClass is where a magazine keeps a class's stack, and the class's
// cell size. The table has 256 rows so that a class number from classOf
// (a byte) indexes it without a bounds check; the rows past the classes
// are unused.
type magClass struct{ at, cap, size uint64 }

var mc = buildMagazines()

// cacheHook, when not nil, is called at the named steps of the batch
// moves, for the tests that kill a process there: "make" (a magazine
// allocated and linked, not yet committed), "refill" (cells taken, the
// count not yet set), "flush" (between two cells given back), "flushslow"
// (a journaled give-back not yet committed), "drain" (a magazine's block
// freed, not yet committed). It may run pinned (see internal/pin).
var cacheHook func(where string)

// buildMagazines sizes each class's stack: 32 cells up to 256 bytes, 16
// up to 512, 8 above (at most 16 KiB of a class per P).
func buildMagazines() (t [256]magClass) {
	next := uint64(magHdr)
	for c, cl := range classes {
		n := uint64(8)
		switch {
		case cl.size <= 256:
			n = 32
		case cl.size <= 512:
			n = 16
		}
		t[c] = magClass{at: next, cap: n, size: cl.size}
		next += 8 + n*8
	}
	if next > magBytes {
		panic("mapped: the magazine layout does not fit its block")
	}
	return t
}

// badCount is the error of a magazine whose count for class c, k, is more
// than the class's slots.
func badCount(mag uint64, c uint8, k uint64) error {
	return corrupt("block cache at offset %d: class %d counts %d cells, more than its %d slots", mag, mc[c].size, k, mc[c].cap)
}

// magazine is a magazine's memory in the segment.
type magazine struct{ _ [magBytes]byte }

func (m *magazine) count(c uint8) *uint64 {
	return (*uint64)(unsafe.Add(unsafe.Pointer(m), mc[c].at))
}
func (m *magazine) slot(c uint8, i uint64) *uint64 {
	return (*uint64)(unsafe.Add(unsafe.Pointer(m), mc[c].at+8+i*8))
}

// offset is the magazine's offset in the segment.
func (h *heap) offset(m *magazine) uint64 {
	return uint64(uintptr(unsafe.Pointer(m)) - uintptr(h.base))
}

// cacheKey derives the marker key from the segment's UUID.
func cacheKey(u [16]byte) uint64 {
	var k uint64
	for i, b := range u {
		k ^= uint64(b) << (8 * (i % 8))
	}
	return k | 1
}

// marker is what a cached cell at off holds in its first word.
func (h *heap) marker(off uint64) uint64 { return h.ckey ^ off*0x9e3779b97f4a7c15 }

// marked reports whether the cell at off holds its cache marker.
func (h *heap) marked(off uint64) bool { return *h.w(uintptr(off)) == h.marker(off) }

// enableCaches gives a writable open with a seat its magazine table.
func (s *Segment) enableCaches() {
	if s.h.geo != &geometries[0] || s.env.Seat() < 0 || s.mode == OpenReadOnly || s.mode == OpenCopyOnWrite || s.noCaches {
		return
	}
	s.mags = make([]atomic.Pointer[magazine], min(runtime.GOMAXPROCS(0), maxMagP))
}

// cacheAlloc pops a cell of n bytes (n <= maxSmall) from the magazine of
// the P the caller runs on; false if it has none (the slow path refills).
func (s *Segment) cacheAlloc(n int) (off, usable uint64, ok bool) {
	c := classOf[(n+15)>>4]
	p := pin.Pin()
	if s.state.Load()|s.magStop.Load() == 0 && p < len(s.mags) {
		if m := s.mags[p].Load(); m != nil {
			cw := m.count(c)
			if k := *cw; k-1 < mc[c].cap {
				off = *m.slot(c, k-1)
				size := mc[c].size
				if off >= s.h.geo.lo && off%16 == 0 && off <= s.known.Load()-size { // known > size: no wrap
					journal.StoreOrdered(cw, k-1)
					*s.h.w(uintptr(off)) = 0 // the marker
					pin.Unpin()
					return off, size, true
				}
			}
		}
	}
	pin.Unpin()
	return 0, 0, false
}

// What cacheFree did.
const (
	cachePushed = iota // the block is in the magazine
	cacheNoCell        // not a live cell as far as a look without the lock tells: the plain path frees it or says why not
	cacheSlow          // a cell, but no magazine, a full one, or one that may be cached already: freeCachedSlow
)

// cacheFree pushes the small block at off on the magazine of the P the
// caller runs on.
func (s *Segment) cacheFree(off uint64) int {
	p := pin.Pin()
	c, ok := s.h.liveCell(off, s.known.Load())
	if !ok {
		pin.Unpin()
		return cacheNoCell
	}
	if s.state.Load()|s.magStop.Load() == 0 && p < len(s.mags) && !s.h.marked(off) {
		if m := s.mags[p].Load(); m != nil {
			cw := m.count(c)
			if k := *cw; k < mc[c].cap {
				*s.h.w(uintptr(off)) = s.h.marker(off)
				*m.slot(c, k) = off
				journal.StoreOrdered(cw, k+1)
				pin.Unpin()
				return cachePushed
			}
		}
	}
	pin.Unpin()
	return cacheSlow
}

// liveCell reports whether off is the first byte of a live cell, and its
// class, without the segment lock: every read is bounded by size (the
// segment's size as this process last saw it), and a descriptor table
// that moved meanwhile (growth) is a false.
func (h *heap) liveCell(off, size uint64) (uint8, bool) {
	t := atomic.LoadUint64(h.w(mTable))
	page := off >> pageShift
	if off < h.geo.lo || off >= size || page >= atomic.LoadUint64(h.w(mManaged)) || t+(page+1)*descLen > size {
		return 0, false
	}
	w0 := *h.w(uintptr(t + page*descLen))
	if dKind(w0) == kCont {
		head := dPages(w0)
		if head >= page {
			return 0, false
		}
		page = head
		w0 = *h.w(uintptr(t + page*descLen))
	}
	cl := geomOf(w0)
	if dKind(w0) != kRun || cl == nil || page<<pageShift+cl.pages*pageSize > size {
		return 0, false
	}
	cell, ok := cl.cellOf(off - page<<pageShift)
	if !ok || *h.w(uintptr(page<<pageShift + cell/64*8))&(1<<(cell%64)) == 0 {
		return 0, false
	}
	if atomic.LoadUint64(h.w(mTable)) != t {
		return 0, false
	}
	return uint8(dClass(w0)), true
}

// allocCachedSlow is Allocate's path when the magazine had no cell:
// under the segment lock it makes the P's magazine if there is none,
// refills it and pops; failing that it allocates as without caches. An
// allocation that finds no space empties the caches and tries once more.
func (s *Segment) allocCachedSlow(n int) (off, usable uint64, err error) {
	for try := 0; ; try++ {
		if err := s.lockOnly("allocate"); err != nil {
			return 0, 0, err
		}
		s.sizeNow() // the pinned paths bound offsets by the size last seen
		var ok bool
		if off, usable, ok = s.refillPop(n); ok {
			s.lk.unlock()
			return off, usable, nil
		}
		if fault := s.h.takeFault(); fault != nil {
			// A bad magazine: this allocation says so (a later operation
			// would otherwise take the fault as its own).
			s.noteCorrupt(fault)
			s.lk.unlock()
			return 0, 0, fault
		}
		if off, usable, ok = s.h.allocFast(uint64(n), 0, 0); ok {
			s.lk.unlock()
			return off, usable, nil
		}
		err = s.runJournaled(opAllocate, func() (err error) {
			off, usable, err = s.h.alloc(uint64(n), 0)
			return err
		})
		if err == nil || try > 0 || !isNoSpace(err) || !s.emptyCaches() {
			return off, usable, err
		}
	}
}

// refillPop makes sure the P the caller runs on has a magazine, refills
// its stack of n-byte cells if empty, and pops one. The segment lock is
// held.
func (s *Segment) refillPop(n int) (off, usable uint64, ok bool) {
	s.makeMagazine()
	c := classOf[(n+15)>>4]
	h := s.h
	p := pin.Pin()
	defer pin.Unpin()
	if p >= len(s.mags) || s.magStop.Load() != 0 {
		return 0, 0, false
	}
	m := s.mags[p].Load()
	if m == nil {
		return 0, 0, false
	}
	cw := m.count(c)
	k := *cw
	if k > mc[c].cap {
		h.failWith(badCount(h.offset(m), c, k))
		return 0, 0, false
	}
	if k == 0 {
		if h.get(classHead(uint64(c))) == 0 {
			// No run with a free cell: the plain path cuts one (and may
			// grow the segment, which a pinned goroutine must not).
			return 0, 0, false
		}
		err := s.heldOp(opAllocate, func() error {
			var cells [32]uint64
			want := mc[c].cap / 2
			got := uint64(0)
			for got < want && h.j.Room() >= refillRoom && h.get(classHead(uint64(c))) != 0 {
				n, err := h.grabCells(int(c), cells[:want-got])
				if err != nil {
					return err
				}
				for _, o := range cells[:n] {
					*h.w(uintptr(o)) = h.marker(o)
					*m.slot(c, got) = o
					got++
				}
			}
			if cacheHook != nil {
				cacheHook("refill")
			}
			h.set(uintptr(h.offset(m)+mc[c].at), got)
			return nil
		})
		if err != nil {
			return 0, 0, false
		}
		if k = *cw; k == 0 {
			return 0, 0, false
		}
	}
	off = *m.slot(c, k-1)
	size := classes[c].size
	if off < h.geo.lo || off%16 != 0 || off > uint64(s.env.Size())-size {
		h.fail("block cache at offset %d holds cell offset %d, outside the segment's data", h.offset(m), off)
		return 0, 0, false
	}
	journal.StoreOrdered(cw, k-1)
	*h.w(uintptr(off)) = 0
	return off, size, true
}

// freeCachedSlow is Deallocate's path when the magazine could not take
// the block: under the segment lock it refuses a block already in a cache,
// makes the P's magazine if there is none, flushes half of a full stack
// and pushes; failing that it frees as without caches.
func (s *Segment) freeCachedSlow(off uint64) error {
	if err := s.lockOnly("deallocate"); err != nil {
		return err
	}
	s.sizeNow()
	h := s.h
	if off >= h.geo.lo && off+8 <= uint64(s.env.Size()) && h.marked(off) && h.cachedAt(off) {
		s.lk.unlock()
		return s.errf("deallocate", fmt.Errorf("the block at offset %d is already free (in a block cache): %w", off, ErrInvalidHandle))
	}
	if s.flushPush(off) {
		s.lk.unlock()
		return nil
	}
	if fault := h.takeFault(); fault != nil {
		s.noteCorrupt(fault)
		s.lk.unlock()
		return s.errf("deallocate", fault)
	}
	if h.freeFast(off, 0, 0) {
		s.lk.unlock()
		return nil
	}
	if err := s.runJournaled(opDeallocate, func() error { return h.freeAt(off) }); err != nil {
		return s.errf("deallocate", err)
	}
	return nil
}

// flushPush pushes the live small block at off on the magazine of the P
// the caller runs on, flushing half of its class's stack to the heap
// first if it is full. The segment lock is held.
func (s *Segment) flushPush(off uint64) bool {
	h := s.h
	b, err := h.blockAt(off)
	if err != nil || dKind(b.w0) != kRun {
		return false // the plain path frees it, or says why not
	}
	c := uint8(dClass(b.w0))
	s.makeMagazine()
	p := pin.Pin()
	defer pin.Unpin()
	if p >= len(s.mags) || s.magStop.Load() != 0 {
		return false
	}
	m := s.mags[p].Load()
	if m == nil {
		return false
	}
	k := *m.count(c)
	if k > mc[c].cap {
		h.failWith(badCount(h.offset(m), c, k))
		return false
	}
	if k == mc[c].cap {
		if err := s.flushStack(h.offset(m), uint64(c), mc[c].cap/2); err != nil {
			h.failWith(err) // the caller's free fails with it
			return false
		}
		if k = *m.count(c); k >= mc[c].cap {
			return false
		}
	}
	*h.w(uintptr(off)) = h.marker(off)
	*m.slot(c, k) = off
	journal.StoreOrdered(m.count(c), k+1)
	return true
}

// flushStack gives back to the heap the top cells of class c of the
// magazine at mag until keep remain, each free together with its count.
// The segment lock is held, and nobody else uses the magazine.
func (s *Segment) flushStack(mag, c, keep uint64) error {
	h := s.h
	cw := uintptr(mag + mc[c].at)
	for {
		k := h.get(cw)
		if k <= keep {
			return nil
		}
		if k > mc[c].cap {
			return badCount(mag, uint8(c), k)
		}
		o := h.get(cw + uintptr(8*k))
		if o < h.geo.lo || o%16 != 0 || o > uint64(h.size())-8 {
			return corrupt("block cache at offset %d holds cell offset %d, outside the segment's data", mag, o)
		}
		// A live cell of the class: anything else (a large block, a cell
		// of another class, a free one) is not the cache's to free.
		if b, err := h.blockAt(o); err != nil || dKind(b.w0) != kRun || dClass(b.w0) != c {
			return corrupt("block cache at offset %d holds offset %d as a free %d-byte cell, which is not a live cell of that class", mag, o, classes[c].size)
		}
		if h.marked(o) {
			*h.w(uintptr(o)) = 0
		}
		if h.freeFast(o, cw, k-1) {
			if cacheHook != nil {
				cacheHook("flush")
			}
			continue
		}
		if err := s.heldOp(opDeallocate, func() error {
			if err := h.freeAt(o); err != nil {
				return err
			}
			h.set(cw, k-1)
			if cacheHook != nil {
				cacheHook("flushslow")
			}
			return nil
		}); err != nil {
			return fmt.Errorf("flushing block cache at offset %d: %w", mag, err)
		}
	}
}

// makeMagazine gives the P the caller runs on a magazine if it has none.
// The segment lock is held. A seat whose word names another open's
// magazines (a process that died in it) has them reclaimed first. Making
// one can fail (no space): the caller goes on without.
func (s *Segment) makeMagazine() {
	if s.mags == nil {
		return
	}
	p := pin.Pin()
	pin.Unpin()
	if p >= len(s.mags) || s.mags[p].Load() != nil || s.magStop.Load() != 0 {
		return
	}
	h := s.h
	sw := uintptr(mCaches + 8*s.env.Seat())
	if head := h.get(sw); head != 0 {
		if owner, err := h.magOwner(head); err != nil || owner != s.laneMe {
			s.repMu.Lock()
			err := s.drainSeat(s.env.Seat(), s.report.Addf)
			s.repMu.Unlock()
			if err != nil {
				s.noteCorrupt(err)
				return
			}
		}
	}
	var off uint64
	err := s.heldOp(opAllocate, func() (err error) {
		if off, _, err = h.allocLarge(magBytes, 0); err != nil {
			return err
		}
		// Fresh memory: written plainly; a rollback frees it.
		clear(unsafe.Slice((*byte)(unsafe.Add(h.base, off)), magBytes))
		*h.w(uintptr(off + magOwner)) = s.laneMe
		*h.w(uintptr(off + magNext)) = h.get(sw)
		*h.w(uintptr(off + magP)) = uint64(p)
		h.set(sw, off)
		if cacheHook != nil {
			cacheHook("make")
		}
		return nil
	})
	if err != nil {
		return
	}
	s.mags[p].Store((*magazine)(unsafe.Add(h.base, off)))
	s.magMade.Store(true)
}

// magOwner is the owner word of the magazine at off, which must lie in
// the segment's data.
func (h *heap) magOwner(off uint64) (uint64, error) {
	if off < h.geo.lo || off%pageSize != 0 || off > uint64(h.size())-magBytes {
		return 0, corrupt("block cache at offset %d lies outside the segment's data", off)
	}
	return h.get(uintptr(off + magOwner)), nil
}

// drainSeat empties every magazine of the open that sat in seat, frees
// them and clears the seat's word. The segment lock is held, and no
// goroutine of that open uses them (it is dead, or it is this one at
// Close or with its caches stopped).
func (s *Segment) drainSeat(seat int, add func(string, ...any)) error {
	h := s.h
	sw := uintptr(mCaches + 8*seat)
	cells := 0
	for steps := 0; ; steps++ {
		mag := h.get(sw)
		if mag == 0 {
			break
		}
		if steps > maxChain {
			return corrupt("block caches of seat %d: more than %d magazines", seat, maxChain)
		}
		if _, err := h.magOwner(mag); err != nil {
			return err
		}
		for c := range uint64(len(classes)) {
			cells += int(min(h.get(uintptr(mag+mc[c].at)), mc[c].cap))
			if err := s.flushStack(mag, c, 0); err != nil {
				return err
			}
		}
		if err := s.heldOp(opDeallocate, func() error {
			next := h.get(uintptr(mag + magNext))
			if err := h.freeAt(mag); err != nil {
				return err
			}
			h.set(sw, next)
			if cacheHook != nil {
				cacheHook("drain")
			}
			return nil
		}); err != nil {
			return fmt.Errorf("freeing block cache at offset %d: %w", mag, err)
		}
	}
	if add != nil && seat != s.env.Seat() {
		add("gave back %d cached blocks of the process that died in seat %d", cells, seat)
	}
	return nil
}

// deadCaches reports whether a seat holds magazines of an open that is
// gone.
func (s *Segment) deadCaches() bool {
	if s.h.geo != &geometries[0] {
		return false
	}
	for seat := range envelope.MaxSeats {
		if s.deadSeatCache(seat) {
			return true
		}
	}
	return false
}

func (s *Segment) deadSeatCache(seat int) bool {
	head := atomic.LoadUint64(s.h.w(mCaches + uintptr(8*seat)))
	if head == 0 {
		return false
	}
	owner, err := s.h.magOwner(head)
	return err != nil || (owner != s.laneMe && !s.laneOwnerAlive(owner))
}

// reclaimDeadCaches gives back to the heap the magazines of every open
// that is gone. The segment lock is held.
func (s *Segment) reclaimDeadCaches(add func(string, ...any)) error {
	if s.h.geo != &geometries[0] {
		return nil
	}
	for seat := range envelope.MaxSeats {
		if s.deadSeatCache(seat) {
			if err := s.drainSeat(seat, add); err != nil {
				return err
			}
		}
	}
	return nil
}

// stopCaches keeps every goroutine of this process off its magazines
// until the returned function is called: pinned operations check magStop
// after pinning, and a stop-the-world (which waits for every pinned
// goroutine to unpin) separates those that began before from those after.
func (s *Segment) stopCaches() func() {
	s.magStop.Add(1)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms) // stops the world
	return func() { s.magStop.Add(^uint32(0)) }
}

// emptyCaches gives back what this process's magazines hold, and what
// dead processes' hold, so that an allocation that found no space can try
// again. It reports whether anything was given back.
func (s *Segment) emptyCaches() bool {
	if s.h.geo != &geometries[0] {
		return false
	}
	if !s.magMade.Load() && !s.deadCaches() {
		return false
	}
	resume := s.stopCaches()
	defer resume()
	if err := s.lockOnly("allocate"); err != nil {
		return false
	}
	defer s.lk.unlock()
	before := s.h.get(mInUse)
	_ = s.dropOwnCaches()
	s.repMu.Lock()
	_ = s.reclaimDeadCaches(s.report.Addf)
	s.repMu.Unlock()
	return s.h.get(mInUse) < before
}

// dropOwnCaches empties and frees this open's magazines. The segment lock
// is held and the caches are stopped (or the segment is closing).
func (s *Segment) dropOwnCaches() error {
	if s.mags == nil {
		return nil
	}
	for i := range s.mags {
		s.mags[i].Store(nil)
	}
	return s.drainSeat(s.env.Seat(), nil)
}

// cachedAt reports whether some magazine holds the cell at off. The
// segment lock is held.
func (h *heap) cachedAt(off uint64) bool {
	found := false
	_ = h.walkCaches(nil, func(_ int, _, _, cell uint64) error {
		if cell == off {
			found = true
		}
		return nil
	})
	return found
}

// cachedBytes is what the caches hold: the magazines and their cells.
func (h *heap) cachedBytes() (uint64, error) {
	var n uint64
	err := h.walkCaches(func(int, uint64) error {
		n += magBytes
		return nil
	}, func(_ int, _, c, _ uint64) error {
		n += classes[c].size
		return nil
	})
	return n, err
}

// walkCaches calls f for every cell of every magazine of every seat,
// bounded: offsets inside the segment, chains of at most maxChain, counts
// of at most the class's slots.
func (h *heap) walkCaches(fm func(seat int, mag uint64) error, f func(seat int, mag, c, cell uint64) error) error {
	if h.geo != &geometries[0] {
		return nil
	}
	for seat := range envelope.MaxSeats {
		mag := atomic.LoadUint64(h.w(mCaches + uintptr(8*seat)))
		for steps := 0; mag != 0; steps++ {
			if steps > maxChain {
				return corrupt("block caches of seat %d: more than %d magazines", seat, maxChain)
			}
			if _, err := h.magOwner(mag); err != nil {
				return err
			}
			if fm != nil {
				if err := fm(seat, mag); err != nil {
					return err
				}
			}
			for c := range uint64(len(classes)) {
				k := atomic.LoadUint64(h.w(uintptr(mag + mc[c].at)))
				if k > mc[c].cap {
					return badCount(mag, uint8(c), k)
				}
				for i := range k {
					if err := f(seat, mag, c, h.get(uintptr(mag+mc[c].at+8+8*i))); err != nil {
						return err
					}
				}
			}
			mag = h.get(uintptr(mag + magNext))
		}
	}
	return nil
}

// checkCaches is CheckSanity's walk of the caches: every magazine a live
// block of its size owned by its seat, every cached cell a live cell of
// its class, none cached twice. Other processes push and pop meanwhile
// (without the lock), so a cell seen twice is looked for again before it
// counts.
func (h *heap) checkCaches() error {
	var err error
	for try := 0; try < 10; try++ {
		if err = h.checkCachesOnce(); err == nil || !isDuplicate(err) {
			return err
		}
		runtime.Gosched()
	}
	return err
}

type dupCell struct{ error }

func (d dupCell) Unwrap() error { return d.error }

func isDuplicate(err error) bool {
	var d dupCell
	return errors.As(err, &d)
}

func isNoSpace(err error) bool { return errors.Is(err, ErrNoSpace) }

func (h *heap) checkCachesOnce() error {
	seen := map[uint64]uint64{}
	return h.walkCaches(func(seat int, mag uint64) error {
		if owner := h.get(uintptr(mag + magOwner)); int(owner&0xff) != seat+1 {
			return corrupt("block cache at offset %d is in the list of seat %d, but its owner word %#x names another", mag, seat, owner)
		}
		b, err := h.blockAt(mag)
		if err != nil || dKind(b.w0) != kLarge || b.size() != magBytes {
			return corrupt("block cache at offset %d is not a live block of %d bytes", mag, magBytes)
		}
		return nil
	}, func(seat int, mag, c, cell uint64) error {
		b, err := h.blockAt(cell)
		if err != nil || dKind(b.w0) != kRun || dClass(b.w0) != c {
			return corrupt("block cache at offset %d holds offset %d as a free %d-byte cell, which is not a live cell of that class", mag, cell, classes[c].size)
		}
		if other, dup := seen[cell]; dup {
			return dupCell{corrupt("the cell at offset %d is in two block caches (at %d and %d)", cell, other, mag)}
		}
		seen[cell] = mag
		return nil
	})
}

// heldOp runs f as a journaled operation with the segment lock already
// held (and kept): a fault or an error rolls it back, a panic too before
// it goes on up.
func (s *Segment) heldOp(op uint64, f func() error) (err error) {
	h := s.h
	h.j.Begin(op)
	done := false
	defer func() {
		if !done {
			s.rollBackHeld("an operation of this process cut short by a panic")
		}
	}()
	err = f()
	done = true
	fault := h.takeFault()
	if fault != nil || err != nil {
		s.rollBackHeld("this process")
		if fault != nil {
			s.noteCorrupt(fault)
			return fault
		}
		return err
	}
	h.j.End()
	return nil
}

// rollBackHeld undoes the journaled operation in flight. Its callers may
// hold repMu (a takeover, Close, emptyCaches) or not, so it says nothing
// in the report: the operation was this process's own, and a rollback
// that fails marks the segment corrupt.
func (s *Segment) rollBackHeld(who string) {
	if err := s.h.rollBack(s.env.Size(), who, func(string, ...any) {}); err != nil {
		s.noteCorrupt(fmt.Errorf("could not roll back %s: %w", who, err))
	}
}

// closeCaches empties this open's magazines and those of dead processes,
// at Close, with the lock held.
func (s *Segment) closeCaches() {
	if s.h.geo != &geometries[0] {
		return
	}
	s.repMu.Lock()
	defer s.repMu.Unlock()
	if err := s.dropOwnCaches(); err != nil {
		s.report.Addf("could not empty this process's block caches at Close: %v", err)
	}
	if err := s.reclaimDeadCaches(s.report.Addf); err != nil {
		s.report.Addf("could not reclaim the block caches of dead processes at Close: %v", err)
	}
}
