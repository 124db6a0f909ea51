package mapped

import (
	"errors"
	"fmt"
	"math/bits"
	"unsafe"
)

// Small blocks: cells of runs. The runs of a size class that have a free
// cell are in the class's partial list; the first one is the class's
// current run, which the fast path (fast.go) allocates from.

func classHead(c uint64) uintptr { return mClasses + uintptr(c)*8 }

// newRun cuts a fresh run for class c and makes it the head of the
// class's partial list (which is empty). When the page heap has no room
// for the class's run (a full fixed-size segment), it cuts a smaller one.
func (h *heap) newRun(c int) (uint64, error) {
	cl := &classes[c]
	p, err := h.pageAlloc(cl.pages, 0)
	for k := bits.TrailingZeros64(cl.pages) - 1; err != nil && errors.Is(err, ErrNoSpace) && k >= 0; k-- {
		cl = &geoms[c][k]
		p, err = h.pageAlloc(cl.pages, 0)
	}
	if err != nil {
		return 0, err
	}
	// The run's bitmap is fresh memory: write it without recording it. If
	// the operation is rolled back the pages are free again.
	bm := unsafe.Slice((*uint64)(unsafe.Add(h.base, p<<pageShift)), cl.words)
	clear(bm)
	if extra := cl.words*64 - cl.ncells; extra > 0 {
		bm[cl.words-1] = ^uint64(0) << (64 - extra)
	}
	d := h.desc(p)
	h.set(d, mkDesc(kRun, uint64(c), 0, cl.pages))
	h.set(d+8, 0)
	h.markCont(p, cl.pages)
	h.set(classHead(uint64(c)), p)
	return p, nil
}

// allocSmall allocates a cell of class c; it returns its offset.
func (h *heap) allocSmall(c int) (uint64, error) {
	cl := &classes[c]
	size := cl.size
	head := classHead(uint64(c))
	run := h.get(head)
	if run == 0 {
		var err error
		if run, err = h.newRun(c); err != nil {
			return 0, err
		}
	}
	if managed := h.managed(); run >= managed {
		return 0, corrupt("size class %d starts at page %d, beyond the %d managed", size, run, h.managed())
	}
	d := h.desc(run)
	w0 := h.get(d)
	if dKind(w0) != kRun || dClass(w0) != uint64(c) || geomOf(w0) == nil {
		return 0, corrupt("size class %d starts at page %d, whose descriptor (kind %d, class %d, %d pages) is not a run of the class", size, run, dKind(w0), dClass(w0), dPages(w0))
	}
	cl = geomOf(w0)
	if managed := h.managed(); cl.pages > managed-run {
		return 0, corrupt("size class %d starts at page %d, whose %d pages pass the %d managed", size, run, cl.pages, managed)
	}
	roff := run << pageShift
	for i := uint64(0); i < cl.words; i++ {
		wo := uintptr(roff + i*8)
		bm := h.get(wo)
		if bm == ^uint64(0) {
			continue
		}
		b := uint64(bits.TrailingZeros64(^bm))
		h.set(wo, bm|1<<b)
		live := dLive(w0) + 1
		h.set(d, w0&^(0xffff<<16)|live<<16)
		if live == cl.ncells {
			// Full: off the partial list (it is the head).
			h.unlink(head, run)
			h.set(d+8, 0)
		}
		h.add(mInUse, cl.size)
		return roff + cl.start + (i*64+b)*cl.size, nil
	}
	return 0, fmt.Errorf("run at page %d of size class %d is on the partial list but full: %w", run, cl.size, ErrCorrupt)
}

// grabCells allocates up to len(out) cells of class c from the class's
// current run (the head of its partial list, which must exist), writing
// their offsets to out; it returns how many. One journal entry per bitmap
// word it changes, and one each for the run's count, the in-use total and
// the unlink of a run it fills: a block cache's refill (cache.go).
func (h *heap) grabCells(c int, out []uint64) (int, error) {
	cl := &classes[c]
	head := classHead(uint64(c))
	run := h.get(head)
	managed := h.managed()
	if run == 0 || run >= managed {
		return 0, corrupt("size class %d starts at page %d, beyond the %d managed", cl.size, run, managed)
	}
	d := h.desc(run)
	w0 := h.get(d)
	if dKind(w0) != kRun || dClass(w0) != uint64(c) || geomOf(w0) == nil {
		return 0, corrupt("size class %d starts at page %d, whose descriptor (kind %d, class %d, %d pages) is not a run of the class", cl.size, run, dKind(w0), dClass(w0), dPages(w0))
	}
	cl = geomOf(w0)
	if cl.pages > managed-run {
		return 0, corrupt("size class %d starts at page %d, whose %d pages pass the %d managed", cl.size, run, cl.pages, managed)
	}
	roff := run << pageShift
	got := 0
	for i := uint64(0); i < cl.words && got < len(out); i++ {
		wo := uintptr(roff + i*8)
		bm := h.get(wo)
		free := ^bm
		if free == 0 {
			continue
		}
		for free != 0 && got < len(out) {
			b := uint64(bits.TrailingZeros64(free))
			free &= free - 1
			bm |= 1 << b
			out[got] = roff + cl.start + (i*64+b)*cl.size
			got++
		}
		h.set(wo, bm)
	}
	live := dLive(w0) + uint64(got)
	if got == 0 || live > cl.ncells {
		return 0, corrupt("run at page %d of size class %d is on the partial list, counts %d live cells of %d, and its bitmap gave %d", run, cl.size, dLive(w0), cl.ncells, got)
	}
	h.set(d, w0&^(0xffff<<16)|live<<16)
	if live == cl.ncells {
		h.unlink(head, run)
		h.set(d+8, 0)
	}
	h.add(mInUse, uint64(got)*cl.size)
	return got, nil
}

// freeCell updates run page (descriptor d, word w0, class c) after one of
// its cells was freed.
func (h *heap) freeCell(page uint64, d uintptr, w0 uint64, c uint64) {
	cl := geomOf(w0)
	if cl == nil {
		h.fail("run at page %d has class %d and %d pages, which no run has", page, c, dPages(w0))
		return
	}
	if dLive(w0) == 0 || dLive(w0) > cl.ncells {
		h.fail("run at page %d of %d-byte cells says %d cells are live, freeing one", page, cl.size, dLive(w0))
		return
	}
	live := dLive(w0) - 1
	h.set(d, w0&^(0xffff<<16)|live<<16)
	h.add(mInUse, -cl.size)
	head := classHead(c)
	if live+1 == cl.ncells {
		// Was full: becomes the head of the partial list. The head it
		// displaces, if empty, goes back to the page heap, so that a
		// class keeps at most one empty run (its head).
		prev := h.get(head)
		h.push(head, page)
		if prev != 0 && prev != page && prev < h.managed() {
			if w := h.get(h.desc(prev)); dKind(w) == kRun && dClass(w) == c && dLive(w) == 0 {
				if g := geomOf(w); g != nil && g.pages <= h.managed()-prev {
					h.unlink(head, prev)
					h.pageFree(prev, g.pages)
				}
			}
		}
	}
	if live == 0 && h.get(head) != page {
		// Empty and not the class's current run: give the pages back.
		h.unlink(head, page)
		h.pageFree(page, cl.pages)
	}
}

// releaseEmptyRun gives back to the page heap one run that holds no live
// cell and stays only as its class's current run, if there is one and the
// journal has room for it. The page heap calls it, run by run, before it
// gives up (or grows the segment), so that no empty run strands pages a
// larger block needs.
func (h *heap) releaseEmptyRun() bool {
	if h.j.Room() < releaseWords {
		return false
	}
	managed := h.managed()
	for c := range uint64(len(classes)) {
		head := classHead(c)
		run := h.get(head)
		if run == 0 || run >= managed {
			continue
		}
		w0 := h.get(h.desc(run))
		g := geomOf(w0)
		if dKind(w0) != kRun || dClass(w0) != c || g == nil || dLive(w0) != 0 || g.pages > managed-run {
			continue // not an empty run of the class (a bad one is the walkers' to report)
		}
		h.unlink(head, run)
		h.pageFree(run, g.pages)
		return true
	}
	return false
}

// releaseWords bounds the words one releaseEmptyRun records: an unlink
// (the head and two neighbours' links, the descriptor's), and a pageFree
// that merges with both neighbours (two spans out of their bins, two
// descriptors, a span into its bin, the bin mask).
const releaseWords = 32
