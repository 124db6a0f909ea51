package mapped

import (
	"fmt"
	"math/bits"

	"github.com/mapstore/mapstore/internal/journal"
)

// The fast path for small blocks. Most allocations and frees of a small
// block change three words: a bit of the run's bitmap, the run's live
// count in its descriptor, and the in-use total (four with the reference
// word of AllocateInto / DeallocateFrom). Recording each in the undo
// journal would cost more than the change itself, so the fast path writes
// one intent record instead, before changing anything:
//
//	mFast        valid bit 63 | allocation bit 62 | cell << 40 | run page
//	mFastInUse   the in-use total before the operation
//	mFastRef     offset of the reference word (0: none)
//	mFastRefOld  its value before the operation
//
// The record is published by its first word (written last, ordered after
// the others) and cleared when the operation is done. A rollback (see
// rollBackFast) puts the cell's bit back as it was, recounts the run's
// live cells from the bitmap, and restores the in-use total and the
// reference word: the state before the operation, whatever prefix of its
// stores happened. Operations that move a run on or off its class's
// partial list, cut a new run or free one, take the journaled slow path.
const (
	mFast       = mgrOff + 128
	mFastInUse  = mgrOff + 136
	mFastRef    = mgrOff + 144
	mFastRefOld = mgrOff + 152

	fastValid    = uint64(1) << 63
	fastAlloc    = uint64(1) << 62
	fastUnused   = uint64(0x3ff) << 52 // bits 52-61
	fastCellMask = 0xfff
	fastPageMask = 1<<40 - 1
)

// intend publishes the intent record of a fast operation on cell of run.
func (h *heap) intend(kind, run, cell uint64, ref uintptr) {
	*h.w(mFastInUse) = *h.w(mInUse)
	*h.w(mFastRef) = uint64(ref)
	if ref != 0 {
		*h.w(mFastRefOld) = *h.w(ref)
	}
	journal.StoreOrdered(h.w(mFast), fastValid|kind|cell<<40|run)
}

// allocFast allocates a cell of n bytes (n <= maxSmall) from its class's
// current run, storing the block's offset plus tag in the word at ref
// when ref is not 0. It reports false, having changed nothing, when the
// allocation needs the slow path.
func (h *heap) allocFast(n uint64, ref uintptr, tag uint64) (off, usable uint64, ok bool) {
	c := classOf[(n+15)>>4]
	run := *h.w(mClasses + uintptr(c)*8)
	if run == 0 || run >= *h.w(mManaged) {
		return 0, 0, false // no run, or a bad head the slow path reports
	}
	d := h.desc(run)
	w0 := *h.w(d)
	if w0&0xffff != kRun|uint64(c)<<8 {
		return 0, 0, false // not a run of the class: the slow path reports it
	}
	cl := &classes[c]
	if dPages(w0) != cl.pages {
		// A run cut smaller to fit (or a bad page count the slow path reports).
		if cl = geomOf(w0); cl == nil {
			return 0, 0, false
		}
	}
	if dLive(w0)+1 >= cl.ncells {
		return 0, 0, false // would fill the run (the slow path unlinks it)
	}
	roff := run << pageShift
	for i := uint64(0); i < cl.words; i++ {
		wp := h.w(uintptr(roff + i*8))
		bm := *wp
		if bm == ^uint64(0) {
			continue
		}
		b := uint64(bits.TrailingZeros64(^bm))
		cell := i*64 + b
		off = roff + cl.start + cell*cl.size
		h.intend(fastAlloc, run, cell, ref)
		*wp = bm | 1<<b
		*h.w(d) = w0 + 1<<16
		*h.w(mInUse) += cl.size
		if ref != 0 {
			*h.w(ref) = tag | off
		}
		journal.StoreOrdered(h.w(mFast), 0)
		return off, cl.size, true
	}
	return 0, 0, false
}

// freeFast frees the small block at off and stores val in the word at ref
// (if ref is not 0). It reports false, having changed nothing, when off is not a
// live small block or the free needs the slow path (which also finds the
// error).
func (h *heap) freeFast(off uint64, ref uintptr, val uint64) bool {
	if off < h.geo.lo || off >= *h.w(mManaged)<<pageShift {
		return false
	}
	page := off >> pageShift
	d := h.desc(page)
	w0 := *h.w(d)
	if dKind(w0) == kCont {
		if head := dPages(w0); head < page {
			page = head
		} else {
			return false // a bad continuation: the slow path reports it
		}
		d = h.desc(page)
		w0 = *h.w(d)
	}
	c := dClass(w0)
	if dKind(w0) != kRun {
		return false
	}
	cl := geomOf(w0)
	if cl == nil {
		return false
	}
	live := dLive(w0)
	if live-1 >= cl.ncells-1 || (live == 1 && *h.w(mClasses + uintptr(c)*8) != page) {
		return false // was full or says none are live, or becomes empty: list changes (or the slow path reports the count)
	}
	cell, ok := cl.cellOf(off - page<<pageShift)
	if !ok {
		return false
	}
	wp := h.w(uintptr(page<<pageShift + cell/64*8))
	bm := *wp
	if bm&(1<<(cell%64)) == 0 || h.marked(off) {
		return false // not live, or maybe in a block cache: the slow path decides
	}
	h.intend(0, page, cell, ref)
	*wp = bm &^ (1 << (cell % 64))
	*h.w(d) = w0 - 1<<16
	*h.w(mInUse) -= cl.size
	if ref != 0 {
		*h.w(ref) = val
	}
	journal.StoreOrdered(h.w(mFast), 0)
	return true
}

// fastPending reports whether a fast operation was left in flight.
func (h *heap) fastPending() bool { return *h.w(mFast)&fastValid != 0 }

// rollBackFast undoes a fast operation left in flight, if any; it reports
// whether there was one. Like a journal replay it is idempotent.
func (h *heap) rollBackFast(size int64) (alloc, was bool, err error) {
	v := *h.w(mFast)
	if v&fastValid == 0 {
		return false, false, nil
	}
	alloc = v&fastAlloc != 0
	page, cell := v&fastPageMask, (v>>40)&fastCellMask
	ref := *h.w(mFastRef)
	if page >= *h.w(mManaged) || page<<pageShift >= uint64(size) {
		return alloc, true, fmt.Errorf("interrupted fast operation names page %d, beyond the managed memory: %w", page, ErrCorrupt)
	}
	d := h.desc(page)
	w0 := *h.w(d)
	cl := geomOf(w0)
	if dKind(w0) != kRun || cl == nil || cell >= cl.ncells {
		return alloc, true, fmt.Errorf("interrupted fast operation names cell %d of page %d, which is not a run with that cell: %w", cell, page, ErrCorrupt)
	}
	if ref != 0 && (ref%8 != 0 || (ref < h.geo.lo && !h.inLaneRecords(ref)) || ref+8 > uint64(size)) {
		return alloc, true, fmt.Errorf("interrupted fast operation names reference word %d, outside the segment: %w", ref, ErrCorrupt)
	}
	roff := page << pageShift
	wp := h.w(uintptr(roff + cell/64*8))
	if alloc {
		*wp &^= 1 << (cell % 64)
	} else {
		*wp |= 1 << (cell % 64)
	}
	live := uint64(0)
	for i := uint64(0); i < cl.words; i++ {
		live += uint64(bits.OnesCount64(*h.w(uintptr(roff + i*8))))
	}
	live -= cl.words*64 - cl.ncells
	*h.w(d) = w0&^(0xffff<<16) | live<<16
	*h.w(mInUse) = *h.w(mFastInUse)
	if ref != 0 {
		*h.w(uintptr(ref)) = *h.w(mFastRefOld)
	}
	journal.StoreOrdered(h.w(mFast), 0)
	return alloc, true, nil
}
