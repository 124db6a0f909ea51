package mapped

import (
	"fmt"
	"math/bits"
)

// CheckSanity walks every structure of the allocator and the name
// directory and returns a description of the first inconsistency (wrapping
// ErrCorrupt), or nil. It takes the segment lock, so it sees no operation
// half done (a read-only open reads until no writer ran meanwhile); its
// cost is proportional to the segment's size. A segment found corrupt
// refuses later calls with ErrCorrupt.
func (s *Segment) CheckSanity() error {
	return s.read("check", func() error { return s.h.checkSanity(s.env.Size()) })
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrCorrupt)...)
}

// checkSanity is CheckSanity with the lock held (or nobody else writing):
// one check per structure, each trusting only what the ones before it
// checked.
func (h *heap) checkSanity(size int64) error {
	if err := h.validate(func() int64 { return size }); err != nil {
		return err
	}
	if err := h.validateWords(); err != nil {
		return err
	}
	if err := h.checkIdle(); err != nil {
		return err
	}
	pw, err := h.checkPages()
	if err != nil {
		return err
	}
	if c := h.get(mCapacity); c != (pw.managed-pw.metaPages)*pageSize {
		return corrupt("capacity says %d bytes, the pages give %d", c, (pw.managed-pw.metaPages)*pageSize)
	}
	if u := h.get(mInUse); u != pw.inUse {
		return corrupt("in-use counter says %d bytes, the live blocks hold %d", u, pw.inUse)
	}
	if err := h.checkBins(pw.free); err != nil {
		return err
	}
	if err := h.checkPartialLists(pw.partial); err != nil {
		return err
	}
	if err := h.checkCaches(); err != nil {
		return err
	}
	return h.checkDirectory()
}

// checkIdle checks that no operation was left half done.
func (h *heap) checkIdle() error {
	if op, n, err := h.j.Pending(); op != 0 || err != nil {
		if err != nil {
			return err
		}
		return corrupt("undo journal holds an unfinished operation %d (%d words)", op, n)
	}
	if h.fastPending() {
		return corrupt("fast-path intent record holds an unfinished operation (%#x)", h.get(mFast))
	}
	return nil
}

// pageWalk is what checkPages found walking the descriptors.
type pageWalk struct {
	managed, metaPages, inUse uint64
	free                      map[uint64]uint64 // free span's first page -> pages
	partial                   map[uint64]uint64 // run with a free cell -> its class
}

// checkPages walks the descriptor table from page 0: every page belongs
// to the envelope and manager, a free span, a large block or a run.
func (h *heap) checkPages() (*pageWalk, error) {
	pw := &pageWalk{managed: h.get(mManaged), free: map[uint64]uint64{}, partial: map[uint64]uint64{}}
	for p := uint64(0); p < pw.managed; {
		w := h.get(h.desc(p))
		var n uint64
		var err error
		switch dKind(w) {
		case kMeta:
			pw.metaPages++
			n = 1
		case kFree:
			n, err = h.checkFreeSpan(p, w, pw)
		case kLarge:
			n = dPages(w)
			err = h.checkBlockPages(p, n, pw.managed, "block")
			pw.inUse += n * pageSize
		case kRun:
			n, err = h.checkRun(p, w, pw)
		default:
			err = corrupt("page %d: descriptor kind %d where a block or free span should start", p, dKind(w))
		}
		if err != nil {
			return nil, err
		}
		p += n
	}
	return pw, nil
}

// checkFreeSpan checks the free span at page p (descriptor word w): its
// length, its tail, and that no block starts inside it.
func (h *heap) checkFreeSpan(p, w uint64, pw *pageWalk) (uint64, error) {
	n := dPages(w)
	if n == 0 || p+n > pw.managed {
		return 0, corrupt("free span at page %d has %d pages, past the %d managed", p, n, pw.managed)
	}
	if n > 1 {
		if t := h.get(h.desc(p + n - 1)); dKind(t) != kFreeTail || dPages(t) != n {
			return 0, corrupt("free span at page %d (%d pages) has a bad tail descriptor (kind %d, %d pages)", p, n, dKind(t), dPages(t))
		}
	}
	for q := p + 1; q < p+n; q++ {
		if k := dKind(h.get(h.desc(q))); k == kRun || k == kLarge {
			return 0, corrupt("page %d inside the free span at page %d is marked as a block start", q, p)
		}
	}
	pw.free[p] = n
	return n, nil
}

// checkBlockPages checks that a block of n pages at page p fits the
// managed pages and that its other pages say they continue it.
func (h *heap) checkBlockPages(p, n, managed uint64, what string) error {
	if n == 0 || p+n > managed {
		return corrupt("%s at page %d has %d pages, past the %d managed", what, p, n, managed)
	}
	for q := p + 1; q < p+n; q++ {
		if w := h.get(h.desc(q)); dKind(w) != kCont || dPages(w) != p {
			return corrupt("page %d should continue the %s at page %d, its descriptor says kind %d head %d", q, what, p, dKind(w), dPages(w))
		}
	}
	return nil
}

// checkRun checks the run at page p (descriptor word w): its class, its
// pages, and that its bitmap agrees with its live count.
func (h *heap) checkRun(p, w uint64, pw *pageWalk) (uint64, error) {
	c := dClass(w)
	cl := geomOf(w)
	if cl == nil {
		return 0, corrupt("run at page %d has size class %d and %d pages, which no run has", p, c, dPages(w))
	}
	if err := h.checkBlockPages(p, cl.pages, pw.managed, "run"); err != nil {
		return 0, err
	}
	var n uint64
	for i := uint64(0); i < cl.words; i++ {
		bm := h.get(uintptr(p<<pageShift + i*8))
		if extra := cl.words*64 - cl.ncells; i == cl.words-1 && extra > 0 {
			hi := ^uint64(0) << (64 - extra)
			if bm&hi != hi {
				return 0, corrupt("run at page %d: bitmap bits past its %d cells are clear", p, cl.ncells)
			}
			bm &^= hi
		}
		n += uint64(bits.OnesCount64(bm))
	}
	if n != dLive(w) {
		return 0, corrupt("run at page %d of %d-byte cells: bitmap has %d live cells, descriptor says %d", p, cl.size, n, dLive(w))
	}
	if n < cl.ncells {
		pw.partial[p] = c
	}
	pw.inUse += n * cl.size
	return cl.pages, nil
}

// checkBins checks the free-span bins: every free span in the bin of its
// size, once, with the bin mask in step. It empties free.
func (h *heap) checkBins(free map[uint64]uint64) error {
	mask := h.get(mBinMask)
	for b := uint64(0); b < numBins; b++ {
		head := h.get(binHead(b))
		if (head != 0) != (mask&(1<<b) != 0) {
			return corrupt("free-span bin %d: head %d but mask bit %v", b, head, mask&(1<<b) != 0)
		}
		err := h.checkList(head, fmt.Sprintf("free-span bin %d", b), func(q uint64) error {
			n, ok := free[q]
			if !ok {
				return corrupt("free-span bin %d lists page %d, which is not a free span (or is listed twice)", b, q)
			}
			if binOf(n) != b {
				return corrupt("free span at page %d (%d pages) is in bin %d", q, n, b)
			}
			delete(free, q)
			return nil
		})
		if err != nil {
			return err
		}
	}
	for p, n := range free {
		return corrupt("free span at page %d (%d pages) is in no bin", p, n)
	}
	return nil
}

// checkPartialLists checks the size classes' partial-run lists: every run
// with a free cell in its class's list, once. It empties partial.
func (h *heap) checkPartialLists(partial map[uint64]uint64) error {
	for c := range uint64(len(classes)) {
		err := h.checkList(h.get(classHead(c)), fmt.Sprintf("size class %d", classes[c].size), func(q uint64) error {
			pc, ok := partial[q]
			if !ok {
				return corrupt("size class %d lists page %d, which is not a run with a free cell (or is listed twice)", classes[c].size, q)
			}
			if pc != c {
				return corrupt("run at page %d of class %d is listed under class %d", q, classes[pc].size, classes[c].size)
			}
			delete(partial, q)
			return nil
		})
		if err != nil {
			return err
		}
	}
	for p := range partial {
		return corrupt("run at page %d has free cells and is in no list", p)
	}
	return nil
}

// checkList walks the page list that starts at head, checking each back
// link and calling visit on each page; visit refuses a page it has seen,
// which ends a cycle.
func (h *heap) checkList(head uint64, what string, visit func(p uint64) error) error {
	prev := uint64(0)
	for q := head; q != 0; {
		if err := visit(q); err != nil {
			return err
		}
		l := h.get(h.desc(q) + 8)
		if lPrev(l) != prev {
			return corrupt("%s: page %d has back link %d, want %d", what, q, lPrev(l), prev)
		}
		prev, q = q, lNext(l)
	}
	return nil
}
